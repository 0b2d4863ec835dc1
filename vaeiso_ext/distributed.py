"""Data-parallel runs under torchrun: joining the process group, this process's rank and world
size, and the rule that a checkpoint resumes only under the world size it was trained with."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .checkpoint import CheckpointError


def dist_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launch_info() -> tuple[int, int]:
    """(rank, world_size) of this process: the process group's once joined, before that what
    torchrun set (RANK, WORLD_SIZE); (0, 1) in a plain process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def backend_name() -> str | None:
    """The process group's backend (``gloo``, ``nccl``); None in a single process."""
    if dist.is_available() and dist.is_initialized():
        return str(dist.get_backend())
    return None


def check_world(checkpoint: str, ck: dict, world: int, what=CheckpointError) -> None:
    """Refuse (``what``) to continue a checkpoint under another world size: each rank draws its
    own noise stream, so the continuation would not be the run the checkpoint started."""
    saved = int(ck.get("world_size", 1))
    if saved != world:
        launch = f"torchrun --nproc_per_node={saved}" if saved > 1 else "one process (no torchrun)"
        raise what(
            f"--resume refused: {checkpoint!r} was trained with world size {saved} (recorded); "
            f"this run has world size {world} (current): resume it with {launch}, or start again "
            "with --overwrite"
        )


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl on GPU, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist_info()


def default_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
