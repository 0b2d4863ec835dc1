"""Small-call cases: inputs so small that one call's fixed cost (the Python wrapper, the dispatcher,
the autograd node, the output allocation) is most of its time, where a change of the binding layer
shows first. GDN N=1 C=8 8x8, SSIM 1x1x16x16, pair_distances (SSE) N=4 K=2 16; forward and
forward+backward; the eager float32 reference as the baseline, the float64 reference as the gate."""

from __future__ import annotations

import torch

from .. import ops, reference
from .core import Case, assert_close, fwd_bwd


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def _add(out, op, size, fused, eager, inputs, gy, rtol, atol):
    """A fwd and a fwd+bwd case of ``fused`` against ``eager``, both gated by float64 ``eager``."""

    def check_fwd():
        with torch.no_grad():
            want = eager(*(t.double() for t in inputs))
            assert_close(fused(*inputs), want, rtol, atol, op)

    out.append(
        Case(
            op,
            size,
            "fwd",
            _no_grad(lambda: fused(*inputs)),
            {"eager": _no_grad(lambda: eager(*inputs))},
            check_fwd,
            bytes=sum(t.numel() * t.element_size() for t in inputs),
        )
    )
    leaves = tuple(t.clone().requires_grad_() for t in inputs)

    def check_bwd():
        got = fwd_bwd(fused, leaves, gy)()
        ref_in = tuple(t.detach().double().requires_grad_() for t in leaves)
        want = fwd_bwd(eager, ref_in, gy.double())()
        for i, (a, b) in enumerate(zip(got, want)):
            assert_close(a, b, 1e-3, 1e-5 * max(b.abs().max().item(), 1.0), f"{op} grads[{i}]")

    out.append(
        Case(
            op,
            size,
            "fwd+bwd",
            fwd_bwd(fused, leaves, gy),
            {"eager": fwd_bwd(eager, leaves, gy)},
            check_bwd,
            notes="gradients to every input",
        )
    )


def cases(device: str, quick: bool, compile_baselines: bool) -> list[Case]:
    """The same sizes with and without ``quick``: they are small already. No compile baseline
    (compiled code's guard checks would dominate, which says nothing about our binding)."""
    g = torch.Generator().manual_seed(0)
    out: list[Case] = []

    x = torch.randn(1, 8, 8, 8, generator=g).to(device)
    beta = (0.5 + torch.rand(8, generator=g)).to(device)
    gamma = (0.1 * torch.rand(8, 8, generator=g)).to(device)
    _add(
        out,
        "small gdn",
        "N=1 C=8 8x8",
        lambda a, b, c: ops.gdn(a, b, c),
        lambda a, b, c: reference.gdn(a, b, c),
        (x, beta, gamma),
        torch.randn(1, 8, 8, 8, generator=g).to(device),
        1e-4,
        1e-5,
    )

    a = torch.rand(1, 1, 16, 16, generator=g).to(device)
    b = (a + 0.05 * torch.randn(1, 1, 16, 16, generator=g).to(device)).clamp(0, 1)
    _add(
        out,
        "small ssim",
        "1x1x16x16",
        lambda p, q: ops.ssim(p, q),
        lambda p, q: reference.ssim(p, q),
        (a, b),
        torch.randn(1, generator=g).to(device),
        1e-4,
        1e-5,
    )

    base = torch.rand(4, 16, generator=g).to(device)
    others = base.unsqueeze(1) + 0.1 * torch.randn(4, 2, 16, generator=g).to(device)
    _add(
        out,
        "small pair_distances",
        "sse N=4 K=2 16",
        lambda p, q: ops.pair_distances(p, q, "sse"),
        lambda p, q: reference.pair_distances(p, q, "sse"),
        (base, others),
        torch.randn(4, 2, generator=g).to(device),
        1e-4,
        1e-5,
    )
    return out
