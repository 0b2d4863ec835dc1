"""The real-data experiments' outputs: the summary table with the training vs held-out fit, the
step-curve table and figure, the Fig. 4/5-like per-dim plot and the Fig. 6-like traversal grid."""

from __future__ import annotations

import math

import torch

from .outputs import (
    dims_panel,
    fmt,
    legend_below,
    md_table,
    plt,
    rule_lines,
    run_title,
    save_figure,
    training_line,
)

FIT_MEANING = (
    "A training fit clearly better than the held-out one (lower distortion) means the model "
    "has memorised its training samples; the norms measured on held-out samples then "
    "describe a decoder fitted to those samples rather than to the data's distribution."
)


def fit_lines(res: dict) -> list[str]:
    """The training vs held-out fit as table lines (none for results without it)."""
    f = res.get("fit")
    if not f:
        return []
    out = [
        f"fit at the end (training: {f['train_samples']}; held out: the {f['held_out']['n_samples']} "
        "analysed; model dtype; z = mu + sigma * noise with a fixed seed, as in training):",
        "             | D(x, x_hat), z sampled | D(x, Dec(mu)) | KL total (nats)",
    ]
    for k, name in (("train", "training"), ("held_out", "held out")):
        v = f[k]
        out.append(f" {name:11} | {v['distortion_sampled']:22.4f} | {v['distortion_mu']:13.4f} | {v['kl_total']:.2f}")
    out.append(FIT_MEANING)
    return out


def _opt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def text_summary(res: dict) -> str:
    cfg = res["config"]
    head = (
        f"{res['experiment']} ({res['loss_name']}, "
        f"{'decomposed' if cfg['decomposed'] else 'conventional'} objective), latent {cfg['latent']}, "
        f"lambda {cfg['lam']:g}, beta {res['beta']:.4g}; {training_line(res)}"
    )
    n_note = f" (of {res['n_held_out']} held out)" if res.get("n_held_out", res["n_samples"]) > res["n_samples"] else ""
    lines = [
        head,
        f"data: {res['data']}; analysed on {res['n_samples']} held-out samples{n_note}",
        *rule_lines(res),
        f"isometry Gram (active dims): mean diagonal {fmt(res['gram']['diag_mean'])}, "
        f"mean |off-diagonal| {fmt(res['gram']['offdiag_abs_mean'])}",
        "paper: " + "; ".join(f"{k}: {v}" for k, v in res["paper"].items()),
        "",
        " dim | E[sigma^-2] |   KL   | D'_j mean | norm mean (SD) | 1 - sigma^2 | norm / (1 - sigma^2) "
        "| active | informative",
        "-----|-------------|--------|-----------|----------------|-------------|----------------------"
        "|--------|------------",
    ]
    for d in res["dims"]:
        ratio = "-" if d.get("norm_ratio_mean") is None else f"{d['norm_ratio_mean']:.3f} ({d['norm_ratio_sd']:.3f})"
        inf = "-" if "informative" not in d else ("yes" if d["informative"] else "no")
        om = _opt(d.get("one_minus_sigma2_mean"), ".3f")
        lines.append(
            f" {d['index']:3d} | {d['inv_sigma2_mean']:11.2f} | {d['kl']:6.3f} | {d['dj_mean']:9.3g} | "
            f"{d['norm_mean']:6.3f} ({d['norm_sd']:.3f}) | {om:>11} | "
            f"{ratio:>20} | {'yes' if d['active'] else 'no':6} | {inf}"
        )
    lines.append(
        "(dim: the latent's index, as the figures label it; rows by descending E[sigma^-2]; "
        "norm / (1 - sigma^2): mean (SD) of the per-sample ratio, '-' where no sample has "
        "1 - sigma^2 >= the floor)"
    )
    fl = fit_lines(res)
    if fl:
        lines += [""] + fl
    if res.get("curve"):
        c = res["curve"]
        lines += [
            "",
            f"step curve (every {c['eval_every']} steps, {c['curve_samples']} held-out samples, float32 D'_j):",
            "   step | active | norm mean (SD) | informative | norm mean | KL total | D(x, Dec(mu))",
        ]
        for p in c["points"]:
            nm = "n/a" if p["norm_mean"] is None else f"{p['norm_mean']:.3f} ({p['norm_sd']:.3f})"
            lines.append(
                f" {p['step']:6d} | {p['active_dims']:6d} | {nm:>14} | {p.get('informative_dims', '-'):>11} | "
                f"{fmt(p.get('norm_informative_mean')):>9} | {p['kl_total']:8.2f} | "
                f"{p['distortion_mu']:.4f}"
            )
    return "\n".join(lines)


def curve_table(curve: dict) -> str:
    """The step curve as a markdown table."""
    rows = [
        [
            f"{p['step']:,}",
            str(p["active_dims"]),
            fmt(p["norm_mean"]),
            fmt(p["norm_sd"]),
            str(p.get("informative_dims", "-")),
            fmt(p.get("norm_informative_mean")),
            fmt(p["kl_total"], ".2f"),
            fmt(p["distortion_mu"], ".4f"),
        ]
        for p in curve["points"]
    ]
    return (
        f"Evaluated every {curve['eval_every']:,} Adam steps on {curve['curve_samples']} fixed held-out "
        "samples (D'_j in float32):\n\n"
        + md_table(
            [
                "step",
                "active dims (KL)",
                "norm mean",
                "norm SD",
                "informative dims",
                "norm mean (informative)",
                "KL total (nats)",
                "D(x, Dec(mu))",
            ],
            rows,
        )
    )


