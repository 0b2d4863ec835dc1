"""The paper's experiments, one module each (``toy``, ``sweep``, ``images``, ``digits``), on the
shared plumbing of :mod:`.config` (the run's config and description, its command-line options),
:mod:`.runs` (the run folder and its checkpoint), :mod:`.base` (the reproduce / analyse pipeline)
and :mod:`.outputs`. A module of this package that defines ``EXPERIMENT`` (an
:class:`~.base.Experiment`) is an experiment: ``python -m vaeiso_ext reproduce <name>`` runs it,
with the options of its config."""

from __future__ import annotations

import importlib
import pkgutil

from .base import Experiment
from .config import Config, UsageError
from .runs import CHECKPOINT, read_run


def experiments() -> dict[str, Experiment]:
    """Every experiment of this package by name, in ``order``."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        exp = getattr(mod, "EXPERIMENT", None)
        if isinstance(exp, Experiment):
            found[exp.name] = exp
    return dict(sorted(found.items(), key=lambda kv: kv[1].order))


def analyze_checkpoint(path: str, out: str | None = None, **kwargs) -> dict:
    """Re-analyse the run of a checkpoint (or run folder) written by any version of
    ``reproduce``; keyword arguments as :meth:`Experiment.analyze`."""
    from .runs import checkpoint_path

    ck, name, desc = read_run(path)
    exps = experiments()
    if name not in exps or not exps[name].analyzable:
        raise UsageError(f"checkpoint {path!r}: unknown experiment {name!r}")
    return exps[name].analyze(ck, desc, checkpoint_path(path), out, **kwargs)


__all__ = ["CHECKPOINT", "Config", "Experiment", "UsageError", "analyze_checkpoint", "experiments", "read_run"]
