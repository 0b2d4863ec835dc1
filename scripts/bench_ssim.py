"""Benchmark of the SSIM family (issue 3): fused ops against their baselines, side by side.

    python scripts/bench_ssim.py [--device cpu|cuda] [--threads 2] [--quick] [--json PATH]

Each case first checks the fused result against the float64 reference, then times both sides
with torch.utils.benchmark (median of blocked_autorange) and prints the ratio baseline / fused.
Cases (float32):
  ssim fwd+bwd      N=64, C=3, 64x64   vs pytorch_msssim.ssim and reference.ssim (autograd)
  ssim fwd          same               vs pytorch_msssim.ssim (no grad)
  ssim_pairs        N=4, K=32          vs K separate calls of the fused ssim (1 - ssim), of
                                          pytorch_msssim.ssim and of reference.ssim
  ssim_metric_gram  N=4, K=32          vs reference.ssim_metric_gram (the per-window formula,
                                          full and diagonal) and vs the same GEMM form written
                                          in eager PyTorch (conv2d filters + bmm)

ssim_pairs against K calls of the fused ssim is bounded by the filter count: ssim filters five
maps per pair (x, d, x^2, d^2, x d), ssim_pairs three (d, d^2, x d), the base's two once; so
about 5/3 at best. Against K calls of pytorch_msssim or the reference it is the full gain.
"""

import argparse
import json
import sys

import torch
import torch.utils.benchmark as benchmark

import vaeiso_ext
from vaeiso_ext import ops
from vaeiso_ext import reference as ref
from vaeiso_ext.ops._ssim import one_minus_ssim

try:
    from pytorch_msssim import ssim as ms_ssim
except ImportError:  # a peer library: optional
    ms_ssim = None


def median_s(fn, min_run_time):
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def check(name, ours, expected, rtol, atol):
    err = (ours.double() - expected.double()).abs()
    bound = atol + rtol * expected.double().abs()
    ok = bool((err <= bound).all())
    print(f"  check {name:38s} max abs err {err.max().item():.2e}  {'ok' if ok else 'FAILED'}")
    if not ok:
        raise SystemExit(f"{name}: result differs from the reference; not timing it")


