"""Local against effective implicit-isometry norms of a trained run, on training and held-out samples.

    python scripts/effective_norms.py RUN_DIR [RUN_DIR ...] [--n 180] [--draws 64] [--json OUT]

The analysis' norm (2/beta) sigma_j^2 D'_j uses the local D'_j, the curvature of D at z = mu(x).
What the training objective balances against the KL term is the noise-averaged derivative

    g_j = d/d(sigma_j^2) E_eps[D(x, Dec(mu + sigma * eps))]

(conventional objective), and at the optimum of sigma_j the identity (2/beta) sigma_j^2 g_j =
1 - sigma_j^2 holds exactly. When the decoder is close to quadratic over a few sigma around mu,
g_j ~ D'_j and the two norms agree; when it is not (e.g. a decoder that has memorised its
training samples), the local norm leaves 1 - sigma^2 while the effective one stays on it on the
samples the model was trained on. This script prints both, per dim with E[sigma^-2] > 10 (float64,
g_j by autograd over ``--draws`` noise draws, D'_j by forward differences as the analysis does).
Runs of the digits and images experiments (conventional objective).
"""

from __future__ import annotations

import argparse
import json

import torch

from vaeiso_ext.analysis.derivatives import dj_prime
from vaeiso_ext.experiments import experiments
from vaeiso_ext.experiments.runs import read_run
from vaeiso_ext.models import build_model


def effective_norms(model, x, metric, beta: float, draws: int, seed: int = 0) -> dict:
    """Per-dim means of the local and effective norms and of 1 - sigma^2, with E[sigma^-2]."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mu, logvar = model.encode(x)
    s2 = logvar.exp().clone().requires_grad_(True)
    eps = torch.randn(draws, *mu.shape, generator=gen, dtype=mu.dtype)
    z = (mu + s2.sqrt() * eps).reshape(-1, mu.shape[1])
    base = x.unsqueeze(0).expand(draws, *x.shape).reshape(-1, *x.shape[1:])
    d = metric.distance(base, model.decode(z)).view(draws, -1).mean(0)
    (g,) = torch.autograd.grad(d.sum(), s2)
    with torch.no_grad():
        dj = dj_prime(model.decode, mu, metric, eps=1e-3)
    s2 = s2.detach()
    return {
        "inv_sigma2": (1 / s2).mean(0),
        "local": ((2 / beta) * s2 * dj).mean(0),
        "effective": ((2 / beta) * s2 * g).mean(0),
        "one_minus_sigma2": (1 - s2).mean(0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders written by `python -m vaeiso_ext reproduce`")
    p.add_argument("--n", type=int, default=180, help="samples of each split (default 180)")
    p.add_argument("--draws", type=int, default=64, help="noise draws per sample (default 64)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the numbers here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = {}
    for run in a.runs:
        ck, name, desc = read_run(run)
        exp = experiments()[name]
        cfg = exp.config_cls.from_dict(desc)
        if cfg.decomposed:
            raise SystemExit(f"{run}: a decomposed run; this script checks the conventional objective")
        data = exp.load_data(cfg, False)
        model = build_model(ck["model_config"])
        model.load_state_dict(ck["model"])
        model = model.double().eval()
        x_train = data.train.fixed(a.n, seed=cfg.seed + 20_000) if hasattr(data.train, "fixed") else data.train[: a.n]
        res = {}
        for split, x in (("train", x_train), ("held_out", data.test[: a.n])):
            r = effective_norms(model, x.double(), exp.metric(cfg), exp.beta(cfg), a.draws)
            keep = r["inv_sigma2"] > 10
            res[split] = {
                "dims": keep.nonzero().flatten().tolist(),
                **{k: [round(v, 4) for v in r[k][keep].tolist()] for k in r},
                **{f"{k}_mean": r[k][keep].mean().item() for k in ("local", "effective", "one_minus_sigma2")},
            }
            print(
                f"{run} {split:8s} dims with E[sigma^-2] > 10: {int(keep.sum())}; norm mean: local "
                f"{res[split]['local_mean']:.3f}, effective {res[split]['effective_mean']:.3f}; "
                f"1 - sigma^2 {res[split]['one_minus_sigma2_mean']:.3f}"
            )
        out[run] = res
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