def curve_figure(res: dict, path: str) -> None:
    """Norm mean over active and over informative dims (left axis) and their numbers (right)
    against steps."""
    pts = res["curve"]["points"]
    steps = [p["step"] for p in pts]
    fig, ax = plt().subplots(figsize=(6.5, 3.4))
    ax.plot(
        steps,
        [float("nan") if p["norm_mean"] is None else p["norm_mean"] for p in pts],
        "o-",
        ms=3,
        label="norm mean over active dims (KL)",
    )
    if any("norm_informative_mean" in p for p in pts):
        ax.plot(
            steps,
            [math.nan if p.get("norm_informative_mean") is None else p["norm_informative_mean"] for p in pts],
            "^-",
            ms=3,
            color="tab:green",
            label="norm mean over informative dims",
        )
    ax.axhline(1.0, color="gray", lw=0.8, ls="--", label="norm = 1 (isometric)")
    ax.set_xlabel("Adam steps")
    ax.set_ylabel("norm mean (no unit)")
    ax2 = ax.twinx()
    ax2.plot(steps, [p["active_dims"] for p in pts], "s--", color="tab:red", ms=3, label="active dims (KL)")
    if any("informative_dims" in p for p in pts):
        ax2.plot(
            steps,
            [p.get("informative_dims", math.nan) for p in pts],
            "v:",
            color="tab:purple",
            ms=3,
            label="informative dims",
        )
    ax2.set_ylabel(f"dims (of {res['config']['latent']})", color="tab:red")
    ax2.set_ylim(bottom=0)
    legend_below(fig, ax, ax2)
    ax.set_title(run_title(res, "step curve"), fontsize=8)
    save_figure(fig, path)


def dims_figure(res: dict, path: str) -> None:
    """Fig. 4/5 style: per-dimension norm (mean +- SD) with 1 - sigma^2 beside it and E[sigma^-2],
    left to right by descending E[sigma^-2], each labelled with its latent index (the table's
    "dim"); non-informative and inactive dims shaded (:func:`.outputs.dims_panel`)."""
    fig, ax = plt().subplots(figsize=(max(6.0, 0.28 * len(res["dims"]) + 2), 3.6))
    ax2 = dims_panel(ax, res)
    legend_below(fig, ax, ax2)
    ax.set_title(run_title(res, "per-dim norm, 1 - sigma^2 and E[sigma^-2]"), fontsize=8)
    save_figure(fig, path)


TRAVERSAL = (-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2)


@torch.no_grad()
def traversal_grid(model, x0: torch.Tensor, order: list[int], values=TRAVERSAL) -> torch.Tensor:
    """Rows: latent dims in ``order``; columns: z_j set to each value, other dims at mu(x0).
    Returns an (3, rows*S, cols*S) image in [0, 1]."""
    mu, _ = model.encode(x0.unsqueeze(0))
    z = mu.repeat(len(order) * len(values), 1)
    for r, j in enumerate(order):
        z[r * len(values) : (r + 1) * len(values), j] = torch.tensor(values, dtype=z.dtype)
    imgs = model.decode(z).clamp(0, 1)
    if imgs.dim() == 2:  # flat digits
        side = int(round(math.sqrt(imgs.shape[1])))
        imgs = imgs.view(-1, 1, side, side).expand(-1, 3, -1, -1)
    R, C = len(order), len(values)
    S = imgs.shape[-1]
    return imgs.view(R, C, 3, S, S).permute(2, 0, 3, 1, 4).reshape(3, R * S, C * S)


def traversal_figure(res: dict, model, x0: torch.Tensor, path: str, values=TRAVERSAL) -> None:
    """Fig. 6-like: one row per active latent by descending E[sigma^-2], labelled with its index
    and E[sigma^-2]; columns labelled with the z value (the other latents at mu(x0))."""
    dims = [d for d in res["dims"] if d["active"]]
    note = ""
    if not dims:
        dims = res["dims"][:3]
        note = " (no active dims: the 3 with the largest E[sigma^-2])"
    grid = traversal_grid(model, x0, [d["index"] for d in dims], values)
    S = grid.shape[1] // len(dims)
    fig_w = 1.0 + 0.75 * len(values)
    fig, ax = plt().subplots(figsize=(fig_w, 0.75 * len(dims) + 1.2))
    ax.imshow(grid.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    ax.set_xticks([S * (i + 0.5) for i in range(len(values))], [f"{v:g}" for v in values], fontsize=7)
    ax.set_yticks(
        [S * (r + 0.5) for r in range(len(dims))],
        [f"z{d['index']}  E[s^-2]={d['inv_sigma2_mean']:.3g}" for d in dims],
        fontsize=7,
    )
    ax.set_xlabel("value of z_j (other latents at mu(x) of held-out sample 0)", fontsize=7)
    ax.set_ylabel("latent j, by descending E[sigma^-2]", fontsize=7)
    for r in range(1, len(dims)):  # white lines between the cells
        ax.axhline(r * S - 0.5, color="white", lw=1.5)
    for c in range(1, len(values)):
        ax.axvline(c * S - 0.5, color="white", lw=1.5)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title(run_title(res, "traversal" + note), fontsize=7, wrap=True)
    save_figure(fig, path, dpi=100)
