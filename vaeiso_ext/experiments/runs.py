"""The run folder: one run's record. Where its checkpoint is and what run it holds (the current
checkpoint layout and the one before), clearing it for ``--overwrite``, what a checkpoint
actually trained and the line that says so, and the status lines a run prints."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from ..checkpoint import CheckpointError, checkpoint_steps, load_checkpoint, steps_per_epoch
from ..distributed import launch_info
from .config import Config

CHECKPOINT = "checkpoint.pt"
# What a run writes into its folder (figures/ holds the rest): any of them marks a run there.
RUN_FILES = (CHECKPOINT, "results.json", "report.md", "curve.json")
LAYOUT = 2  # meta["layout"] of checkpoints written since the experiments moved here


def plural(n, unit: str) -> str:
    """``1 epoch``, ``2 epochs``, ``1.50 epochs``, ``1,200 Adam steps``: a count and its unit."""
    if isinstance(n, int) or float(n).is_integer():
        return f"{int(n):,} {unit}" + ("" if int(n) == 1 else "s")
    return f"{n:.2f} {unit}s"


# ------------------------------------------------------------------ status lines


@contextmanager
def status(message: str, enabled: bool = True):
    """``message ...`` on stderr, completed with the seconds it took."""
    t0 = time.perf_counter()
    if enabled and launch_info()[0] == 0:
        print(f"{message} ...", end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if enabled and launch_info()[0] == 0:
            print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ checkpoints


def checkpoint_path(path: str) -> str:
    """``path`` itself, or the ``checkpoint.pt`` in it for a folder."""
    return os.path.join(path, CHECKPOINT) if os.path.isdir(path) else path


def read_run(path: str) -> tuple[dict, str, dict]:
    """(checkpoint, experiment name, description) of a checkpoint file or run folder. Reads the
    current layout (``meta = {"experiment", "description", "layout"}``) and the one before
    (``meta = {"kind": "toy"|"images"|"digits", "run": {...}}``)."""
    path = checkpoint_path(path)
    ck = load_checkpoint(path)
    return (ck, *_run_of(ck, path))


def _run_of(ck: dict, path: str) -> tuple[str, dict]:
    """(experiment name, description) of a loaded checkpoint."""
    meta = ck.get("meta") or {}
    if "experiment" in meta and "description" in meta:
        return meta["experiment"], dict(meta["description"])
    if meta.get("kind") in ("toy", "images", "digits") and isinstance(meta.get("run"), dict):
        desc = dict(meta["run"])
        desc.pop("experiment", None)
        return meta["kind"], desc
    raise CheckpointError(
        f"checkpoint {path!r} holds no run description (not written by `python -m vaeiso_ext reproduce`)"
    )


def folder_run(out: str) -> tuple[str, dict | None] | None:
    """What run ``out`` holds: None if none; (what, description or None) otherwise. A checkpoint
    that cannot be continued gives (``a damaged checkpoint (why)``, None)."""
    ck = os.path.join(out, CHECKPOINT)
    if os.path.exists(ck):
        try:
            loaded = load_checkpoint(ck)
        except CheckpointError as e:  # truncated (an interrupted copy, a full disk) or corrupt
            return f"a damaged checkpoint ({e})", None
        try:
            name, desc = _run_of(loaded, ck)
            return f"a {name} run", {"experiment": name, **desc}
        except CheckpointError as e:
            return f"a checkpoint this version cannot continue ({e})", None
    present = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    res_path = os.path.join(out, "results.json")
    if os.path.exists(res_path):  # an analysis written without its checkpoint (analyze --out)
        import json

        try:
            with open(res_path) as f:
                res = json.load(f)
            if res.get("experiment") and isinstance(res.get("config"), dict):
                return f"the outputs of a {res['experiment']} run", {"experiment": res["experiment"], **res["config"]}
        except (OSError, ValueError):
            pass
    if present:
        return f"the outputs of a run ({', '.join(present)})", None
    return None


def clear_run(out: str) -> None:
    """Remove a run's files (``--overwrite``): the checkpoint, results, report and figures."""
    for f in RUN_FILES:
        p = os.path.join(out, f)
        if os.path.exists(p):
            os.unlink(p)
    figs = os.path.join(out, "figures")
    if os.path.isdir(figs):
        for f in os.listdir(figs):
            if f.endswith(".png"):
                os.unlink(os.path.join(figs, f))


def trained_summary(ck_or_history, cfg: Config, n_train: int, batch_size: int, *, fresh: bool = False) -> dict:
    """What a checkpoint (or a finished training's history) actually trained, in how many
    processes (``world_size``, ``backend``: None for one); ``fresh``: the samples were drawn
    afresh at every step (a stream), so an "epoch" is only the stream's reseeding period;
    ``evals`` (the records of a ``train_hooks`` evaluation) only where there are any."""
    if isinstance(ck_or_history, dict):
        steps = checkpoint_steps(ck_or_history, n_train)
        history = list(ck_or_history["history"])
        evals = list(ck_or_history.get("evals") or [])
        world, backend = int(ck_or_history.get("world_size", 1)), ck_or_history.get("backend")
        if world > 1 and backend is None:  # written before the backend was recorded
            backend = "unknown"
    else:
        history = list(ck_or_history)
        steps = int(history[-1]["step"]) if history and "step" in history[-1] else 0
        evals = list(getattr(ck_or_history, "evals", None) or [])
        world, backend = int(getattr(ck_or_history, "world_size", 1)), getattr(ck_or_history, "backend", None)
    spe = steps_per_epoch(n_train, batch_size)
    requested = cfg.length()
    done = steps if cfg.LENGTH == "iterations" else steps / spe
    secs = [h["seconds"] for h in history]
    return {
        "steps": steps,
        "epochs_done": steps / spe if steps % spe else steps // spe,
        "n_train": n_train,
        "batch_size": batch_size,
        "steps_per_epoch": spe,
        "length_field": cfg.LENGTH,
        "requested": requested,
        "complete": done >= requested,
        "final": history[-1] if history else None,
        "world_size": world,
        "backend": backend,
        "fresh_samples": bool(fresh),
        "seconds": sum(secs),
        "seconds_per_epoch_median": sorted(secs)[len(secs) // 2] if secs else None,
        **({"evals": evals} if evals else {}),
    }  # the train_hooks() curve, if the run has one


def trained_text(t: dict) -> str:
    """``trained 1,200 Adam steps = 2 epochs of 600 samples (batch 100) in 1 process`` (+ what
    was asked); for a stream, ``trained 50 Adam steps of 16 samples drawn afresh at every step``."""
    if t.get("fresh_samples"):
        s = (
            f"trained {plural(t['steps'], 'Adam step')} of {t['batch_size']} samples drawn afresh at every "
            f"step ({plural(t['steps'] * t['batch_size'], 'sample')} in all)"
        )
    else:
        s = (
            f"trained {plural(t['steps'], 'Adam step')} = {plural(t['epochs_done'], 'epoch')} of "
            f"{plural(t['n_train'], 'sample')} (batch {t['batch_size']})"
        )
    world = int(t.get("world_size", 1))
    s += f" data-parallel in {world} processes ({t.get('backend')})" if world > 1 else " in 1 process"
    if not t["complete"]:
        s += (
            f"; INCOMPLETE: {plural(t['requested'], t['length_field'].rstrip('s'))} "
            f"{'was' if t['requested'] == 1 else 'were'} requested"
        )
    return s
