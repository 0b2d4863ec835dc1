"""Instructions per call of vaeiso_ext.bench's small-call family (GDN N=1 C=8 8x8, SSIM 1x1x16x16,
pair_distances SSE N=4 K=2 16, called as the benchmark calls them; forward under no_grad, and
forward+backward), counted by callgrind: unlike wall time, the count does not move with the
machine's load. Run it under callgrind with instrumentation off at the start; each case warms up,
then only its loop is instrumented and its counts are dumped to a file of their own:

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=build/calls.cg \\
        .venv/bin/python scripts/call_instructions.py 500
    grep -H -m1 '^totals:' build/calls.cg.*     # / 500 = instructions per call; desc: names the case

``callgrind_annotate --inclusive=yes build/calls.cg.<n>`` then says where they go.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from vaeiso_ext import ops


def _cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 8, 8, generator=g)
    beta, gamma = 0.5 + torch.rand(8, generator=g), 0.1 * torch.rand(8, 8, generator=g)
    yield "gdn", (x, beta, gamma), lambda a, b, c: ops.gdn(a, b, c), torch.randn(1, 8, 8, 8, generator=g)
    a = torch.rand(1, 1, 16, 16, generator=g)
    b = (a + 0.05 * torch.randn(1, 1, 16, 16, generator=g)).clamp(0, 1)
    yield "ssim", (a, b), lambda p, q: ops.ssim(p, q), torch.randn(1, generator=g)
    base = torch.rand(4, 16, generator=g)
    others = base.unsqueeze(1) + 0.1 * torch.randn(4, 2, 16, generator=g)
    yield "pair_distances", (base, others), lambda p, q: ops.pair_distances(p, q, "sse"), torch.randn(4, 2, generator=g)


def _callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], stdout=subprocess.DEVNULL, check=False)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    torch.set_num_threads(2)  # as the benchmark's --threads 2
    for name, inputs, fn, gy in _cases():
        leaves = tuple(t.clone().requires_grad_() for t in inputs)

        def fwd(fn=fn, inputs=inputs):
            with torch.no_grad():
                fn(*inputs)

        def fwd_bwd(fn=fn, leaves=leaves, gy=gy):
            torch.autograd.grad(fn(*leaves), leaves, gy)

        for mode, run in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            for _ in range(200):
                run()
            _callgrind("-z")
            _callgrind("-i", "on")
            for _ in range(n):
                run()
            _callgrind("-i", "off")
            _callgrind("-d", f"{name}_{mode}")


if __name__ == "__main__":
    main()
