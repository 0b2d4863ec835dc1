"""Datasets with known densities: the paper's toy data (§4.1, App. E.2)."""

from .toy import (
    TOY_DATASETS,
    ToyData,
    Component,
    Triangular,
    Uniform,
    DecreasingRamp,
    Gaussian,
    toy_components,
    make_toy,
)

__all__ = [
    "TOY_DATASETS",
    "ToyData",
    "Component",
    "Triangular",
    "Uniform",
    "DecreasingRamp",
    "Gaussian",
    "toy_components",
    "make_toy",
]