def images(n, c, h, w, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x.to(device), y.to(device)


def gram_gemm_eager(x, v, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0):
    """The GEMM form of DESIGN.md in plain PyTorch ("valid" padding): the fair baseline."""
    f = lambda t: ref.window_filter(t, window_size, sigma)  # noqa: E731
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    N, K = v.shape[:2]
    mu_x = f(x)
    b = 1 / (2 * (f(x * x) - mu_x**2).clamp(min=0) + c2)
    ab = (1 / (2 * mu_x**2 + c1) - b).unsqueeze(1)
    pad = window_size - 1  # the adjoint of a "valid" filter: a full convolution
    w = ref.gaussian_window(window_size, sigma, x.dtype, x.device)
    c = torch.nn.functional.conv2d(b.reshape(-1, 1, *b.shape[-2:]), w.flip(0).view(1, 1, 1, -1), padding=(0, pad))
    c = torch.nn.functional.conv2d(c, w.flip(0).view(1, 1, -1, 1), padding=(pad, 0)).reshape(x.shape).unsqueeze(1)
    mu_v = f(v)
    G = torch.bmm((mu_v * ab).reshape(N, K, -1), mu_v.reshape(N, K, -1).transpose(1, 2))
    G = G + torch.bmm((v * c).reshape(N, K, -1), v.reshape(N, K, -1).transpose(1, 2))
    return G / (mu_x[0].numel())


def fwd_bwd(fn, x, y):
    def run():
        a, b = x.detach().requires_grad_(), y.detach().requires_grad_()
        fn(a, b).sum().backward()
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--quick", action="store_true", help="shorter timing runs")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = args.device
    mrt = 0.3 if args.quick else 1.0
    rows = []

    def report(case, base_name, base_fn, fused_fn):
        tb, tf = median_s(base_fn, mrt), median_s(fused_fn, mrt)
        rows.append(dict(case=case, baseline=base_name, baseline_ms=tb * 1e3, fused_ms=tf * 1e3, speedup=tb / tf))
        print(f"  {case:22s} {base_name:34s} {tb * 1e3:9.3f} ms   fused {tf * 1e3:9.3f} ms   x{tb / tf:6.2f}")

    print(f"vaeiso_ext {vaeiso_ext.__version__}, torch {torch.__version__}, device {dev}, "
          f"{torch.get_num_threads()} threads, float32")

    # ---- ssim forward+backward
    x, y = images(64, 3, 64, 64, dev)
    check("ssim vs reference (float64)", ops.ssim(x, y), ref.ssim(x.double(), y.double()), 0, 1e-5)
    xa, ya = x.detach().requires_grad_(), y.detach().requires_grad_()
    ops.ssim(xa, ya).sum().backward()
    xr, yr = x.double().requires_grad_(), y.double().requires_grad_()
    ref.ssim(xr, yr).sum().backward()
    check("ssim grad x vs reference", xa.grad, xr.grad, 0, 1e-4 * xr.grad.abs().max().item())
    if ms_ssim is not None:
        msf = lambda a, b: ms_ssim(a, b, data_range=1, size_average=False)  # noqa: E731
        check("ssim vs pytorch_msssim", ops.ssim(x, y), msf(x, y), 0, 1e-5)
        report("ssim fwd+bwd", "pytorch_msssim", fwd_bwd(msf, x, y), fwd_bwd(ops.ssim, x, y))
    report("ssim fwd+bwd", "reference (eager)", fwd_bwd(ref.ssim, x, y), fwd_bwd(ops.ssim, x, y))
    if ms_ssim is not None:
        with torch.no_grad():
            report("ssim fwd", "pytorch_msssim", lambda: msf(x, y), lambda: ops.ssim(x, y))

    # ---- ssim_pairs
    N, K = 4, 32
    base, _ = images(N, 3, 64, 64, dev, seed=1)
    g = torch.Generator().manual_seed(2)
    others = base.unsqueeze(1) + 1e-3 * torch.randn((N, K, 3, 64, 64), generator=g).to(dev)
    expected = ref.ssim_pairs(base.double(), others.double())
    check("ssim_pairs vs reference (float64)", ops.ssim_pairs(base, others), expected, 1e-3, 0)
    with torch.no_grad():
        fused = lambda: ops.ssim_pairs(base, others)  # noqa: E731
        report(f"ssim_pairs K={K}", "K x fused 1 - ssim (loss form)",
               lambda: [one_minus_ssim(base, others[:, k]) for k in range(K)], fused)
        report(f"ssim_pairs K={K}", "K x fused ssim",
               lambda: [ops.ssim(base, others[:, k]) for k in range(K)], fused)
        if ms_ssim is not None:
            report(f"ssim_pairs K={K}", "K x pytorch_msssim",
                   lambda: [ms_ssim(base, others[:, k], data_range=1, size_average=False) for k in range(K)], fused)
        report(f"ssim_pairs K={K}", "K x reference.ssim",
               lambda: [ref.ssim(base, others[:, k]) for k in range(K)], fused)

    # ---- ssim_metric_gram
    v = torch.randn((N, K, 3, 64, 64), generator=g).to(dev)
    G64 = ref.ssim_metric_gram(base.double(), v.double())
    check("ssim_metric_gram vs reference (float64)", ops.ssim_metric_gram(base, v), G64, 1e-4,
          1e-5 * G64.abs().max().item())
    check("GEMM-form eager baseline", gram_gemm_eager(base, v), G64, 1e-4, 1e-5 * G64.abs().max().item())
    with torch.no_grad():
        report(f"ssim_metric_gram K={K}", "GEMM form, eager PyTorch",
               lambda: gram_gemm_eager(base, v), lambda: ops.ssim_metric_gram(base, v))
        report(f"ssim_metric_gram K={K}", "reference (eager)",
               lambda: ref.ssim_metric_gram(base, v), lambda: ops.ssim_metric_gram(base, v))
        report(f"gram diagonal K={K}", "reference (eager)",
               lambda: ref.ssim_metric_gram(base, v, diagonal=True),
               lambda: ops.ssim_metric_gram(base, v, diagonal=True))

    if args.json:
        meta = dict(device=dev, threads=torch.get_num_threads(), torch=torch.__version__,
                    build=vaeiso_ext.build_info(), command=" ".join(sys.argv))
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=2)
    return rows


if __name__ == "__main__":
    main()
