"""beta-VAE training in the paper's lambda form (App. D.1, Eq. 65).

    L = lambda * D(x, x_hat) + sum_j KL_j                     (conventional)
    L = lambda * (D(x, x_breve) + D(x_breve, x_hat)) + KL      (decomposed, x_breve = Dec(mu(x)))

with any metric object (``metric.distance(x, y) -> (N,)``, base first). Adam, batches drawn from a
pre-loaded tensor with a seeded permutation per epoch (no DataLoader: the model is tiny and the
loader's overhead would dominate). A run is exactly ``epochs`` passes or exactly ``iterations``
Adam steps (never both). All randomness of epoch e is derived from (seed, e), so a run resumed
from a checkpoint continues bit-identically, also from the middle of an epoch. The learning rate
is a function of the step alone (so resumes stay exact): ``warmup`` > 0 raises it linearly over
the first Adam steps, ``lr_drop_at`` > 0 multiplies it by ``lr_drop`` from that step on.

``x_train`` may also be a stream of fresh samples (:class:`vaeiso_ext.data.images.RandomCrops`):
anything with ``shape[0]`` (the samples of one epoch), ``x[idx]`` (``len(idx)`` samples),
``set_epoch(e)`` (reseed from the run's seed and e) and ``skip(k)`` (advance past k samples
without making them, for a mid-epoch resume). Under ``torchrun`` the run is
data-parallel (gloo on CPU, nccl on GPU): each global batch is split across ranks and rank 0
alone writes checkpoints.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_steps,
    load_checkpoint,
    save_atomic,
    steps_per_epoch,
    versions,
)
from .distributed import backend_name, check_world, default_device, init_distributed


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite. ``step``: the first bad Adam step (1-based); ``good_step``:
    the step of the last checkpoint written (the last good state; 0 if none)."""

    def __init__(self, step: int, good_step: int, epoch: int, what: str):
        self.step, self.good_step, self.epoch = step, good_step, epoch
        super().__init__(f"training diverged at step {step} (epoch {epoch}): {what}")


@dataclass
class TrainConfig:
    lam: float = 100.0  # lambda = 1 / beta
    epochs: int | None = 500  # passes over the data ...
    batch_size: int = 128  # global batch (split across ranks under DDP)
    lr: float = 1e-3
    seed: int = 0
    decomposed: bool = False
    iterations: int | None = None  # ... or exactly this many Adam steps (set epochs=None)
    warmup: int = 0  # Adam steps of linear lr warm-up: lr * min(1, (step + 1) / warmup)
    lr_drop_at: int = 0  # from this Adam step (0-based) on, the lr is multiplied by lr_drop (0: never)
    lr_drop: float = 0.3

    def validate(self) -> "TrainConfig":
        if (self.epochs is None) == (self.iterations is None):
            raise ValueError(
                "TrainConfig: give exactly one of epochs and iterations "
                f"(got epochs={self.epochs}, iterations={self.iterations})"
            )
        length = self.epochs if self.iterations is None else self.iterations
        if length < 1 or self.batch_size < 1:
            raise ValueError(
                f"TrainConfig: epochs/iterations and batch_size must be >= 1, got {length} and {self.batch_size}"
            )
        if not (math.isfinite(self.lam) and self.lam > 0 and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig: lam and lr must be finite and > 0, got {self.lam}, {self.lr}")
        if self.warmup < 0:
            raise ValueError(f"TrainConfig: warmup must be >= 0 Adam steps, got {self.warmup}")
        if self.lr_drop_at < 0:
            raise ValueError(f"TrainConfig: lr_drop_at must be >= 0 (an Adam step; 0: no drop), got {self.lr_drop_at}")
        if not (math.isfinite(self.lr_drop) and 0 < self.lr_drop <= 1):
            raise ValueError(f"TrainConfig: lr_drop must be a factor in (0, 1], got {self.lr_drop}")
        return self

    def total_steps(self, n: int) -> int:
        """Adam steps of the whole run on ``n`` training samples."""
        if self.iterations is not None:
            return int(self.iterations)
        return int(self.epochs) * steps_per_epoch(n, self.batch_size)

    def lr_at(self, step: int) -> float:
        """The learning rate of Adam step ``step`` (0-based): ``lr * min(1, (step + 1) / warmup)``
        (no factor without a warm-up), times ``lr_drop`` once ``step >= lr_drop_at > 0``."""
        lr = self.lr
        if self.warmup:
            lr = lr * min(1.0, (step + 1) / self.warmup)
        if self.lr_drop_at and step >= self.lr_drop_at:
            lr = lr * self.lr_drop
        return lr

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Read a stored config; fields a checkpoint lacks (older versions) take their defaults,
        which are how those runs trained (``warmup`` 0: no warm-up; ``lr_drop_at`` 0: no drop)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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
        """(lambda * distortion (N,), KL per dimension (N, n))."""
        mu, logvar = self.model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * noise
        if self.decomposed:
            # decode mu and z in one batch; gradients flow through both terms (no stop-gradient)
            out = self.model.decode(torch.cat([mu, z]))
            x_breve, x_hat = out[: x.shape[0]], out[x.shape[0] :]
            rec = self.metric.distance(x, x_breve) + self.metric.distance(x_breve, x_hat)
        else:
            rec = self.metric.distance(x, self.model.decode(z))
        return self.lam * rec, kl_per_dim(mu, logvar)


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + epoch) * 64 + stream)


