"""GDN / IGDN benchmark cases: fused op (and the ``nn.GDN`` / ``nn.IGDN`` modules, their parameter
reparametrisation included) vs the eager reference, torch.compile of it, CompressAI, and the GEMM
floor: the channel-mixing GEMMs the math cannot avoid, timed alone (forward: one
(N*H*W, C) x (C, C) product; forward+backward: three, the backward's being gamma^T t and the
gamma gradient's (C, N*H*W) x (N*H*W, C) reduction). "vs GEMM floor" is floor time / fused time:
1 would be the op at its limit, 0.67 the op at 1.5x it."""

from __future__ import annotations

import torch

from .. import nn as vnn
from .. import ops, reference
from .core import Case, assert_close, fwd_bwd


def _inputs(N, C, H, W, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=g).to(device, dtype)
    beta = (0.5 + torch.rand(C, generator=g)).to(device, dtype)
    gamma = (0.1 * torch.rand(C, C, generator=g)).to(device, dtype)
    return x, beta, gamma


def _gemm_operands(M, C, device, dtype, seed=1):
    """An (M, C) matrix and a (C, C) one: the shapes of GDN's channel-mixing GEMMs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, C, generator=g).to(device, dtype), torch.randn(C, C, generator=g).to(device, dtype)


def _compressai_fn(C, inverse, beta, gamma, device, dtype):
    """CompressAI's GDN layer with our parameters loaded (None when CompressAI is absent)."""
    try:
        from compressai.layers import GDN
    except Exception:
        return None
    layer = GDN(C, inverse=inverse).to(device, dtype)
    with torch.no_grad():
        layer.beta.copy_(layer.beta_reparam.init(beta))
        layer.gamma.copy_(layer.gamma_reparam.init(gamma))
    return layer


