"""Analysis of a beta-VAE as a non-linearly scaled isometric embedding (docs/ops.md, "The analysis";
the model protocol in docs/analysis.md)."""

# The model protocol: how any VAE says what its encoder returns
# Derivative engine: D'_j and the isometry Gram
from .derivatives import dj_prime, isometry_gram

# Per-latent statistics for any model and metric (images, digits)
from .latents import analyze_latents, fit_stats
from .model import POSTERIORS, VAEAdapter

# The toy analysis with the true density: probability estimates, rate and distortion
from .summary import analyze, log_density

__all__ = [
    "VAEAdapter",
    "POSTERIORS",
    "dj_prime",
    "isometry_gram",
    "analyze_latents",
    "fit_stats",
    "analyze",
    "log_density",
]
