"""The ONE place where the toy pipeline gets its metric objects and D'_j engine.

Until issue 4 lands they come from the pure-PyTorch stand-ins in ``_interim``. To switch to the
real ones, replace the import below by:

    from .metrics import SSE, DownwardConvex, UpwardConvex
    from .analysis.derivatives import dj_prime, isometry_gram
"""

from ._interim import SSE, DownwardConvex, UpwardConvex, dj_prime, isometry_gram  # noqa: F401

METRICS = {"sse": SSE, "downward": DownwardConvex, "upward": UpwardConvex}


def metric_from_name(name: str):
    """The metric object for a toy loss name: "sse", "downward" or "upward"."""
    try:
        return METRICS[name.lower()]()
    except KeyError:
        raise ValueError(f"loss: expected one of {sorted(METRICS)}, got {name!r}") from None


def metric_name(metric) -> str:
    """The toy loss name of a metric object (inverse of :func:`metric_from_name`)."""
    for name, cls in METRICS.items():
        if type(metric).__name__ == cls.__name__:
            return name
    return type(metric).__name__
