"""Analysis of a beta-VAE as a non-linearly scaled isometric embedding (docs/ops.md, "The analysis")."""

# Derivative engine: D'_j and the isometry Gram
from .derivatives import dj_prime, isometry_gram

# Per-latent statistics for any model and metric (images, digits)
from .latents import analyze_latents

# The toy analysis with the true density: probability estimates, rate and distortion
from .summary import analyze, log_density

__all__ = ["dj_prime", "isometry_gram", "analyze_latents", "analyze", "log_density"]
