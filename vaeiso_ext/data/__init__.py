"""Datasets with known densities: the paper's toy data (§4.1, App. E.2); MNIST read from the
user's own files (:mod:`.mnist`)."""

from .mnist import MnistData, load_mnist, mnist_files, read_idx
from .toy import (
    TOY_DATASETS,
    Component,
    DecreasingRamp,
    Gaussian,
    ToyData,
    Triangular,
    Uniform,
    make_toy,
    toy_components,
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
    "MnistData",
    "load_mnist",
    "mnist_files",
    "read_idx",
]
