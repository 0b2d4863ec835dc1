"""Two runs side by side, like the paper's Figs. 4-5: per latent dim by descending E[sigma^-2], the
norm (2/beta) sigma_j^2 D'_j (mean +- SD) with 1 - sigma_j^2 beside it and E[sigma^-2] on a log
axis, non-informative dims shaded; each panel titled with its run's configuration and its norm
means over the active and the informative dims.

    python scripts/image_runs_figure.py CONVENTIONAL DECOMPOSED OUT.png

CONVENTIONAL and DECOMPOSED: a run's results.json, or the folder holding it (any experiment
written by ``reproduce images`` or ``reproduce digits``)."""

import json
import os
import sys

from vaeiso_ext.experiments.outputs import dims_panel, legend_below, mean_sd_text, plt, run_title, save_figure


def load(path: str) -> dict:
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {path}: cannot read a results.json ({e})") from None
    if not isinstance(res, dict) or not res.get("dims"):
        raise SystemExit(f"error: {path}: not a run's results.json (no per-dim results)")
    return res


def subtitle(res: dict) -> str:
    lines = [
        f"active (mean KL >= {res['kl_threshold']}): {res['active_dims']} dims, norm "
        f"{mean_sd_text(res.get('norm_active'))}"
    ]
    if "informative_dims" in res:
        lines.append(
            f"informative (E[sigma^-2] >= {res['informative_threshold']:g}): {res['informative_dims']} "
            f"dims, norm {mean_sd_text(res['norm_informative'])}, norm / (1 - sigma^2) "
            f"{mean_sd_text(res['norm_ratio_informative'])}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("error: usage: python scripts/image_runs_figure.py CONVENTIONAL DECOMPOSED OUT.png", file=sys.stderr)
        return 2
    runs = [load(argv[0]), load(argv[1])]
    n = max(len(r["dims"]) for r in runs)
    fig, axes = plt().subplots(1, 2, figsize=(2 * max(7.0, 0.22 * n + 2.5), 4.0))
    for ax, res, name in zip(axes, runs, ("conventional", "decomposed")):
        ax2 = dims_panel(ax, res)
        objective = "decomposed" if res.get("config", {}).get("decomposed") else "conventional"
        if objective != name:  # the caller swapped them: say so rather than mislabel
            name = f"{objective} (given as {name})"
        ax.set_title(run_title(res, name) + f"; {res['n_samples']} held-out samples\n" + subtitle(res), fontsize=7)
    legend_below(fig, axes[0], ax2, ncol=3)
    fig.tight_layout()
    save_figure(fig, argv[2])
    print(f"wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
