"""A short tour of the fused GDN op: ``python -m vaeiso_ext.demo``.

Checks the fused op against the pure-PyTorch reference and CompressAI's layer (when installed)
and times forward+backward side by side on this machine.
"""

import time

import torch

import vaeiso_ext
from vaeiso_ext import nn as vnn
from vaeiso_ext import ops, reference


def _best_ms(fn, reps=20):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    print("vaeiso_ext build:", vaeiso_ext.build_info())
    torch.manual_seed(0)
    C = 64
    x = torch.randn(16, C, 32, 32)
    beta = 0.5 + torch.rand(C)
    gamma = 0.1 * torch.rand(C, C)  # non-diagonal: every channel mixes into every other
    for inverse in (False, True):
        y = ops.gdn(x, beta, gamma, inverse)
        want = reference.gdn(x.double(), beta.double(), gamma.double(), inverse)
        err = (y.double() - want).abs().max().item()
        print(f"{'IGDN' if inverse else 'GDN '} fused vs float64 reference: max abs error {err:.2e}")

    layer = vnn.GDN(C)
    try:
        from compressai.layers import GDN as CompressAIGDN

        peer = CompressAIGDN(C)
        peer.load_state_dict(layer.state_dict(), strict=True)
        print("CompressAI GDN state_dict loads into vaeiso_ext.nn.GDN; max output difference "
              f"{(peer(x) - layer(x)).abs().max().item():.2e}")
    except ImportError:
        print("(CompressAI not installed: skipping the drop-in check)")

    xr, br, gr = (t.clone().requires_grad_() for t in (x, beta, gamma))
    gy = torch.randn_like(x)

    def step(fn):
        return lambda: torch.autograd.grad(fn(xr, br, gr), (xr, br, gr), gy)

    fused, eager = _best_ms(step(ops.gdn)), _best_ms(step(reference.gdn))
    print(f"forward+backward, N=16 C={C} 32x32 float32, {torch.get_num_threads()} threads: "
          f"fused {fused:.2f} ms, eager reference {eager:.2f} ms ({eager / fused:.2f}x)")
    print("Full benchmark: python -m vaeiso_ext.bench")


if __name__ == "__main__":
    main()
