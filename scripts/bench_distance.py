"""Measure the batched D'_j machinery against the per-dimension way of the paper.

1. ``pair_distances`` (one fused call for K others) against K separate metric calls
   (``metric.distance`` per other) and the eager reference, at K = 32.
2. Batched ``analysis.dj_prime(method="forward")`` against the naive loop (one decode and one
   distance call per latent dimension), on the toy model and on the image decoder of SPEC §5.

Every pair is checked for agreement before it is timed. Times are medians from
torch.utils.benchmark (blocked_autorange, interleaved rounds; mins also reported, as a shared
machine only ever adds time); ratios from one run are the figures that count.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_distance.py --threads 2 --dtype float32 \
        [--image-n 64] [--json out.json]

On a machine whose cores are shared with other work, libgomp's default wait policy made small
two-thread torch ops stall for a scheduler slice (~16 ms) at random; OMP_WAIT_POLICY=PASSIVE
(or ACTIVE) removes that artefact and applies to both sides of every comparison.

To be folded into ``python -m vaeiso_ext.bench``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch
from torch import nn
from torch.utils import benchmark

from vaeiso_ext import metrics, ops, reference
from vaeiso_ext import nn as vnn
from vaeiso_ext.analysis import dj_prime

HAS_SSIM = all(hasattr(ops, f) for f in ("ssim", "ssim_pairs", "ssim_metric_gram"))


def timed(fns, threads, min_run_time, rounds=5):
    """Median and min seconds per call of each fn, measured in interleaved rounds.

    Each round runs blocked_autorange on every fn in turn, so slow phases of a shared machine
    hit all of them alike; the median is over all blocks of all rounds.
    """
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
            times[i] += t.blocked_autorange(min_run_time=min_run_time / rounds).times
    return [(statistics.median(ts), min(ts), len(ts)) for ts in times]


def naive_dj_prime(decoder, z, metric, eps):
    """The paper's loop: D(Dec(z), Dec(z + eps e_j)) / eps**2, one dimension at a time."""
    with torch.no_grad():
        base = decoder(z)
        cols = []
        for j in range(z.shape[1]):
            zj = z.clone()
            zj[:, j] += eps
            h = zj[:, j] - z[:, j]
            cols.append(metric.distance(base, decoder(zj)) / (h * h))
        return torch.stack(cols, 1)


def toy_decoder():
    """SPEC §5 toy decoder: FC(3,64,tanh) - FC(64,128,tanh) - FC(128,16)."""
    return nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 16))


def image_decoder(n=32):
    """SPEC §5 image decoder: FC(n,1024,softplus) - FC(1024,1024,softplus) - (64,4,4) -
    3 x ConvT(5x5, s2, 64, IGDN) - ConvT(9x9, s2, 3, IGDN): 64x64 RGB."""
    layers = [nn.Linear(n, 1024), nn.Softplus(), nn.Linear(1024, 1024), nn.Softplus(), nn.Unflatten(1, (64, 4, 4))]
    for _ in range(3):
        layers += [nn.ConvTranspose2d(64, 64, 5, stride=2, padding=2, output_padding=1), vnn.IGDN(64)]
    layers += [nn.ConvTranspose2d(64, 3, 9, stride=2, padding=4, output_padding=1), vnn.IGDN(3)]
    return nn.Sequential(*layers)


def check(name, got, want, rtol):
    err = ((got.double() - want.double()).abs() / want.double().abs().clamp_min(1e-30)).max().item()
    if not err <= rtol:
        raise SystemExit(f"{name}: results disagree (max rel err {err:.3g} > {rtol})")
    return err