def _share(n: int, batch: int, b: int, rank: int, world: int) -> int:
    """Rows of batch ``b`` (of size ``batch`` over ``n`` samples) that rank ``rank`` takes."""
    nb = min(batch, n - b * batch)
    return len(range(rank, nb, world))


# ------------------------------------------------------------------ training


class History(list):
    """Per-segment training records (a segment is an epoch, or the part of one that a run
    trained: the last epoch of an ``iterations`` run, or each side of a resume), each with
    ``epoch``, ``step`` (Adam steps done at its end), ``loss``, ``distortion``, ``kl`` (means over
    the segment's samples) and ``seconds``. ``evals`` holds the ``evaluate`` callback's records,
    ``world_size`` and ``backend`` the process group it trained in (1 and None: one process)."""

    evals: list
    world_size: int = 1
    backend: str | None = None

    @property
    def steps(self) -> int:
        return int(self[-1]["step"]) if self else 0


def train(
    model: nn.Module,
    x_train: Tensor,
    metric,
    config: TrainConfig,
    *,
    checkpoint: str | None = None,
    resume: bool = False,
    progress: bool = True,
    meta: dict | None = None,
    device: torch.device | None = None,
    kl_threshold: float = 0.1,
    evaluate: Callable[[nn.Module], dict] | None = None,
    eval_every: int = 0,
    save_every: float = 30.0,
) -> History:
    """Train ``model`` in place for exactly ``config.total_steps(len(x_train))`` Adam steps;
    returns the :class:`History`.

    ``checkpoint``: path written atomically (rank 0 only) at the end of the first epoch, then at
    the end of an epoch once ``save_every`` seconds have passed since the last write (0: every
    epoch), and at the end of the run: with epochs of a few steps (the digits: 7) a write per
    epoch would cost more than the training, and a resume is exact from any step.
    ``resume``: continue from it (model, optimizer, history, the exact step, mid-epoch included;
    the config must agree except for its length). ``meta`` (e.g. the run description) is stored
    in the checkpoint. ``kl_threshold`` only labels the progress bar's count of active dims.
    A resume under another world size than the checkpoint's is refused (CheckpointError): the
    ranks' noise streams depend on it, so the run would silently become another one.
    ``evaluate(model)`` (eval mode, no grad) runs before the first step, every
    ``eval_every`` steps and at the end;
    its dicts, with ``step`` added, go to ``History.evals`` and the checkpoint.
    A non-finite loss raises :class:`TrainingDiverged` (the checkpoint keeps the last good state).
    """
    return _Training(
        model,
        x_train,
        metric,
        config,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
        meta=meta,
        device=device,
        kl_threshold=kl_threshold,
        evaluate=evaluate,
        eval_every=eval_every,
        save_every=save_every,
    ).run()


