"""The per-latent analysis of docs/ops.md, "The analysis" for any VAE and metric (no true density needed): KL,
E[sigma^-2] (PCA-like importance), active and informative dimensions, D'_j, the implicit-isometry
norm beside its optimum 1 - sigma_j^2, and the isometry Gram; and the fit (distortion and KL) of a
model on a sample set. Used for the image and digit models; the toy analysis adds the density side
and shares :func:`theory_stats`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..metrics import as_metric
from .derivatives import dj_prime, isometry_gram
from .model import (
    EVAL_NOTE,
    FlatDecoder,
    as_vae,
    check_count,
    check_data,
    check_decoder,
    check_positive,
    check_threshold,
    encode_all,
    running,
)

INFORMATIVE_THRESHOLD = 10.0  # E[sigma_j^-2] at or above which a dim is "informative"
RATIO_FLOOR = 0.1  # norm / (1 - sigma^2) only where 1 - sigma^2 >= this (sigma^2 <= 0.9)


def mean_sd(values: list) -> dict:
    """Mean and SD (population) of the non-None ``values``; None for both when there are none."""
    v = torch.tensor([x for x in values if x is not None], dtype=torch.float64)
    if not v.numel():
        return {"mean": None, "sd": None}
    return {"mean": v.mean().item(), "sd": v.std(unbiased=False).item()}


def check_theory_args(where: str, informative_threshold, ratio_floor) -> None:
    """TypeError / ValueError naming ``where`` unless the threshold is a finite number > 0 and the
    floor one in (0, 1) (a floor at 0 would divide by ~0; 1 - sigma^2 never reaches 1)."""
    for name, v, ok, rng in (
        ("informative_threshold", informative_threshold, lambda f: f > 0, "> 0"),
        ("ratio_floor", ratio_floor, lambda f: 0 < f < 1, "in (0, 1)"),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{where}: {name}: expected a number, got {type(v).__name__}")
        if not (math.isfinite(v) and ok(v)):
            raise ValueError(f"{where}: {name}: expected a finite number {rng}, got {v!r}")


def theory_stats(
    sigma2: Tensor,
    norm: Tensor,
    *,
    informative_threshold: float = INFORMATIVE_THRESHOLD,
    ratio_floor: float = RATIO_FLOOR,
) -> list[dict]:
    """Per latent dim, what the theory predicts for the norm: at the sigma optimum of
    ``lambda sum_j sigma_j^2 D'_j + KL_j`` the norm ``(2/beta) sigma_j^2 D'_j`` is ``1 - sigma_j^2``
    (the paper's "about 1" assumes sigma_j << 1).

    ``sigma2`` and ``norm``: ``(N, n)`` per-sample values. Returns one dict per dim (in index
    order) with

    - ``one_minus_sigma2_mean``: the mean over x of ``1 - sigma_j(x)^2``;
    - ``norm_ratio_mean``, ``norm_ratio_sd``: mean and SD over x of the per-sample ratio
      ``norm / (1 - sigma_j^2)`` (theory: 1), over the samples with ``1 - sigma_j^2 >=
      ratio_floor`` only: where sigma^2 is near or above 1 the prediction is ~0 or negative and
      the ratio is noise divided by ~0. ``norm_ratio_skipped`` counts the samples left out; with
      all of them left out the mean and SD are None;
    - ``norm_ratio_of_means``: ``norm_mean / one_minus_sigma2_mean`` (None when that mean is
      below ``ratio_floor``), the ratio of the two columns a table shows;
    - ``informative``: ``E[sigma_j^-2] >= informative_threshold``. Unlike the KL rule this cannot
      be passed through mu offsets alone while sigma^2 ~ 1 (whose expected norm is ~0).
    """
    check_theory_args("theory_stats", informative_threshold, ratio_floor)
    one_minus = 1.0 - sigma2
    keep = one_minus >= ratio_floor
    ratio = torch.where(keep, norm / torch.where(keep, one_minus, torch.ones_like(one_minus)), torch.zeros_like(norm))
    inv_s2 = (1.0 / sigma2).mean(0)
    out = []
    for j in range(sigma2.shape[1]):
        k = keep[:, j]
        r = ratio[k, j]
        om = one_minus[:, j].mean().item()
        out.append(
            {
                "one_minus_sigma2_mean": om,
                "norm_ratio_mean": r.mean().item() if r.numel() else None,
                "norm_ratio_sd": r.std(unbiased=False).item() if r.numel() else None,
                "norm_ratio_skipped": int((~k).sum()),
                "norm_ratio_of_means": norm[:, j].mean().item() / om if om >= ratio_floor else None,
                "informative": bool(inv_s2[j] >= informative_threshold),
            }
        )
    return out


def theory_summary(dims: list[dict]) -> dict:
    """Across the informative dims of ``dims`` (entries carrying :func:`theory_stats`' keys and
    ``norm_mean``): their count, the mean/SD of their per-dim norm means and of their per-dim
    ratio means (dims whose ratio is None are left out of the latter)."""
    inf = [d for d in dims if d["informative"]]
    return {
        "informative_dims": len(inf),
        "norm_informative": mean_sd([d["norm_mean"] for d in inf]),
        "norm_ratio_informative": mean_sd([d["norm_ratio_mean"] for d in inf]),
    }


def check_analysis_args(where: str, model, metric, beta, eps, kl_threshold, informative_threshold, ratio_floor):
    """The arguments every full analysis takes, checked in the name of ``where`` (the public
    function called): ``(vae, metric, beta, eps)``."""
    vae = as_vae(where, model)
    metric = as_metric(where, metric)
    beta = check_positive(where, "beta", beta)
    eps = check_positive(where, "eps", eps)
    check_threshold(where, kl_threshold)
    check_theory_args(where, informative_threshold, ratio_floor)
    return vae, metric, beta, eps


def _check_method(where: str, method) -> str:
    from .derivatives import METHODS

    if method not in METHODS:
        raise ValueError(f"{where}: method: expected one of {METHODS}, got {method!r}")
    return method


def _spatial(out: dict, lat: tuple[int, ...], kl, inv_s2, dj, norm, active) -> None:
    """For a latent of shape ``lat`` with more than one dim (a conv VAE's ``(C, h, w)``): each
    dim's ``position`` in it, the per-dim means as ``maps`` of that shape, and per channel
    (``lat[0]``) a summary over its ``prod(lat[1:])`` dims."""
    idx = torch.arange(math.prod(lat))
    pos = torch.stack(torch.unravel_index(idx, lat), 1).tolist()
    for d in out["dims"]:
        d["position"] = pos[d["index"]]
    norm_mean = norm.mean(0)
    out["maps"] = {
        "kl": kl.reshape(lat).tolist(),
        "inv_sigma2_mean": inv_s2.reshape(lat).tolist(),
        "dj_mean": dj.mean(0).reshape(lat).tolist(),
        "norm_mean": norm_mean.reshape(lat).tolist(),
        "active": active.reshape(lat).tolist(),
    }
    per = math.prod(lat[1:])
    chans = []
    for c in range(lat[0]):
        sl = slice(c * per, (c + 1) * per)
        a = active[sl]
        chans.append(
            {
                "channel": c,
                "dims": per,
                "active_dims": int(a.sum()),
                "kl_sum": kl[sl].sum().item(),
                "inv_sigma2_mean_max": inv_s2[sl].max().item(),
                "norm_active": mean_sd(norm_mean[sl][a].tolist()),
            }
        )
    out["channels"] = chans


def analyze_latents(
    model,
    x: Tensor,
    metric,
    beta: float,
    *,
    kl_threshold: float = 0.1,
    informative_threshold: float = INFORMATIVE_THRESHOLD,
    ratio_floor: float = RATIO_FLOOR,
    eps: float = 1e-3,
    method: str = "forward",
    gram: bool = True,
    chunk: int = 64,
    progress: bool = False,
    dtype: torch.dtype | None = torch.float64,
) -> dict:
    """Per-dimension statistics of a trained VAE on held-out data ``x``.

    ``model``: a :class:`~vaeiso_ext.analysis.VAEAdapter` (any VAE: its ``encode``, ``decode`` and
    the posterior's parametrisation, docs/analysis.md) or a model of :mod:`vaeiso_ext.models`.
    ``metric``: the training metric, an object of :mod:`vaeiso_ext.metrics` or its name.
    The model runs in eval mode (dropout off, batch-norm running statistics) and is left as it
    was: training flags, ``requires_grad``, weights (``model_mode`` in the results says so).

    Returns a dict with ``dims`` (one entry per latent, ordered by descending E[sigma^-2]: index,
    ``kl``, ``inv_sigma2_mean``, ``dj_mean``, ``dj_sd``, ``norm_mean``, ``norm_sd``, ``active``
    and :func:`theory_stats`' ``one_minus_sigma2_mean``, ``norm_ratio_mean``, ``norm_ratio_sd``,
    ``norm_ratio_skipped``, ``norm_ratio_of_means``, ``informative``), ``active_dims``,
    ``norm_active`` (mean and SD across active dimensions of the per-dimension norm means, the
    paper's "1.83 +- 0.13" statistic), ``informative_dims``, ``norm_informative`` (the same over
    the informative dims) and ``norm_ratio_informative`` (mean and SD over the informative dims of
    their ``norm_ratio_mean``), ``gram`` (mean diagonal and mean |off-diagonal| of the isometry
    Gram over active dimensions), ``latent_shape`` and the settings used.

    A latent of shape ``(C, h, w)`` (or any shape beyond one dim) is analysed over the
    flattened latent, n = C h w dims (the paper's n; ``index`` is the flat index, row-major);
    each dim also gets its ``position`` ``[c, i, j]``, ``maps`` holds the per-dim means (``kl``,
    ``inv_sigma2_mean``, ``dj_mean``, ``norm_mean``, ``active``) in the latent's shape and
    ``channels`` a summary per channel (its dims, active dims, summed KL, largest E[sigma^-2],
    norm mean and SD over its active dims).

    Two rules pick the dims the theory speaks about: *active*, mean KL >= ``kl_threshold`` nats,
    and *informative*, E[sigma^-2] >= ``informative_threshold`` (default 10). A dim can be active
    through mu offsets alone while sigma^2 ~ 1; its norm is then ~0, as its 1 - sigma^2 says.
    ``ratio_floor``: the per-sample ratio norm / (1 - sigma^2) is averaged over the samples with
    1 - sigma^2 >= ``ratio_floor`` (see :func:`theory_stats`).
    ``method`` picks the D'_j estimate ("forward" as the paper, "central" or "jvp").

    ``dtype``: the encoder and decoder run in this precision (the model's modules are cast for
    the call and restored afterwards, the same tensors). The
    default, float64, makes the results independent of how samples and decodes are batched: in
    float32 the difference ``Dec(z + eps e_j) - Dec(z)`` keeps only ~4 digits at eps = 1e-3 and
    batches of different sizes round differently (D'_j moved by up to 2e-3 relative with the chunk
    size), and the encoder's mu(x) moves by ~1e-7, which moves D'_j by ~1e-6; in float64 the same
    rounding moves D'_j by ~1e-9. ``None``
    keeps the model's dtype (faster, e.g. on a GPU without fast float64).
    """
    where = "analyze_latents"
    vae, metric, beta, eps = check_analysis_args(
        where, model, metric, beta, eps, kl_threshold, informative_threshold, ratio_floor
    )
    x = check_data(where, x)
    _check_method(where, method)
    chunk = check_count(where, "chunk", chunk)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"{where}: dtype: expected a floating torch.dtype or None, got {dtype!r}")
    if dtype is not None:
        x = x.to(dtype)
    with running(vae.modules, dtype):
        mu, logvar, lat = encode_all(where, vae, x, chunk)
        decode = FlatDecoder(vae, lat)
        check_decoder(where, decode, mu, x, metric)
        sigma2 = logvar.exp()
        kl = 0.5 * (mu * mu + sigma2 - logvar - 1.0)
        kl_mean = kl.mean(0)
        inv_s2 = (1.0 / sigma2).mean(0)
        active = kl_mean >= kl_threshold

        dj_parts, gram_parts = [], []
        batches = list(zip(mu.split(chunk), logvar.split(chunk)))
        it = batches
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(batches, desc="analyse", unit="batch")
        for m, lv in it:
            dj_parts.append(dj_prime(decode, m, metric, eps=eps, method=method).detach())
            if gram and bool(active.any()):
                g = isometry_gram(decode, m, torch.exp(0.5 * lv), metric, beta).detach()
                idx = active.nonzero().flatten()
                gram_parts.append(g[:, idx][:, :, idx])
    dj = torch.cat(dj_parts)
    norm = (2.0 / beta) * sigma2 * dj  # Eq. 20: ~1 - sigma_j^2 in every active dimension
    theory = theory_stats(sigma2, norm, informative_threshold=informative_threshold, ratio_floor=ratio_floor)

    order = torch.argsort(inv_s2, descending=True)
    dims = []
    for j in order.tolist():
        dims.append(
            {
                "index": j,
                "kl": kl_mean[j].item(),
                "inv_sigma2_mean": inv_s2[j].item(),
                "dj_mean": dj[:, j].mean().item(),
                "dj_sd": dj[:, j].std(unbiased=False).item(),
                "norm_mean": norm[:, j].mean().item(),
                "norm_sd": norm[:, j].std(unbiased=False).item(),
                "active": bool(active[j]),
                **theory[j],
            }
        )
    out = {
        "n_samples": int(x.shape[0]),
        "beta": beta,
        "kl_threshold": kl_threshold,
        "informative_threshold": informative_threshold,
        "ratio_floor": ratio_floor,
        "eps": eps,
        "dj_method": method,
        "dj_dtype": str(dtype or mu.dtype).replace("torch.", ""),
        "metric": metric.name or type(metric).__name__,
        "posterior": vae.posterior,
        "latent_shape": list(lat),
        "model_mode": EVAL_NOTE,
        "dims": dims,
        "active_dims": int(active.sum()),
        "norm_active": mean_sd([d["norm_mean"] for d in dims if d["active"]]),
        **theory_summary(dims),
    }
    if len(lat) > 1:
        _spatial(out, lat, kl_mean, inv_s2, dj, norm, active)
    if gram_parts:
        G = torch.cat(gram_parts)
        k = G.shape[-1]
        eye = torch.eye(k, dtype=torch.bool, device=G.device)
        out["gram"] = {
            "diag_mean": G[:, eye].mean().item(),
            "offdiag_abs_mean": G[:, ~eye].abs().mean().item() if k > 1 else 0.0,
        }
    else:
        out["gram"] = {"diag_mean": None, "offdiag_abs_mean": None}
    return out


@torch.no_grad()
def fit_stats(model, x: Tensor, metric, *, seed: int = 0, chunk: int = 64) -> dict:
    """How well ``model`` fits the samples ``x``, in the model's dtype: the means over x of the
    distortion ``D(x, Dec(mu + sigma * noise))`` with standard normal noise as in training (drawn
    for all of x at once from a generator seeded with ``seed``, so the chunking changes nothing
    but rounding), of ``D(x, Dec(mu))``, and of the total KL ``sum_j KL_j``. Comparing training
    and held-out samples shows memorisation: a model that fits its training samples better than
    new ones of the same distribution has learnt them, not only their distribution. ``model`` and
    ``metric`` as in :func:`analyze_latents` (eval mode, the model left as it was)."""
    where = "fit_stats"
    vae = as_vae(where, model)
    x = check_data(where, x)
    metric = as_metric(where, metric)
    chunk = check_count(where, "chunk", chunk)
    with running(vae.modules):
        p = next((q for m in vae.modules for q in m.parameters()), None)
        if p is not None:
            x = x.to(p.device, p.dtype)
        mu, logvar, lat = encode_all(where, vae, x, chunk)
        decode = FlatDecoder(vae, lat)
        check_decoder(where, decode, mu, x, metric)
        noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)
        noise = noise.to(mu.device, mu.dtype)
        d_s, d_mu = [], []
        for xc, m, lv, e in zip(x.split(chunk), mu.split(chunk), logvar.split(chunk), noise.split(chunk)):
            out = decode(torch.cat([m + torch.exp(0.5 * lv) * e, m]))
            d_s.append(metric.distance(xc, out[: m.shape[0]]))
            d_mu.append(metric.distance(xc, out[m.shape[0] :]))
    kl = 0.5 * (mu * mu + logvar.exp() - logvar - 1.0)
    return {
        "n_samples": int(x.shape[0]),
        "distortion_sampled": torch.cat(d_s).double().mean().item(),
        "distortion_mu": torch.cat(d_mu).double().mean().item(),
        "kl_total": kl.double().sum(1).mean().item(),
    }
