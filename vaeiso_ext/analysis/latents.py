"""The per-latent analysis of docs/ops.md, "The analysis" for any VAE and metric (no true density needed): KL,
E[sigma^-2] (PCA-like importance), active dimensions, D'_j, the implicit-isometry norm and the
isometry Gram. Used for the image and digit models; the toy analysis adds the density side."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from .derivatives import dj_prime, isometry_gram


@torch.no_grad()
def _encode(model, x: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    parts = [model.encode(c) for c in x.split(chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def analyze_latents(model, x: Tensor, metric, beta: float, *, kl_threshold: float = 0.1,
                    eps: float = 1e-3, method: str = "forward", gram: bool = True,
                    chunk: int = 64, progress: bool = False,
                    dtype: torch.dtype | None = torch.float64) -> dict:
    """Per-dimension statistics of a trained VAE on held-out data ``x``.

    Returns a dict with ``dims`` (one entry per latent, ordered by descending E[sigma^-2]: index,
    ``kl``, ``inv_sigma2_mean``, ``dj_mean``, ``dj_sd``, ``norm_mean``, ``norm_sd``, ``active``),
    ``active_dims``, ``norm_active`` (mean and SD across active dimensions of the per-dimension
    norm means, the paper's "1.83 +- 0.13" statistic), ``gram`` (mean diagonal and mean
    |off-diagonal| of the isometry Gram over active dimensions) and the settings used.
    ``method`` picks the D'_j estimate ("forward" as the paper, "central" or "jvp").

    ``dtype``: the encoder and decoder run in this precision (a cast copy of the model). The
    default, float64, makes the results independent of how samples and decodes are batched: in
    float32 the difference ``Dec(z + eps e_j) - Dec(z)`` keeps only ~4 digits at eps = 1e-3 and
    batches of different sizes round differently (D'_j moved by up to 2e-3 relative with the chunk
    size), and the encoder's mu(x) moves by ~1e-7, which moves D'_j by ~1e-6; in float64 the same
    rounding moves D'_j by ~1e-9. ``None``
    keeps the model's dtype (faster, e.g. on a GPU without fast float64).
    """
    model.eval()
    if dtype is not None and dtype != x.dtype:
        model = copy.deepcopy(model).to(dtype).eval()  # a cast copy; the caller's model is untouched
        x = x.to(dtype)
    mu, logvar = _encode(model, x, chunk)
    decode = model.decode
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
    norm = (2.0 / beta) * sigma2 * dj  # Eq. 20: ~1 in every active dimension

    order = torch.argsort(inv_s2, descending=True)
    dims = []
    for j in order.tolist():
        dims.append({"index": j, "kl": kl_mean[j].item(), "inv_sigma2_mean": inv_s2[j].item(),
                     "dj_mean": dj[:, j].mean().item(), "dj_sd": dj[:, j].std(unbiased=False).item(),
                     "norm_mean": norm[:, j].mean().item(), "norm_sd": norm[:, j].std(unbiased=False).item(),
                     "active": bool(active[j])})
    act_means = torch.tensor([d["norm_mean"] for d in dims if d["active"]], dtype=torch.float64)
    out = {
        "n_samples": int(x.shape[0]), "beta": beta, "kl_threshold": kl_threshold, "eps": eps,
        "dj_method": method, "dj_dtype": str(dtype or mu.dtype).replace("torch.", ""),
        "dims": dims, "active_dims": int(active.sum()),
        "norm_active": {"mean": act_means.mean().item() if act_means.numel() else None,
                        "sd": act_means.std(unbiased=False).item() if act_means.numel() else None},
    }
    if gram_parts:
        G = torch.cat(gram_parts)
        k = G.shape[-1]
        eye = torch.eye(k, dtype=torch.bool, device=G.device)
        out["gram"] = {"diag_mean": G[:, eye].mean().item(),
                       "offdiag_abs_mean": G[:, ~eye].abs().mean().item() if k > 1 else 0.0}
    else:
        out["gram"] = {"diag_mean": None, "offdiag_abs_mean": None}
    return out
