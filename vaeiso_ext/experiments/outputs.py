"""Writing a run's outputs: atomic files, JSON-safe results, number formatting, markdown tables,
and the matplotlib set-up every figure uses (a title naming the run, PNG written atomically)."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile

from .base import trained_text


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
    ep_s = "" if ep is None else f" ({ep:g} epochs)" if float(ep).is_integer() else f" ({ep:.2f} epochs)"
    parts = [results.get("experiment", "?")]
    if cfg.get("dataset"):
        parts.append(cfg["dataset"])
    head = " ".join(parts)
    loss = results.get("loss_name", cfg.get("loss", "?"))
    obj = ", decomposed" if cfg.get("decomposed") else ""
    return (f"{what}: {head}, {loss}{obj}, lambda = {float(cfg.get('lam', float('nan'))):g}, "
            f"{t.get('steps', 0):,} steps{ep_s}")


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
