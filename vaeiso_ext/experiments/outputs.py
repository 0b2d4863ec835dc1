"""Writing a run's outputs: atomic files, JSON-safe results, number formatting, markdown tables,
and the matplotlib set-up every figure uses (a title naming the run, PNG written atomically)."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile

from .runs import plural, trained_text


def write_atomic(path: str, data: str | bytes) -> None:
    """Write ``path`` through a temporary file in the same folder and a rename: a reader never
    sees half a file, and a failure leaves the old one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def clean(obj):
    """JSON-safe copy: NaN/inf -> None, tensors -> lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):
        return clean(obj.tolist())
    return obj


def results_json(results: dict) -> str:
    """results.json's text (without the per-sample arrays kept for the figures)."""
    return json.dumps(clean({k: v for k, v in results.items() if k != "samples"}), indent=2) + "\n"


def fmt(v, spec=".3f"):
    """A table cell: ``-`` for missing or non-finite values, 3 significant digits for large or
    tiny ones."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if abs(v) >= 1000 or (0 < abs(v) < 1e-3):
        return f"{v:.3g}"
    return format(v, spec)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def training_line(results: dict) -> str:
    """One sentence on what was actually trained (from ``results["training"]``)."""
    t = results.get("training") or {}
    return trained_text(t) if "steps" in t else "training: unknown"


def run_title(results: dict, what: str) -> str:
    """``<what>: <experiment> <data>, <loss>, lambda = L, S steps (E epochs)``: every figure's
    title, so that a PNG names its run on its own."""
    cfg = results.get("config", {})
    t = results.get("training") or {}
    ep = t.get("epochs_done")
    # a stream of fresh samples has no epochs to speak of (its "epoch" is a reseeding period)
    ep_s = "" if ep is None or t.get("fresh_samples") else f" ({plural(ep, 'epoch')})"
    parts = [results.get("experiment", "?")]
    if cfg.get("dataset"):
        parts.append(cfg["dataset"])
    head = " ".join(parts)
    loss = results.get("loss_name", cfg.get("loss", "?"))
    obj = ", decomposed" if cfg.get("decomposed") else ""
    return (
        f"{what}: {head}, {loss}{obj}, lambda = {float(cfg.get('lam', float('nan'))):g}, "
        f"{t.get('steps', 0):,} steps{ep_s}"
    )


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(fig, path: str, dpi: int = 80) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt().close(fig)
    write_atomic(path, buf.getvalue())


def inv_sigma2_axis(ax, values) -> None:
    """E[sigma^-2] on ``ax``: a log axis with plain-number ticks (1, 2, 5 x 10^k) when the values
    span more than a decade, a linear one otherwise (a log axis over flat data has no ticks)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    vals = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if vals and max(vals) / min(vals) > 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))


def shade_dims(ax, xs, dims: list[dict], results: dict) -> None:
    """Grey backgrounds behind the dims the theory does not speak about: darker for dims inactive
    by KL, lighter for active ones that are not informative (E[sigma^-2] below the threshold;
    results written before that rule lack it). Each kind is labelled once, for the legend."""
    kt, t = results.get("kl_threshold", 0.1), results.get("informative_threshold")
    seen = set()
    for x, d in zip(xs, dims):
        if not d["active"]:
            kind = ("0.8", f"inactive (mean KL < {kt})")
        elif d.get("informative") is False:
            kind = ("0.92", f"active, not informative (E[sigma^-2] < {t:g})")
        else:
            continue
        ax.axvspan(x - 0.5, x + 0.5, color=kind[0], lw=0, label=None if kind in seen else kind[1])
        seen.add(kind)


