"""Every quantity of docs/ops.md, "The analysis" for a trained VAE: per-dimension KL, E[sigma^-2] (PCA-like
importance), D'_j and the implicit-isometry norm, the isometry Gram, the data-probability
estimates (Eq. 22-23) against the true density, and rate / distortion beside the theory."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..metrics import as_metric
from .derivatives import dj_prime, isometry_gram
from .latents import INFORMATIVE_THRESHOLD, RATIO_FLOOR, check_analysis_args, mean_sd, theory_stats, theory_summary
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

LOG_2PI = math.log(2.0 * math.pi)


def _kl(mu: Tensor, logvar: Tensor) -> Tensor:
    return 0.5 * (mu * mu + logvar.exp() - logvar - 1.0)


def _active(kl_mean: Tensor, threshold: float) -> Tensor:
    return kl_mean >= threshold


def density_note(metric) -> str | None:
    """Why the Eq. 22-23 estimates that need ``a_x`` are not available for ``metric`` (None when
    they are): they need a metric tensor that is a scalar multiple of the identity."""
    if metric.isotropic:
        return None
    why = {
        "bce": "G_x = diag(1 / (2 x (1 - x))) differs per component",
        "ssim": "G_x couples the pixels of each window",
    }.get(metric.name, "its metric tensor is not a_x I")
    return (
        f"the Eq. 22-23 estimates scaled by a_x need G_x = a_x I (metrics sse, downward, upward); "
        f"{type(metric).__name__} has no scalar metric tensor ({why})"
    )


def _loss_estimate(decode, x: Tensor, metric, beta: float, mu: Tensor, logvar: Tensor) -> Tensor:
    """L_x = E_q[D] + beta KL with E_q[D] ~ (D(x, Dec(mu + sigma)) + D(x, Dec(mu - sigma))) / 2
    (App. C.2) -> (N,)."""
    sigma = torch.exp(0.5 * logvar)
    n = x.shape[0]
    out = decode(torch.cat([mu + sigma, mu - sigma]))
    ed = 0.5 * (metric.distance(x, out[:n]) + metric.distance(x, out[n:]))
    return ed + beta * _kl(mu, logvar).sum(1)


@torch.no_grad()
def log_density(
    model,
    x: Tensor,
    metric,
    beta: float,
    *,
    method: str = "posterior",
    n_active: int | None = None,
    kl_threshold: float = 0.1,
) -> Tensor:
    """log of the Eq. 23 estimate of p(x), up to an additive constant -> (N,) float64.

    ``method="posterior"``: ``(n/2) log a_x + log p(mu(x)) + sum_j log sigma_j(x)``;
    ``method="elbo"``: ``(n/2) log a_x - L_x / beta``. ``a_x`` is ``metric.scale(x)`` (G_x = a_x I;
    1 for square error): only the metrics with such a scalar metric tensor (``sse``,
    ``downward``, ``upward``) are supported; BCE and SSIM are refused with the reason. ``n`` the
    number of active dims: ``n_active`` if given, else those with
    mean KL >= ``kl_threshold`` over this ``x`` (pass ``n_active`` for single samples).
    ``model`` and ``metric`` as in :func:`vaeiso_ext.analysis.analyze_latents`; the model runs in
    float64 and eval mode and is left as it was.
    """
    where = "log_density"
    vae = as_vae(where, model)
    x = check_data(where, x)
    metric = as_metric(where, metric)
    beta = check_positive(where, "beta", beta)
    check_threshold(where, kl_threshold)
    if method not in ("posterior", "elbo"):
        raise ValueError(f"{where}: method: expected 'posterior' or 'elbo', got {method!r}")
    if n_active is not None:
        check_count(where, "n_active", n_active, low=0)
    note = density_note(metric)
    if note is not None:
        raise ValueError(f"{where}: metric: {note}")
    x = x.to(torch.float64)
    with running(vae.modules, torch.float64):
        mu, logvar, lat = encode_all(where, vae, x, 8192)
        decode = FlatDecoder(vae, lat)
        check_decoder(where, decode, mu, x, metric)
        if n_active is None:
            n_active = int(_active(_kl(mu, logvar).mean(0), kl_threshold).sum())
        log_a = torch.log(metric.scale(x))
        if method == "posterior":
            est = (-0.5 * mu * mu - 0.5 * LOG_2PI).sum(1) + 0.5 * logvar.sum(1)
        else:
            est = -_loss_estimate(decode, x, metric, beta, mu, logvar) / beta
    return 0.5 * n_active * log_a + est


def _pearson(a: Tensor, b: Tensor) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = torch.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _ranks(a: Tensor) -> Tensor:
    r = torch.empty_like(a)
    r[a.argsort()] = torch.arange(a.numel(), dtype=a.dtype)
    return r


def correlation(log_est: Tensor, log_true: Tensor) -> dict:
    """Pearson R on linear probabilities (each exponentiated after subtracting its max: Pearson
    does not see the scale) and Spearman R (ranks; the same in log or linear space)."""
    ok = torch.isfinite(log_est) & torch.isfinite(log_true)
    e, t = log_est[ok], log_true[ok]
    return {
        "pearson": _pearson(torch.exp(e - e.max()), torch.exp(t - t.max())),
        "spearman": _pearson(_ranks(e), _ranks(t)),
    }


def _mean_sd(v: Tensor) -> tuple[Tensor, Tensor]:
    return v.mean(0), v.std(0, unbiased=False)


@torch.no_grad()
def analyze(
    model,
    data,
    metric,
    beta: float,
    *,
    kl_threshold: float = 0.1,
    eps: float = 1e-3,
    informative_threshold: float = INFORMATIVE_THRESHOLD,
    ratio_floor: float = RATIO_FLOOR,
    n_samples: int | None = None,
    mc_samples: int = 8,
    seed: int = 0,
    chunk_size: int | None = 65536,
    keep_samples: bool = False,
) -> dict:
    """Analyse ``model`` on held-out data; returns the results dict (the schema of results.json).

    ``data``: a :class:`vaeiso_ext.data.ToyData` (its held-out ``x_test``, exact ``logp_test``,
    true variances and entropy are used) or a plain (N, D) tensor (then the density correlations
    and the data-dependent theory values are omitted). ``metric`` (an object or its name) and
    ``beta`` are those of training; ``model`` as in
    :func:`vaeiso_ext.analysis.analyze_latents`. Computations run in float64, the model in eval
    mode; it is left as it was (``model_mode``). The Eq. 22-23 estimates scaled by ``a_x`` need
    ``G_x = a_x I`` (sse, downward, upward): for other metrics (BCE, SSIM) they are left out and
    ``density_note`` says why. ``keep_samples`` adds the
    per-sample arrays (for the scatter plots) under ``"samples"``.

    Besides the KL rule (``active``), a dim is *informative* when E[sigma^-2] >=
    ``informative_threshold``; each dim also carries the mean of 1 - sigma_j^2 (the norm's value
    at the sigma optimum) and the ratio norm / (1 - sigma_j^2), as
    :func:`vaeiso_ext.analysis.latents.theory_stats` defines them (``ratio_floor`` there), and
    the results ``norm_active``, ``informative_dims``, ``norm_informative`` and
    ``norm_ratio_informative`` (all from the forward-difference norm).
    """
    where = "analyze"
    vae, metric, beta, eps = check_analysis_args(
        where, model, metric, beta, eps, kl_threshold, informative_threshold, ratio_floor
    )
    mc_samples = check_count(where, "mc_samples", mc_samples)
    if n_samples is not None:
        check_count(where, "n_samples", n_samples)
    toy = hasattr(data, "x_test")
    x = check_data(where, data.x_test if toy else data).to(torch.float64)
    logp_true = data.logp_test if toy else None
    if n_samples is not None:
        x = x[:n_samples]
        logp_true = None if logp_true is None else logp_true[:n_samples]
    with running(vae.modules, torch.float64):
        return _analyze(
            where,
            vae,
            x,
            logp_true,
            data if toy else None,
            metric,
            beta,
            kl_threshold=kl_threshold,
            eps=eps,
            informative_threshold=informative_threshold,
            ratio_floor=ratio_floor,
            mc_samples=mc_samples,
            seed=seed,
            chunk_size=chunk_size,
            keep_samples=keep_samples,
        )


def _analyze(
    where,
    vae,
    x,
    logp_true,
    toy,
    metric,
    beta,
    *,
    kl_threshold,
    eps,
    informative_threshold,
    ratio_floor,
    mc_samples,
    seed,
    chunk_size,
    keep_samples,
) -> dict:
    N = x.shape[0]
    mu, logvar, lat = encode_all(where, vae, x, 8192)
    decode = FlatDecoder(vae, lat)
    check_decoder(where, decode, mu, x, metric)
    n_lat = mu.shape[1]
    sigma2 = logvar.exp()
    sigma = sigma2.sqrt()
    kl = _kl(mu, logvar)
    kl_mean = kl.mean(0)
    active = _active(kl_mean, kl_threshold)
    n_act = int(active.sum())
    inv_s2 = (1.0 / sigma2).mean(0)

    # D'_j (paper's forward difference, and the exact jvp limit) and the isometry norm
    dj_f = dj_prime(decode, mu, metric, eps=eps, method="forward", chunk_size=chunk_size)
    with torch.enable_grad():
        dj_j = dj_prime(decode, mu, metric, eps=eps, method="jvp", chunk_size=chunk_size)
        gram = isometry_gram(decode, mu, sigma, metric, beta)
    norm_f = (2.0 / beta) * sigma2 * dj_f
    norm_j = (2.0 / beta) * sigma2 * dj_j
    dj_mean, dj_sd = _mean_sd(dj_f)
    nf_mean, nf_sd = _mean_sd(norm_f)
    nj_mean, nj_sd = _mean_sd(norm_j)
    gram_mean = gram.mean(0)
    theory = theory_stats(sigma2, norm_f, informative_threshold=informative_threshold, ratio_floor=ratio_floor)

    order = torch.argsort(inv_s2, descending=True).tolist()
    act_vals = inv_s2[active]
    smallest = float(act_vals.min()) if n_act else float("nan")
    dims = []
    for rank, j in enumerate(order):
        dims.append(
            {
                "index": j,
                "rank": rank,
                "active": bool(active[j]),
                "kl": float(kl_mean[j]),
                "inv_sigma2_mean": float(inv_s2[j]),
                "inv_sigma2_ratio": float(inv_s2[j]) / smallest,
                "var_estimate": 0.5 * beta * float(inv_s2[j]),
                "dj_mean": float(dj_mean[j]),
                "dj_sd": float(dj_sd[j]),
                "norm_mean": float(nf_mean[j]),
                "norm_sd": float(nf_sd[j]),
                "dj_jvp_mean": float(dj_j[:, j].mean()),
                "norm_jvp_mean": float(nj_mean[j]),
                "norm_jvp_sd": float(nj_sd[j]),
                "gram_diag_mean": float(gram_mean[j, j]),
                **theory[j],
            }
        )

    # isometry Gram over the active dims
    ia = active.nonzero().flatten()
    g_act = gram[:, ia][:, :, ia]
    eye = torch.eye(n_act, dtype=torch.bool)
    gram_res = {
        "diag_mean": float(g_act[:, eye].mean()) if n_act else float("nan"),
        "offdiag_abs_mean": float(g_act[:, ~eye].abs().mean()) if n_act > 1 else 0.0,
        "mean_matrix": gram_mean[ia][:, ia].tolist(),
        "dims": ia.tolist(),
    }

    # data probability (Eq. 22-23); the a_x-scaled forms only where G_x = a_x I
    note = density_note(metric)
    log_a = torch.log(metric.scale(x)) if note is None else None
    L = _loss_estimate(decode, x, metric, beta, mu, logvar)
    log_pmu = (-0.5 * mu * mu - 0.5 * LOG_2PI).sum(1)
    log_prod_sigma = 0.5 * logvar.sum(1)
    est = {"p_mu": log_pmu, "exp_neg_L": -L / beta}
    if log_a is not None:
        est["scaled_p_mu_prod_sigma"] = 0.5 * n_act * log_a + log_pmu + log_prod_sigma
        est["scaled_exp_neg_L"] = 0.5 * n_act * log_a - L / beta
    est["p_mu_prod_sigma"] = log_pmu + log_prod_sigma
    correlations = {k: correlation(v, logp_true) for k, v in est.items()} if logp_true is not None else {}

    # rate and distortion (Eq. 14-15, 54; App. B)
    g = torch.Generator().manual_seed(seed)
    x_breve = decode(mu)
    coding = torch.zeros(N, dtype=torch.float64)
    total_d = torch.zeros(N, dtype=torch.float64)
    for _ in range(mc_samples):
        noise = torch.randn(mu.shape, generator=g, dtype=torch.float64)
        x_hat = decode(mu + sigma * noise)
        coding += metric.distance(x_breve, x_hat) / mc_samples
        total_d += metric.distance(x, x_hat) / mc_samples
    transform = metric.distance(x, x_breve)
    rate = kl.sum(1).mean()
    rd = {
        "coding_loss": float(coding.mean()),
        "coding_loss_theory": n_act * beta / 2.0,
        "transform_loss": float(transform.mean()),
        "transform_coding_ratio": float(transform.mean() / coding.mean()),
        "distortion": float(total_d.mean()),
        "rate": float(rate),
        "n_active": n_act,
        "beta": beta,
        "mc_samples": mc_samples,
    }
    if toy is not None:
        inv_var = [1.0 / v for v in toy.variances]
        rd["transform_loss_theory"] = (beta / 2.0) ** 2 * sum(inv_var)
        rd["transform_coding_ratio_theory"] = (beta / 2.0) * sum(inv_var) / len(inv_var)
    if toy is not None and log_a is not None:
        h_s = toy.entropy
        log_a_term = float(0.5 * n_act * log_a.mean())
        rd["entropy_s"] = h_s
        rd["entropy_y"] = h_s + log_a_term
        rd["rate_theory"] = h_s + log_a_term - 0.5 * n_act * math.log(beta * math.pi * math.e)

    res = {
        "n_samples": N,
        "n_latent": n_lat,
        "n_active": n_act,
        "kl_threshold": kl_threshold,
        "informative_threshold": informative_threshold,
        "ratio_floor": ratio_floor,
        "norm_active": mean_sd([d["norm_mean"] for d in dims if d["active"]]),
        **theory_summary(dims),
        "eps": eps,
        "beta": beta,
        "metric": type(metric).__name__,
        "latent_shape": list(lat),
        "model_mode": EVAL_NOTE,
        **({"density_note": note} if note else {}),
        "dims": dims,
        "gram": gram_res,
        "correlations": correlations,
        "rate_distortion": rd,
    }
    if keep_samples:
        res["samples"] = {"log_p_true": logp_true, **est}
    return res
