"""beta-VAE training in the paper's lambda form (App. D.1, Eq. 65).

    L = lambda * D(x, x_hat) + sum_j KL_j                     (conventional)
    L = lambda * (D(x, x_breve) + D(x_breve, x_hat)) + KL      (decomposed, x_breve = Dec(mu(x)))

with any metric object (``metric.distance(x, y) -> (N,)``, base first). Adam, batches drawn from a
pre-loaded tensor with a seeded permutation per epoch (no DataLoader: the model is tiny and the
loader's overhead would dominate). All randomness of epoch e is derived from (seed, e), so a run
resumed from the checkpoint of epoch e continues bit-identically. Under ``torchrun`` the run is
data-parallel (gloo on CPU, nccl on GPU): each global batch is split across ranks and rank 0
alone writes checkpoints.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import __version__

CHECKPOINT_FORMAT = "vaeiso_ext.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or incompatible."""


@dataclass
class TrainConfig:
    lam: float = 100.0          # lambda = 1 / beta
    epochs: int = 500
    batch_size: int = 128       # global batch (split across ranks under DDP)
    lr: float = 1e-3
    seed: int = 0
    decomposed: bool = False
    warmup: int = 0             # Adam steps of linear learning-rate warm-up (0: none)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ------------------------------------------------------------------ distributed helpers


def dist_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


# ------------------------------------------------------------------ checkpoints


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
        raise CheckpointError(f"checkpoint {path!r} is unreadable (corrupt or truncated?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path!r} is not a vaeiso_ext checkpoint "
                              f"(expected format {CHECKPOINT_FORMAT!r})")
    missing = {"epoch", "train", "model_config", "model", "optimizer", "history"} - set(ck)
    if missing:
        raise CheckpointError(f"checkpoint {path!r} lacks {sorted(missing)}")
    return ck


# ------------------------------------------------------------------ the objective


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL_j(x) = 1/2 (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1) -> (N, n)."""
    return 0.5 * (mu * mu + logvar.exp() - logvar - 1.0)


class Objective(nn.Module):
    """Per-sample lambda-form loss terms; wrapping this module (not the VAE) in DDP keeps the
    decomposed form's second decode inside forward()."""

    def __init__(self, model: nn.Module, metric, lam: float, decomposed: bool):
        super().__init__()
        self.model, self.metric, self.lam, self.decomposed = model, metric, float(lam), decomposed

    def forward(self, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(lambda * distortion, KL) per sample, both (N,)."""
        mu, logvar = self.model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * noise
        if self.decomposed:
            # decode mu and z in one batch; gradients flow through both terms (no stop-gradient)
            out = self.model.decode(torch.cat([mu, z]))
            x_breve, x_hat = out[: x.shape[0]], out[x.shape[0]:]
            rec = self.metric.distance(x, x_breve) + self.metric.distance(x_breve, x_hat)
        else:
            rec = self.metric.distance(x, self.model.decode(z))
        return self.lam * rec, kl_per_dim(mu, logvar).sum(1)


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + epoch) * 64 + stream)


# ------------------------------------------------------------------ training


def train(model: nn.Module, x_train: Tensor, metric, config: TrainConfig, *,
          checkpoint: str | None = None, resume: bool = False, progress: bool = True,
          meta: dict | None = None, device: torch.device | None = None,
          on_epoch=None) -> list[dict]:
    """Train ``model`` in place; returns the per-epoch history.

    ``on_epoch(epoch, history)``: called on rank 0 after each epoch's checkpoint (e.g. an
    evaluation; it may switch the model to eval mode, training switches it back).
    ``checkpoint``: path written atomically after every epoch (rank 0 only). ``resume``: continue
    from it (model, optimizer, history; the config must agree except for ``epochs``). ``meta``
    (e.g. the dataset config and loss name) is stored in the checkpoint for ``analyze``.
    """
    rank, world = init_distributed()
    device = device or default_device()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the world size {world}")
    model.to(device)
    x_train = x_train.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    history: list[dict] = []
    start = 0
    if resume:
        if checkpoint is None:
            raise CheckpointError("resume: no checkpoint path given")
        ck = load_checkpoint(checkpoint)
        saved = TrainConfig.from_dict(ck["train"])
        mismatch = {k: (v, getattr(config, k)) for k, v in asdict(saved).items()
                    if k != "epochs" and getattr(config, k) != v}
        if mismatch:
            raise CheckpointError(f"checkpoint {checkpoint!r} was trained with a different config "
                                  f"(saved, requested): {mismatch}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        history = list(ck["history"])
        start = int(ck["epoch"])
    objective = Objective(model, metric, config.lam, config.decomposed)
    step_module: nn.Module = objective
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None)
    n = x_train.shape[0]
    B = config.batch_size
    steps_per_epoch = -(-n // B)
    bar = None
    if progress and rank == 0 and start < config.epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=start, desc="train", unit="epoch", file=sys.stderr,
                   dynamic_ncols=True)
    model.train()
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        if hasattr(x_train, "set_epoch"):  # a stream of fresh samples (data.images.RandomCrops)
            x_train.set_epoch(epoch)
        perm = torch.randperm(n, generator=_epoch_generator(config.seed, epoch, 0)).to(device)
        g_noise = _epoch_generator(config.seed, epoch, 1 + rank)
        tot = torch.zeros(3, dtype=torch.float64, device=device)
        for b0 in range(0, n, B):
            if config.warmup:  # lr rises linearly over the first `warmup` steps
                step = epoch * steps_per_epoch + b0 // B
                for group in opt.param_groups:
                    group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup)
            idx = perm[b0:b0 + B]
            nb = idx.shape[0]
            idx = idx[rank::world]
            x = x_train[idx]
            noise = torch.randn(x.shape[0], model.latent, generator=g_noise).to(device)
            rec, kl = step_module(x, noise)
            # sum over this rank's share / global batch size; DDP averages over ranks -> x world
            loss = (rec + kl).sum() * (world / nb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                tot += torch.stack([(rec + kl).sum(), rec.sum(), kl.sum()]).double()
        if world > 1:
            dist.all_reduce(tot)
        tot = (tot / n).tolist()
        rec_epoch = {"epoch": epoch + 1, "loss": tot[0], "distortion": tot[1] / config.lam,
                     "kl": tot[2], "seconds": time.perf_counter() - t0}
        history.append(rec_epoch)
        if not all(math.isfinite(v) for v in tot):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1}: {rec_epoch}")
        if checkpoint is not None and rank == 0:
            save_atomic({"format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "train": asdict(config),
                         "model_config": dict(getattr(model, "config", {})),
                         "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "history": history, "meta": meta or {}, "world_size": world,
                         "versions": versions()}, checkpoint)
        if on_epoch is not None and rank == 0:
            on_epoch(epoch + 1, history)
            model.train()
        if bar is not None:
            bar.set_postfix(loss=f"{tot[0]:.3f}", kl=f"{tot[2]:.3f}",
                            s_per_epoch=f"{rec_epoch['seconds']:.2f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    return history