def cases(device: str, quick: bool, compile_baselines: bool, fused_gdn=None) -> list[Case]:
    """``fused_gdn`` replaces the fused op (a test hook for the correctness gate)."""
    fused_gdn = fused_gdn or ops.gdn
    dtype = torch.float32
    sizes = [(4, 64, 16, 16)] if quick else [(16, 64, 32, 32), (16, 128, 32, 32), (16, 192, 32, 32)]
    if device.startswith("cuda") and not quick:  # sizes that fill a GPU (32x32 is launch-bound there)
        sizes += [(16, 64, 128, 128), (16, 192, 128, 128)]
    out: list[Case] = []
    compiled = torch.compile(reference.gdn, dynamic=False) if compile_baselines else None
    for N, C, H, W in sizes:
        for inverse in (False, True):
            name = "igdn" if inverse else "gdn"
            x, beta, gamma = _inputs(N, C, H, W, device, dtype)
            x64, b64, g64 = x.double(), beta.double(), gamma.double()
            size = f"N={N} C={C} {H}x{W}"
            elt = x.numel() * x.element_size()
            layer = _compressai_fn(C, inverse, beta, gamma, device, dtype)
            rows, mix = _gemm_operands(N * H * W, C, device, dtype)

            def fused(a, b, g, inverse=inverse):
                return fused_gdn(a, b, g, inverse)

            def eager(a, b, g, inverse=inverse):
                return reference.gdn(a, b, g, inverse)

            def check_fwd(x=x, beta=beta, gamma=gamma, fused=fused, x64=x64, b64=b64, g64=g64, inverse=inverse):
                with torch.no_grad():
                    assert_close(fused(x, beta, gamma), reference.gdn(x64, b64, g64, inverse), 1e-4, 1e-5, name)

            base = {"eager": lambda eager=eager, x=x, beta=beta, gamma=gamma: eager(x, beta, gamma)}
            if compiled is not None:
                base["compile"] = lambda x=x, beta=beta, gamma=gamma, inverse=inverse: compiled(x, beta, gamma, inverse)
            if layer is not None:
                base["compressai"] = lambda layer=layer, x=x: layer(x)
            base["GEMM floor"] = lambda rows=rows, mix=mix: torch.mm(rows, mix)
            out.append(
                Case(
                    name,
                    size,
                    "fwd",
                    lambda fused=fused, x=x, beta=beta, gamma=gamma: fused(x, beta, gamma),
                    {k: _no_grad(v) for k, v in base.items()},
                    check_fwd,
                    bytes=2 * elt,
                )
            )

            # forward + backward w.r.t. x, beta and gamma
            xr, br, gr = (t.clone().requires_grad_() for t in (x, beta, gamma))
            gy = torch.randn_like(x)
            inputs = (xr, br, gr)

            def check_bwd(fused=fused, inputs=inputs, gy=gy, inverse=inverse):
                got = fwd_bwd(fused, inputs, gy)()
                ref_in = tuple(t.detach().double().requires_grad_() for t in inputs)
                want = fwd_bwd(lambda a, b, g: reference.gdn(a, b, g, inverse), ref_in, gy.double())()
                assert_close(got, want, 1e-3, 1e-3, f"{name} grads")

            bb = {"eager": fwd_bwd(eager, inputs, gy)}
            if compiled is not None:
                bb["compile"] = fwd_bwd(lambda a, b, g, inverse=inverse: compiled(a, b, g, inverse), inputs, gy)
            if layer is not None:
                lx = x.clone().requires_grad_()
                bb["compressai"] = fwd_bwd(
                    lambda a, *_params, layer=layer: layer(a), (lx,) + tuple(layer.parameters()), gy
                )
            bb["GEMM floor"] = _no_grad(
                lambda rows=rows, mix=mix: (torch.mm(rows, mix), torch.mm(rows.t(), rows), torch.mm(rows, mix))
            )
            out.append(
                Case(
                    name,
                    size,
                    "fwd+bwd",
                    fwd_bwd(fused, inputs, gy),
                    bb,
                    check_bwd,
                    bytes=5 * elt,
                    notes="gradients to x, beta, gamma",
                )
            )
            out.append(_module_case(name, size, x, beta, gamma, gy, inverse, layer, bb["GEMM floor"], elt))
    return out


def _module_case(name, size, x, beta, gamma, gy, inverse, layer, floor, elt) -> Case:
    """``nn.GDN`` / ``nn.IGDN`` forward + backward: the op plus the parameter reparametrisation
    (forward and backward), gradients to x and the stored parameters; against CompressAI's layer
    and the same GEMM floor."""
    module = vnn.GDN(x.shape[1], inverse=inverse).to(x.device, x.dtype)
    with torch.no_grad():
        module.beta.copy_(module.beta_reparam.init(beta))
        module.gamma.copy_(module.gamma_reparam.init(gamma))
    mx = x.clone().requires_grad_()

    def check(module=module, mx=mx, gy=gy, inverse=inverse):
        got = fwd_bwd(lambda a, *_p: module(a), (mx,) + tuple(module.parameters()), gy)()
        raw = tuple(p.detach().double().requires_grad_() for p in (mx, module.beta, module.gamma))

        def ref(a, b, g):
            return reference.gdn(a, module.beta_reparam(b), module.gamma_reparam(g), inverse)

        want = fwd_bwd(ref, raw, gy.double())()
        assert_close(got, want, 1e-3, 1e-3, f"nn.{name} grads")

    bb = {"GEMM floor": floor}
    if layer is not None:
        lx = x.clone().requires_grad_()
        bb["compressai"] = fwd_bwd(lambda a, *_params, layer=layer: layer(a), (lx,) + tuple(layer.parameters()), gy)
    return Case(
        f"nn.{name}",
        size,
        "fwd+bwd",
        fwd_bwd(lambda a, *_params: module(a), (mx,) + tuple(module.parameters()), gy),
        bb,
        check,
        bytes=5 * elt,
        notes="module: gradients to x and the stored beta, gamma",
    )


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run
