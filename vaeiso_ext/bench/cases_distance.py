"""Distance benchmark cases: ``pair_distances`` (through the metric objects) against K separate
metric calls and the eager reference, and the batched ``dj_prime`` against the paper's
per-dimension loop (one decode and one distance call per latent) for the toy and image decoders."""

from __future__ import annotations

import torch
from torch import nn

from .. import metrics, ops, reference
from .. import nn as vnn
from ..analysis import dj_prime
from .core import Case, assert_close, fwd_bwd


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
    """the paper's protocol, App. D toy decoder: FC(3,64,tanh) - FC(64,128,tanh) - FC(128,16)."""
    return nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 16))


def image_decoder(n=32):
    """the paper's protocol, App. D image decoder (FC-FC-reshape, 3 x ConvT+IGDN, ConvT 9x9 + IGDN): 64x64 RGB."""
    layers = [nn.Linear(n, 1024), nn.Softplus(), nn.Linear(1024, 1024), nn.Softplus(), nn.Unflatten(1, (64, 4, 4))]
    for _ in range(3):
        layers += [nn.ConvTranspose2d(64, 64, 5, stride=2, padding=2, output_padding=1), vnn.IGDN(64)]
    layers += [nn.ConvTranspose2d(64, 3, 9, stride=2, padding=4, output_padding=1), vnn.IGDN(3)]
    return nn.Sequential(*layers)


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def _pairs_cases(device, quick, compile_baselines):
    K = 8 if quick else 32
    shapes = {"toy": (512 if quick else 4096, (16,)), "image": (4 if quick else 16, (3, 64, 64))}
    g = torch.Generator().manual_seed(0)
    out = []
    for label, (N, shape) in shapes.items():
        base = (0.05 + 0.9 * torch.rand((N,) + shape, generator=g)).to(device)
        others = (base.unsqueeze(1) + 1e-3 * torch.randn((N, K) + shape, generator=g).to(device)).clamp(0.01, 0.99)
        size = f"{label} N={N} K={K} {'x'.join(map(str, shape))}"
        traffic = (others.numel() + base.numel()) * base.element_size()
        for m in (metrics.SSE(), metrics.DownwardConvex(), metrics.BCE()):
            # the reference takes a convex metric's factor as a weight, from the metric's scale()
            w = m.scale(base) if m.name == "downward" else None
            op = "sse" if isinstance(m, metrics.SSE) else "bce"

            # Every baseline computes the factor from the base inside the timed call, as the
            # fused op does (a weight computed once outside would time less work than the op).
            def ref(b, o, m=m, op=op):
                return reference.pair_distances(b, o, op, weight=m.scale(b) if m.name == "downward" else None)

            def check(m=m, base=base, others=others, w=w, op=op):
                want = reference.pair_distances(
                    base.double(), others.double(), op, weight=None if w is None else w.double()
                )
                assert_close(m.pairs(base, others), want, 1e-3, 0, f"pairs {m.name}")

            bl = {
                "K x metric calls": lambda m=m, base=base, others=others: torch.stack(
                    [m.distance(base, others[:, k]) for k in range(K)], 1
                ),
                "eager": lambda base=base, others=others, ref=ref: ref(base, others),
            }
            if compile_baselines:
                cp = torch.compile(ref, dynamic=False)
                bl["compile"] = lambda cp=cp, base=base, others=others: cp(base, others)
            out.append(
                Case(
                    f"pair_distances {m.name}",
                    size,
                    "fwd",
                    _no_grad(lambda m=m, base=base, others=others: m.pairs(base, others)),
                    {k: _no_grad(f) for k, f in bl.items()},
                    check,
                    bytes=traffic,
                )
            )

            # forward + backward w.r.t. base and others (and the weight a_x, itself a function
            # of base, for downward): the reference computes a_x from base the same way
            br, orr = base.clone().requires_grad_(), others.clone().requires_grad_()
            gy = torch.randn((N, K), generator=g).to(device)

            def check_bwd(m=m, br=br, orr=orr, gy=gy, ref=ref):
                got = fwd_bwd(m.pairs, (br, orr), gy)()
                ref_in = tuple(t.detach().double().requires_grad_() for t in (br, orr))
                want = fwd_bwd(ref, ref_in, gy.double())()
                scale = [w.abs().max().item() for w in want]
                for i, (a, b) in enumerate(zip(got, want)):
                    assert_close(a, b, 1e-3, 1e-5 * scale[i], f"pairs {m.name} grads[{i}]")

            bb = {"eager": fwd_bwd(ref, (br, orr), gy)}
            if compile_baselines:
                bb["compile"] = fwd_bwd(torch.compile(ref, dynamic=False), (br, orr), gy)
            # forward reads others and base; backward reads them again and writes their gradients
            out.append(
                Case(
                    f"pair_distances {m.name}",
                    size,
                    "fwd+bwd",
                    fwd_bwd(m.pairs, (br, orr), gy),
                    bb,
                    check_bwd,
                    bytes=3 * traffic,
                    notes="gradients to base and others",
                )
            )
    return out


def _dj_cases(device, quick):
    torch.manual_seed(0)
    out = []
    N_img = 4 if quick else 64
    cases = [
        ("toy MLP n=3", toy_decoder(), 3, 512 if quick else 4096, metrics.SSE(), 1e-3),
        (f"image decoder n=32 N={N_img}", image_decoder(), 32, N_img, metrics.SSIM(), 1e-2),
    ]
    for label, dec, n, N, m, eps in cases:
        dec = dec.to(device).eval()
        z = torch.randn(N, n, generator=torch.Generator().manual_seed(1)).to(device)

        def check(dec=dec, z=z, m=m, eps=eps, label=label):
            got = dj_prime(dec, z, m, eps=eps, method="forward")
            want = naive_dj_prime(dec, z, m, eps)
            # float32 finite differences: relative to each entry, with a floor at the largest
            assert_close(got, want, 2e-3, 2e-3 * want.abs().max().item(), f"dj_prime {label}")

        out.append(
            Case(
                f"dj_prime {m.name}",
                label if "N=" in label else f"{label} N={N}",
                "fwd",
                _no_grad(lambda dec=dec, z=z, m=m, eps=eps: dj_prime(dec, z, m, eps=eps, method="forward")),
                {"naive loop": lambda dec=dec, z=z, m=m, eps=eps: naive_dj_prime(dec, z, m, eps)},
                check,
            )
        )
    return out


def cases(device: str, quick: bool, compile_baselines: bool) -> list[Case]:
    assert hasattr(ops, "pair_distances")
    return _pairs_cases(device, quick, compile_baselines) + _dj_cases(device, quick)
