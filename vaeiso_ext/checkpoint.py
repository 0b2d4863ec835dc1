"""Training checkpoints: the format, atomic writes, validated reads, and the step arithmetic a
resume needs. A checkpoint is a dict saved with torch.save (weights only); ``format`` names its
version, ``step`` the Adam steps done (older checkpoints stopped at epoch ends)."""

from __future__ import annotations

import math
import os

import torch

from . import __version__

CHECKPOINT_FORMAT = "vaeiso_ext.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or incompatible."""


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def versions() -> dict:
    import platform

    return {"vaeiso_ext": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def save_atomic(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str) -> dict:
    """Read and validate a checkpoint; raise :class:`CheckpointError` with the reason otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r}: no such file")
    try:
        # TorchVersion (a str subclass) is allowed for checkpoints written before versions() used str
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or not a torch file at all
        # torch's own message suggests weights_only=False (unsafe, and no help here): not repeated
        raise CheckpointError(
            f"checkpoint {path!r} is unreadable: not a torch checkpoint, or corrupt or truncated ({type(e).__name__})"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path!r} is not a vaeiso_ext checkpoint (expected format {CHECKPOINT_FORMAT!r})"
        )
    missing = {"epoch", "train", "model_config", "model", "optimizer", "history"} - set(ck)
    if missing:
        raise CheckpointError(f"checkpoint {path!r} lacks {sorted(missing)}")
    return ck


def checkpoint_steps(ck: dict, n_train: int) -> int:
    """Adam steps done in a checkpoint; checkpoints older than the ``step`` key stopped at epoch
    ends, so theirs is epochs x steps per epoch."""
    if "step" in ck:
        return int(ck["step"])
    return int(ck["epoch"]) * steps_per_epoch(n_train, int(ck["train"]["batch_size"]))