def dims_panel(ax, results: dict):
    """Figs. 4-5 style on ``ax``, one column per latent in the order of ``results["dims"]``
    (descending E[sigma^-2]) labelled with its index: the norm (2/beta) sigma_j^2 D'_j (mean +-
    SD) and the mean of 1 - sigma_j^2 beside it (the norm at the sigma optimum) on ``ax``, with
    :func:`shade_dims`' backgrounds; E[sigma^-2] and the informative threshold on a twin axis,
    which is returned (for the legend)."""
    dims = results["dims"]
    k = list(range(len(dims)))
    ax.errorbar(
        k,
        [d["norm_mean"] for d in dims],
        yerr=[d["norm_sd"] for d in dims],
        fmt="o",
        ms=3,
        color="tab:blue",
        label="norm (2/beta) sigma_j^2 D'_j: mean +- SD",
    )
    om = [d.get("one_minus_sigma2_mean") for d in dims]
    if any(v is not None for v in om):
        ax.plot(
            k,
            [math.nan if v is None else v for v in om],
            "_",
            ms=10,
            mew=2,
            color="tab:green",
            label="1 - sigma_j^2 (mean over x): the norm at the sigma optimum",
        )
    ax.axhline(1.0, color="gray", lw=0.8, ls="--", label="norm = 1 (isometric)")
    shade_dims(ax, k, dims, results)
    ax.set_xlabel("latent dim (index as in the table), by descending E[sigma^-2]", fontsize=8)
    ax.set_ylabel("norm, 1 - sigma^2 (no unit)")
    ax.set_xticks(k, [str(d["index"]) for d in dims], fontsize=6 if len(dims) > 40 else 7)
    ax.set_xlim(-0.5, len(dims) - 0.5)
    ax2 = ax.twinx()
    inv = [d["inv_sigma2_mean"] for d in dims]
    ax2.plot(k, inv, "s", color="tab:red", ms=3, label="E[sigma^-2]")
    t = results.get("informative_threshold")
    if t is not None:
        ax2.axhline(t, color="tab:red", lw=0.8, ls=":", label=f"informative: E[sigma^-2] >= {t:g}")
    inv_sigma2_axis(ax2, inv + ([t] if t is not None else []))
    ax2.set_ylabel("E[sigma^-2] (1 / latent variance)", color="tab:red")
    return ax2


def legend_below(fig, *axes, ncol: int = 3) -> None:
    """One legend for the artists of ``axes``, below the figure (inside it would cover points)."""
    handles, labels = [], []
    for a in axes:
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol)


def mean_sd_text(ms: dict | None) -> str:
    """``{"mean", "sd"}`` as "M (SD S)", or "n/a" when missing."""
    if not ms or ms.get("mean") is None:
        return "n/a"
    return f"{ms['mean']:.3f} (SD {ms['sd']:.3f})"


def rule_lines(results: dict) -> list[str]:
    """The two rules for the dims the theory speaks about, with their counts and norm means. A
    dim active by KL alone may hold sigma^2 ~ 1, and its norm is then ~0 (its 1 - sigma^2)."""
    n = len(results["dims"])
    act = results.get("active_dims", results.get("n_active"))
    lines = [
        f"active (KL): mean KL >= {results['kl_threshold']} nats: {act} of {n} dims; "
        f"norm mean over them {mean_sd_text(results.get('norm_active'))}"
    ]
    if "informative_dims" in results:
        t = results["informative_threshold"]
        lines.append(
            f"informative (E[sigma^-2] >= {t:g}): {results['informative_dims']} of {n} dims; norm mean "
            f"over them {mean_sd_text(results['norm_informative'])}, norm / (1 - sigma^2) "
            f"{mean_sd_text(results['norm_ratio_informative'])}"
        )
        lines.append(
            "(theory: the norm (2/beta) sigma_j^2 D'_j equals 1 - sigma_j^2 at the sigma optimum, "
            "about 1 only where sigma_j^2 << 1; norm / (1 - sigma^2) is the mean of the per-sample "
            f"ratio over the samples with 1 - sigma^2 >= {results['ratio_floor']:g})"
        )
    return lines
