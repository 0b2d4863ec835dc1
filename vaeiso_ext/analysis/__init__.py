"""Analysis of a beta-VAE as a non-linearly scaled isometric embedding (SPEC §4)."""

# Derivative engine: D'_j and the isometry Gram
from .derivatives import dj_prime, isometry_gram

__all__ = ["dj_prime", "isometry_gram"]