def bench_pairs(args, dtype, device):
    rows = []
    g = torch.Generator().manual_seed(0)
    K = args.K
    shapes = {"toy (N=4096, 16)": (4096, (16,)), f"image (N={args.pairs_n}, 3x64x64)": (args.pairs_n, (3, 64, 64))}
    mets = [metrics.SSE(), metrics.DownwardConvex(), metrics.BCE()] + ([metrics.SSIM()] if HAS_SSIM else [])
    for label, (N, shape) in shapes.items():
        base = (0.05 + 0.9 * torch.rand((N,) + shape, generator=g)).to(device, dtype)
        others = (base.unsqueeze(1) + 1e-3 * torch.randn((N, K) + shape, generator=g).to(device, dtype)).clamp(0.01, 0.99)
        for m in mets:
            if isinstance(m, metrics.SSIM) and len(shape) != 3:
                continue
            fused = lambda: m.pairs(base, others)  # noqa: E731
            loop = lambda: torch.stack([m.distance(base, others[:, k]) for k in range(K)], 1)  # noqa: E731
            err = check(f"{label} {m.name}", fused(), loop(), 1e-3 if dtype == torch.float32 else 1e-9)
            fns = [fused, loop]
            if m.name in ("sse", "bce"):
                w = m._weight(base) if isinstance(m, metrics.SSE) else None
                fns.append(lambda: reference.pair_distances(base, others, m.name, weight=w))
            res = timed(fns, args.threads, args.min_time)
            (t_f, min_f, _), (t_l, min_l, _) = res[:2]
            row = dict(bench="pairs", case=label, metric=m.name, K=K, fused_s=t_f, loop_s=t_l,
                       speedup_vs_loop=t_l / t_f, min_speedup_vs_loop=min_l / min_f, max_rel_err=err,
                       fused_min_s=min_f, loop_min_s=min_l, blocks=[r[2] for r in res])
            if len(res) == 3:
                row.update(eager_s=res[2][0], speedup_vs_eager=res[2][0] / t_f)
                # bytes moved: others once + base once
                row["GB_per_s"] = (others.numel() + base.numel()) * others.element_size() / t_f / 1e9
            rows.append(row)
            extra = f"  eager {row['eager_s']*1e3:8.2f} ms ({row['speedup_vs_eager']:.1f}x)" if "eager_s" in row else ""
            print(f"pairs  {label:28s} {m.name:8s} fused {t_f*1e3:8.2f} ms  K calls {t_l*1e3:8.2f} ms "
                  f"({t_l/t_f:.1f}x; of mins {min_l/min_f:.1f}x){extra}", flush=True)
    return rows


def bench_dj(args, dtype, device):
    rows = []
    torch.manual_seed(0)
    cases = [("toy MLP (n=3, N=4096)", toy_decoder(), 3, 4096, metrics.SSE(), 1e-3),
             ("toy MLP (n=3, N=4096)", toy_decoder(), 3, 4096, metrics.DownwardConvex(), 1e-3)]
    img_metric = metrics.SSIM() if HAS_SSIM else metrics.SSE()
    cases.append((f"image decoder (n=32, N={args.image_n}, 64x64)", image_decoder(), 32, args.image_n, img_metric, 1e-2))
    for label, dec, n, N, m, eps in cases:
        dec = dec.to(device, dtype).eval()
        z = torch.randn(N, n, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        batched = lambda: dj_prime(dec, z, m, eps=eps, method="forward", chunk_size=args.chunk_size)  # noqa: E731
        loop = lambda: naive_dj_prime(dec, z, m, eps)  # noqa: E731
        err = check(f"{label} {m.name}", batched(), loop(), 2e-3 if dtype == torch.float32 else 1e-8)
        (t_b, min_b, k_b), (t_l, min_l, k_l) = timed([batched, loop], args.threads, args.min_time)
        rows.append(dict(bench="dj_prime", case=label, metric=m.name, eps=eps, batched_s=t_b, loop_s=t_l,
                         speedup=t_l / t_b, min_speedup=min_l / min_b, batched_min_s=min_b, loop_min_s=min_l,
                         max_rel_err=err, blocks=[k_b, k_l]))
        print(f"dj'    {label:40s} {m.name:8s} batched {t_b*1e3:9.1f} ms  loop {t_l*1e3:9.1f} ms  "
              f"({t_l/t_b:.2f}x; of mins {min_l/min_b:.2f}x)", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--K", type=int, default=32)
    p.add_argument("--pairs-n", type=int, default=64, help="N of the image-shaped pair_distances case")
    p.add_argument("--image-n", type=int, default=8, help="N of the image-decoder dj_prime case (the issue's: 64)")
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per timed measurement")
    p.add_argument("--skip", choices=["pairs", "dj"], action="append", default=[])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {args.device}, {args.threads} threads, {args.dtype}, "
          f"SSIM ops {'present' if HAS_SSIM else 'absent (image dj_prime uses sse)'}", flush=True)
    rows = []
    if "pairs" not in args.skip:
        rows += bench_pairs(args, dtype, args.device)
    if "dj" not in args.skip:
        rows += bench_dj(args, dtype, args.device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(config=vars(args), torch=torch.__version__, machine=platform.machine(),
                           processor=platform.processor(), results=rows), f, indent=1)


if __name__ == "__main__":
    main()