class _Training:
    """One call of :func:`train` as named steps: set-up (resume, progress bar), :meth:`run`,
    :meth:`epoch`, :meth:`adam_step`, :meth:`show_progress`, :meth:`end_epoch`, :meth:`save`."""

    def __init__(
        self,
        model: nn.Module,
        x_train: Tensor,
        metric,
        config: TrainConfig,
        *,
        checkpoint,
        resume,
        progress,
        meta,
        device,
        kl_threshold,
        evaluate,
        eval_every,
        save_every,
    ):
        config.validate()
        self.rank, self.world = init_distributed()
        self.device = device = device or default_device()
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the world size {self.world}")
        model.to(device)
        self.model, self.config, self.x_train = model, config, x_train.to(device)
        self.n = self.x_train.shape[0]
        self.stream = hasattr(self.x_train, "set_epoch")  # fresh samples each step (data.images.RandomCrops)
        self.B = config.batch_size
        self.spe = steps_per_epoch(self.n, self.B)
        self.total = config.total_steps(self.n)
        self.opt = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
        self.history = History()
        self.history.evals = []
        self.history.world_size, self.history.backend = self.world, backend_name()
        self.checkpoint, self.meta, self.kl_threshold = checkpoint, meta, kl_threshold
        self.evaluate, self.eval_every, self.save_every = evaluate, eval_every, save_every
        self.step = 0
        if resume:
            self.resume()
        objective = Objective(model, metric, config.lam, config.decomposed)
        self.step_module: nn.Module = objective
        if self.world > 1:
            self.step_module = nn.parallel.DistributedDataParallel(
                objective, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.bar = None
        if progress and self.rank == 0 and self.step < self.total:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.step,
                desc="train",
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.5,
            )
        self.good_step = self.step
        self.last_save = None  # perf_counter of the last checkpoint write
        self.last_show = 0.0  # the first step shows the numbers at once

    def resume(self) -> None:
        """Model, optimizer, history and step from the checkpoint (same config but its length, same world)."""
        checkpoint, config = self.checkpoint, self.config
        if checkpoint is None:
            raise CheckpointError("resume: no checkpoint path given")
        ck = load_checkpoint(checkpoint)
        saved = TrainConfig.from_dict(ck["train"])
        mismatch = {
            k: (v, getattr(config, k))
            for k, v in asdict(saved).items()
            if k not in ("epochs", "iterations") and getattr(config, k) != v
        }
        if mismatch:
            raise CheckpointError(
                f"checkpoint {checkpoint!r} was trained with a different config (saved, requested): {mismatch}"
            )
        check_world(checkpoint, ck, self.world)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.history.extend(ck["history"])
        self.history.evals = list(ck.get("evals", []))
        self.step = checkpoint_steps(ck, self.n)

    def save(self) -> None:
        if self.checkpoint is not None and self.rank == 0:
            model, history = self.model, self.history
            save_atomic(
                {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": self.step // self.spe,
                    "step": self.step,
                    "train": asdict(self.config),
                    "model_config": dict(getattr(model, "config", {})),
                    "model": model.state_dict(),
                    "optimizer": self.opt.state_dict(),
                    "history": list(history),
                    "evals": history.evals,
                    "meta": self.meta or {},
                    "world_size": self.world,
                    "backend": history.backend,
                    "versions": versions(),
                },
                self.checkpoint,
            )

    def evaluate_now(self) -> None:
        if self.evaluate is None or self.rank != 0:
            return
        self.model.eval()
        with torch.no_grad():
            rec = dict(self.evaluate(self.model))
        self.model.train()
        self.history.evals.append({"step": self.step, **rec})

    def run(self) -> History:
        # Adam's first moment of a parameter whose gradient stays ~0 decays through float32's
        # denormal range, where CPU arithmetic is many times slower (measured on the digits model:
        # most exp_avg entries denormal after ~1,000 steps, steps 1.8x slower). Flushing denormals to
        # zero changes an Adam update by less than ~1e-30, far below the resolution of any trained
        # weight. It applies to this thread and to worker threads started after it (they inherit the
        # setting); restored when training ends. Training and evaluation run under it.
        flush = self.device.type == "cpu" and torch.set_flush_denormal(True)
        try:
            if self.step == 0 and self.total > 0:
                self.evaluate_now()  # the curve starts at the initialisation
            self.model.train()
            while self.step < self.total:
                self.epoch()
        finally:
            if flush:
                torch.set_flush_denormal(False)
            if self.bar is not None:
                self.bar.close()
        self.model.eval()
        return self.history

    def epoch(self) -> None:
        """The rest of the current epoch, or as much of it as the run's length leaves."""
        n, B, rank, world, latent = self.n, self.B, self.rank, self.world, self.model.latent
        epoch, first = divmod(self.step, self.spe)
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=_epoch_generator(self.config.seed, epoch, 0)).to(self.device)
        g_noise = _epoch_generator(self.config.seed, epoch, 1 + rank)
        if self.stream:
            self.x_train.set_epoch(epoch)
        for b in range(first):  # a mid-epoch resume: replay the noise (and stream) of the batches done
            torch.randn(_share(n, B, b, rank, world), latent, generator=g_noise)
            if self.stream:
                self.x_train.skip(_share(n, B, b, rank, world))
        tot = torch.zeros(3, dtype=torch.float64, device=self.device)
        kl_dims = torch.zeros(latent, dtype=torch.float64, device=self.device)
        seen, step_losses = 0, []
        last = min(self.spe, first + self.total - self.step)
        for b in range(first, last):
            nb, rec, kl, loss = self.adam_step(perm[b * B : (b + 1) * B], g_noise)
            seen += nb
            with torch.no_grad():
                kl_sum = kl.sum(1)
                tot += torch.stack([(rec + kl_sum).sum(), rec.sum(), kl_sum.sum()]).double()
                kl_dims += kl.sum(0).double()
                step_losses.append(loss.detach())
            self.show_progress(epoch, tot, kl_dims, seen, step_losses)
            if (
                self.evaluate is not None
                and self.eval_every
                and self.step % self.eval_every == 0
                and self.step < self.total
            ):
                self.evaluate_now()
        self.end_epoch(epoch, t0, tot, seen, step_losses)

    def adam_step(self, idx: Tensor, g_noise: torch.Generator):
        """One Adam step on this rank's share of the batch ``idx``: ``(len(idx), rec, KL per dim, loss)``."""
        nb = idx.shape[0]
        x = self.x_train[idx[self.rank :: self.world]]
        noise = torch.randn(x.shape[0], self.model.latent, generator=g_noise).to(self.device)
        rec, kl = self.step_module(x, noise)
        # sum over this rank's share / global batch size; DDP averages over ranks -> x world
        loss = (rec + kl.sum(1)).sum() * (self.world / nb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in self.opt.param_groups:  # from the step alone: a resumed run gets the same lr
            group["lr"] = self.config.lr_at(self.step)
        self.opt.step()
        self.step += 1
        return nb, rec, kl, loss

    def show_progress(self, epoch: int, tot: Tensor, kl_dims: Tensor, seen: int, step_losses: list) -> None:
        """The progress bar's step, and at most once a second its numbers (and the finiteness check)."""
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last_show < 1.0:
            return
        self.last_show = now
        if self.world == 1:  # under DDP every rank must stop at the same step
            _check_finite(step_losses, self.step - len(step_losses), self.good_step, epoch)
        m = (tot / max(seen // self.world, 1)).tolist()
        act = int((kl_dims / max(seen // self.world, 1) >= self.kl_threshold).sum())
        self.bar.set_postfix_str(
            f"epoch {epoch + 1}/{math.ceil(self.total / self.spe)} loss {m[0]:.4g} "
            f"KL {m[2]:.3g} active dims {act}/{self.model.latent}",
            refresh=False,
        )

    def end_epoch(self, epoch: int, t0: float, tot: Tensor, seen: int, step_losses: list) -> None:
        """The epoch's record (means over all ranks' samples), the final evaluation, the checkpoint when due."""
        if self.world > 1:
            dist.all_reduce(tot)
        tot = (tot / seen).tolist()
        _check_finite(step_losses, self.step - len(step_losses), self.good_step, epoch)
        if not all(math.isfinite(v) for v in tot):
            raise TrainingDiverged(self.step, self.good_step, epoch + 1, f"mean loss {tot[0]}")
        self.history.append(
            {
                "epoch": epoch + 1,
                "step": self.step,
                "loss": tot[0],
                "distortion": tot[1] / self.config.lam,
                "kl": tot[2],
                "seconds": time.perf_counter() - t0,
            }
        )
        if self.step == self.total:
            self.evaluate_now()
        now = time.perf_counter()
        if self.step == self.total or self.last_save is None or now - self.last_save >= self.save_every:
            self.save()
            self.good_step, self.last_save = self.step, now


def _check_finite(losses: list, first_step: int, good_step: int, epoch: int) -> None:
    """Raise :class:`TrainingDiverged` at the first non-finite loss of ``losses`` (steps
    ``first_step + 1 ...``)."""
    if not losses:
        return
    v = torch.stack(losses)
    bad = ~torch.isfinite(v)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise TrainingDiverged(first_step + i + 1, good_step, epoch + 1, f"loss {v[i].item()}")
