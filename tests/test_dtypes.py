"""float16 / bfloat16 on CPU, autocast's mixed dtypes, the half conversions, and the CPU ISA
builds (docs/ops.md, conventions; docs/design.md, how an op flows).

Tolerances. A half-type kernel reads its (already half) inputs exactly, computes in float32 and
rounds each output once to nearest: against the float64 reference evaluated on the same half
inputs, the error is at most the unit roundoff U of the output type relative to the value
(U = 2**-11 for float16, 2**-8 for bfloat16) plus the float32 arithmetic error, budgeted as
`F32` relative to the output's scale (float32 unit roundoff 6e-8 times a few hundred operations
with terms up to ~10x the result: below 1e-4, far below U). Mixed-dtype results that come out in
float32 have only the float32 error.
"""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

from vaeiso_ext import nn as vnn
from vaeiso_ext import ops, reference

HALF = (torch.float16, torch.bfloat16)
U = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
F32 = 1e-4


def close(got, want, dtype, what):
    """|got - want| <= U |want| + F32 max|want| elementwise (see the module docstring)."""
    got, want = got.double(), want.double()
    scale = want.abs().max().item() if want.numel() else 0.0
    u = U.get(dtype, 0.0)
    err = (got - want).abs()
    bound = u * want.abs() + F32 * scale + 1e-30
    assert bool((err <= bound).all()), f"{what}: max excess {(err - bound).max().item():.3g} (scale {scale:.3g})"


def gdn_inputs(dtype, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, C, 6, 7, generator=g).to(dtype)
    beta = (0.5 + torch.rand(C, generator=g)).to(dtype)
    gamma = (0.1 * torch.rand(C, C, generator=g)).to(dtype)
    return x, beta, gamma


def ssim_inputs(dtype, shape=(2, 3, 20, 18), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    y = (x + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


# ------------------------------------------------------------------ half kernels on CPU


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("inverse,simplified", [(False, False), (True, False), (False, True), (True, True)])
def test_gdn_half_matches_reference(dtype, inverse, simplified):
    x, beta, gamma = gdn_inputs(dtype)
    x64, b64, g64 = (t.double().requires_grad_() for t in (x, beta, gamma))
    want = reference.gdn(x64, b64, g64, inverse=inverse, simplified=simplified)
    xs, bs, gs = (t.clone().requires_grad_() for t in (x, beta, gamma))
    got = ops.gdn(xs, bs, gs, inverse, simplified)
    assert got.dtype == dtype
    close(got, want, dtype, "gdn")
    # The float32 kernel on the same inputs agrees to half resolution too.
    close(got, ops.gdn(x.float(), beta.float(), gamma.float(), inverse, simplified), dtype, "gdn vs float32")

    gout = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got_g = torch.autograd.grad(got, (xs, bs, gs), gout)
    want_g = torch.autograd.grad(want, (x64, b64, g64), gout.double())
    for name, a, b in zip(("x", "beta", "gamma"), got_g, want_g):
        assert a.dtype == dtype
        close(a, b, dtype, f"gdn grad {name}")


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ssim_half_matches_reference(dtype, padding):
    x, y = ssim_inputs(dtype)
    x64, y64 = x.double().requires_grad_(), y.double().requires_grad_()
    want = reference.ssim(x64, y64, padding=padding)
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    got = ops.ssim(xs, ys, padding=padding)
    assert got.dtype == dtype
    close(got, want, dtype, "ssim")
    close(got, ops.ssim(x.float(), y.float(), padding=padding), dtype, "ssim vs float32")
    close(ops.one_minus_ssim(x, y, padding=padding), 1 - want, dtype, "one_minus_ssim")

    gx, gy = torch.autograd.grad(got.sum(), (xs, ys))
    wx, wy = torch.autograd.grad(want.sum(), (x64, y64))
    assert gx.dtype == gy.dtype == dtype
    close(gx, wx, dtype, "ssim grad x")
    close(gy, wy, dtype, "ssim grad y")


@pytest.mark.parametrize("dtype", HALF)
def test_ssim_pairs_and_gram_half(dtype):
    x, _ = ssim_inputs(dtype, (2, 2, 16, 17))
    g = torch.Generator().manual_seed(3)
    v = torch.randn((2, 3, 2, 16, 17), generator=g)
    others = (x.float().unsqueeze(1) + 0.05 * v).to(dtype)
    got = ops.ssim_pairs(x, others)
    assert got.dtype == dtype
    want = torch.stack([1 - reference.ssim(x.double(), others[:, k].double()) for k in range(3)], 1)
    close(got, want, dtype, "ssim_pairs")

    vh = v.to(dtype)
    gram = ops.ssim_metric_gram(x, vh)
    assert gram.dtype == dtype
    close(gram, ops.ssim_metric_gram(x.double(), vh.double()), dtype, "ssim_metric_gram")
    diag = ops.ssim_metric_gram(x, vh, diagonal=True)
    close(diag, ops.ssim_metric_gram(x.double(), vh.double(), diagonal=True), dtype, "gram diagonal")


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("metric", ["sse", "bce"])
def test_pair_distances_half(dtype, metric):
    g = torch.Generator().manual_seed(4)
    base = (0.05 + 0.9 * torch.rand(3, 2, 9, 11, generator=g)).to(dtype)
    others = (base.float().unsqueeze(1) + 0.03 * torch.randn(3, 4, 2, 9, 11, generator=g)).clamp(0.02, 0.98).to(dtype)
    w = torch.rand(3, generator=g).to(dtype)
    for weight in (None, w):
        got = ops.pair_distances(base, others, metric, weight=weight)
        assert got.dtype == dtype
        want = reference.pair_distances(
            base.double(), others.double(), metric, weight=None if weight is None else weight.double()
        )
        # elementwise relative: each distance is a sum of non-negative terms (no cancellation)
        err = (got.double() - want).abs()
        assert bool((err <= (U[dtype] + F32) * want.abs()).all()), err.max()


# ------------------------------------------------------------ the half conversions themselves


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("c", [1.0, 0.7, 3.3, 2.0**-10 * 0.77])
def test_half_rounding_is_round_to_nearest_even(dtype, c):
    # Every finite half value x through GDN simplified + inverse with gamma = 0 and a float32
    # beta = c: y = round(float(x) * c), the kernel's load and store around one float multiply.
    # torch rounds float -> half to nearest even: the results must agree bitwise (c = 1: the
    # round trip; 0.7: inexact products; 3.3: overflow to inf; 2**-10 * 0.77: subnormals).
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    x = bits.view(dtype)
    x = x[torch.isfinite(x)].view(-1, 1)
    beta = torch.full((1,), c, dtype=torch.float32)
    gamma = torch.zeros(1, 1)
    got = ops.gdn(x, beta, gamma, inverse=True, simplified=True)
    want = (x.float() * torch.tensor(c, dtype=torch.float32)).to(dtype)
    assert got.dtype == dtype
    # bitwise: the same IEEE rounding of the same float32 product
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))


# ------------------------------------------------------------------ autocast's mixed dtypes


@pytest.mark.parametrize("dtype", HALF)
def test_gdn_half_x_float32_params(dtype):
    x, beta, gamma = gdn_inputs(dtype)
    beta, gamma = beta.float(), gamma.float()
    x64, b64, g64 = x.double().requires_grad_(), beta.double().requires_grad_(), gamma.double().requires_grad_()
    want = reference.gdn(x64, b64, g64, inverse=True)
    xs, bs, gs = x.clone().requires_grad_(), beta.clone().requires_grad_(), gamma.clone().requires_grad_()
    got = ops.gdn(xs, bs, gs, True)
    assert got.dtype == dtype
    close(got, want, dtype, "gdn mixed")
    gout = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    gx, gb, gg = torch.autograd.grad(got, (xs, bs, gs), gout)
    wx, wb, wg = torch.autograd.grad(want, (x64, b64, g64), gout.double())
    assert gx.dtype == dtype and gb.dtype == gg.dtype == torch.float32
    close(gx, wx, dtype, "grad x")
    # the parameter gradients are float32 sums of float32 terms: float32 error only
    close(gb, wb, torch.float32, "grad beta")
    close(gg, wg, torch.float32, "grad gamma")


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("half_first", [True, False])
def test_ssim_half_against_float32(dtype, half_first):
    x, y = ssim_inputs(torch.float32)
    pred, target = (x.to(dtype), y) if half_first else (x, y.to(dtype))
    p64, t64 = pred.double().requires_grad_(), target.double().requires_grad_()
    want = reference.ssim(p64, t64)
    ps, ts = pred.clone().requires_grad_(), target.clone().requires_grad_()
    got = ops.ssim(ps, ts)
    assert got.dtype == torch.float32
    close(got, want, torch.float32, "ssim mixed")
    loss = ops.one_minus_ssim(pred, target)
    assert loss.dtype == torch.float32
    close(loss, 1 - want, torch.float32, "one_minus_ssim mixed")
    gp, gt = torch.autograd.grad(got.sum(), (ps, ts))
    wp, wt = torch.autograd.grad(want.sum(), (p64, t64))
    assert gp.dtype == pred.dtype and gt.dtype == target.dtype
    close(gp, wp, pred.dtype, "grad pred")
    close(gt, wt, target.dtype, "grad target")


@pytest.mark.parametrize("dtype", HALF)
def test_pair_distances_half_against_float32(dtype):
    g = torch.Generator().manual_seed(5)
    base = 0.05 + 0.9 * torch.rand(2, 30, generator=g)
    others = (base.unsqueeze(1) + 0.03 * torch.randn(2, 3, 30, generator=g)).clamp(0.02, 0.98).to(dtype)
    for metric in ("sse", "bce"):
        for b, o in ((base, others), (base.to(dtype), others.float())):
            w = torch.rand(2, generator=g).to(b.dtype)
            bs, os_, ws = b.clone().requires_grad_(), o.clone().requires_grad_(), w.clone().requires_grad_()
            got = ops.pair_distances(bs, os_, metric, weight=ws)
            assert got.dtype == torch.float32
            b64, o64, w64 = (t.double().requires_grad_() for t in (b, o, w))
            want = reference.pair_distances(b64, o64, metric, weight=w64)
            close(got, want, torch.float32, f"{metric} mixed")
            grads = torch.autograd.grad(got.sum(), (bs, os_, ws))
            wants = torch.autograd.grad(want.sum(), (b64, o64, w64))
            for t, a, r in zip((b, o, w), grads, wants):
                assert a.dtype == t.dtype
                close(a, r, t.dtype, f"{metric} mixed grad")


def test_other_mixes_raise_naming_the_argument():
    x, beta, gamma = gdn_inputs(torch.float16)
    with pytest.raises(TypeError, match="gdn: beta: expected dtype"):
        ops.gdn(x, beta.to(torch.bfloat16), gamma.to(torch.bfloat16))
    with pytest.raises(TypeError, match="gdn: beta: expected dtype"):
        ops.gdn(x.float(), beta, gamma)  # half parameters with a float32 x
    with pytest.raises(TypeError, match="gdn: gamma: expected dtype"):
        ops.gdn(x, beta.float(), gamma)
    a, b = ssim_inputs(torch.bfloat16)
    with pytest.raises(TypeError, match="ssim: y: expected dtype"):
        ops.ssim(a, b.half())
    with pytest.raises(TypeError, match="ssim: y: expected dtype"):
        ops.one_minus_ssim(a, b.double())
    with pytest.raises(TypeError, match="ssim_pairs: others: expected dtype"):
        ops.ssim_pairs(a, b.float().unsqueeze(1))
    with pytest.raises(TypeError, match="ssim_metric_gram: v: expected dtype"):
        ops.ssim_metric_gram(a, b.float().unsqueeze(1))
    base = torch.rand(2, 5)
    with pytest.raises(TypeError, match="pair_distances: others: expected dtype"):
        ops.pair_distances(base.double(), base.half().unsqueeze(1), "sse")
    with pytest.raises(TypeError, match="pair_distances: weight: expected dtype"):
        ops.pair_distances(base, base.half().unsqueeze(1), "sse", weight=torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("dtype", HALF)
def test_fake_impls_give_the_real_dtypes(dtype):
    # The meta (fake) implementations follow the same dtype rules as the kernels.
    def both(fn, *args):
        real = fn(*args)
        fake = fn(*(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args))
        real = real if isinstance(real, tuple) else (real,)
        fake = fake if isinstance(fake, tuple) else (fake,)
        assert [t.dtype for t in real] == [t.dtype for t in fake]
        assert [t.shape for t in real] == [t.shape for t in fake]

    x, beta, gamma = gdn_inputs(dtype)
    vo = torch.ops.vaeiso
    both(vo.gdn_forward, x, beta.float(), gamma.float(), False, False)
    out, norm = vo.gdn_forward(x, beta.float(), gamma.float(), False, False)
    both(vo.gdn_backward, out, x, norm, gamma.float(), False, False, [True, True, True])
    a, b = ssim_inputs(dtype)
    both(vo.ssim_forward, a, b.float(), 11, 1.5, 0.01, 0.03, 1.0, False, False, True, True)
    both(vo.ssim_forward, a, b, 11, 1.5, 0.01, 0.03, 1.0, False, True, False, True)
    _, _, maps = vo.ssim_forward(a, b.float(), 11, 1.5, 0.01, 0.03, 1.0, False, False, True, True)
    both(vo.ssim_backward, torch.ones(2, a.shape[1]), torch.ones(2, a.shape[1]), a, b.float(), maps, 11, 1.5, False)
    both(vo.ssim_pairs, a, b.unsqueeze(1))
    base = torch.rand(2, 5)
    both(vo.pair_distances, base, base.to(dtype).unsqueeze(1), "bce", base[:, 0].clone())


def test_opcheck_half_and_mixed():
    # schema, autograd registration, fake tensors and AOT dispatch with half / mixed inputs
    g = torch.Generator().manual_seed(6)
    vo = torch.ops.vaeiso
    x = torch.randn(2, 3, 5, 5, generator=g).bfloat16().requires_grad_()
    beta = (0.5 + torch.rand(3, generator=g)).requires_grad_()
    gamma = (0.1 * torch.rand(3, 3, generator=g)).requires_grad_()
    torch.library.opcheck(vo.gdn_forward, (x, beta, gamma, True, False))
    torch.library.opcheck(vo.gdn_forward, (x.detach().half().requires_grad_(), beta.half(), gamma.half(), False, False))
    a = torch.rand(2, 3, 16, 16, generator=g).half().requires_grad_()
    c = torch.rand(2, 3, 16, 16, generator=g).requires_grad_()
    torch.library.opcheck(vo.ssim_forward, (a, c, 11, 1.5, 0.01, 0.03, 1.0, False, False, True, True))
    torch.library.opcheck(
        vo.ssim_forward, (a, a.detach().bfloat16().half(), 11, 1.5, 0.01, 0.03, 1.0, True, True, False, True)
    )
    torch.library.opcheck(vo.ssim_pairs, (a.detach().bfloat16(), c.detach().bfloat16().unsqueeze(1)))
    base = (0.05 + 0.9 * torch.rand(2, 7, generator=g)).requires_grad_()
    others = (0.05 + 0.9 * torch.rand(2, 3, 7, generator=g)).bfloat16().requires_grad_()
    torch.library.opcheck(vo.pair_distances, (base, others, "bce", None))


# ---------------------------------------------------------------------------- autocast steps


def _model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), vnn.GDN(8), torch.nn.Conv2d(8, 3, 3, padding=1), vnn.GDN(3, inverse=True)
    )


def _step(model, x, target, dtype):
    model.zero_grad()
    out_grads = {}

    def keep_grad(i):
        def hook(mod, inp, out):  # returns None: the output stays as it is
            out.register_hook(lambda g: out_grads.__setitem__(i, g))

        return hook

    hooks = [m.register_forward_hook(keep_grad(i)) for i, m in enumerate(model) if isinstance(m, torch.nn.Conv2d)]
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        y = torch.sigmoid(model(x))
        loss = vnn.SSIMLoss()(y, target)
    loss.backward()
    for h in hooks:
        h.remove()
    return loss, {n: p.grad.clone() for n, p in model.named_parameters()}, out_grads


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_autocast_step_matches_float32(dtype, seed):
    # conv + GDN + conv + IGDN + SSIM loss under CPU autocast: the convs run in the half type,
    # GDN gets a half x with its float32 parameters, the loss a half prediction against a float32
    # target (float32 loss). Each rounded tensor on the way (input, conv weights and outputs, GDN
    # outputs, each backward's gradient: about 8 roundings along any path) perturbs a term by at
    # most U relatively, so to first order a gradient moves by at most ~8 U of the magnitude of
    # its terms; 16 U allows the network's conditioning a factor 2. For the weight tensors and
    # the whole gradient that magnitude is the gradient's norm; a conv bias's gradient is a sum
    # over all positions of its output's gradient, which cancels: its terms' magnitude is the
    # L1 norm of that output gradient per channel.
    model = _model(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 24, 24, generator=g)
    target = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    loss32, grads32, out32 = _step(model, x, target, None)
    loss, grads, _ = _step(model, x, target, dtype)
    tol = 16 * U[dtype]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - loss32.item()) <= tol * abs(loss32.item())
    flat = torch.cat([t.flatten() for t in grads.values()])
    flat32 = torch.cat([t.flatten() for t in grads32.values()])
    assert ((flat - flat32).norm() / flat32.norm()).item() <= tol
    for name, a in grads.items():
        b = grads32[name]
        assert a.dtype == torch.float32 and torch.isfinite(a).all(), name
        layer, kind = name.split(".")
        if kind == "bias":
            terms = out32[int(layer)].abs().sum((0, 2, 3))
            assert bool(((a - b).abs() <= tol * terms).all()), name
        else:
            rel = ((a - b).norm() / b.norm()).item()
            assert rel <= tol, f"{name}: relative gradient error {rel:.3g}"


# ------------------------------------------------------------------------- CPU ISA builds


def _half_outputs():
    torch.manual_seed(0)
    outs = {}
    for dt in HALF:
        x, beta, gamma = gdn_inputs(dt)
        xs = x.clone().requires_grad_()
        y = ops.gdn(xs, beta.float(), gamma.float(), True)
        outs[f"gdn_{dt}"] = y.detach().float()
        outs[f"gdn_grad_{dt}"] = torch.autograd.grad(y, xs, torch.ones_like(y))[0].float()
        a, b = ssim_inputs(dt, (2, 3, 23, 21))
        a.requires_grad_()
        s = ops.ssim(a, b, padding="same")
        outs[f"ssim_{dt}"] = s.detach().float()
        outs[f"ssim_grad_{dt}"] = torch.autograd.grad(s.sum(), a)[0].float()
        outs[f"pairs_{dt}"] = ops.ssim_pairs(a.detach(), b.unsqueeze(1)).float()
        base = 0.05 + 0.9 * torch.rand(2, 3, 40)
        oth = (base.unsqueeze(1) + 0.02 * torch.randn(2, 3, 3, 40)).clamp(0.02, 0.98)
        for m in ("sse", "bce"):
            outs[f"dist_{m}_{dt}"] = ops.pair_distances(base.to(dt), oth.to(dt), m).float()
    return outs


@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_isa_builds_agree_for_half_types(tmp_path, isa):
    # A capped build (VAEISO_CPU_ISA, in a subprocess: the choice is made once per process)
    # against the default one. They differ only in float32 rounding (FMA contraction, the order
    # of vector lanes in sums), which can move a half output by one unit in the last place:
    # 2 U relative, plus F32.
    path = tmp_path / f"{isa}.pt"
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n"
        "import test_dtypes\n"
        f"torch.save(test_dtypes._half_outputs(), {str(path)!r})\n"
    )
    env = dict(os.environ, VAEISO_CPU_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    base = torch.load(path)
    here = _half_outputs()
    assert base.keys() == here.keys()
    for k in here:
        dt = torch.bfloat16 if "bfloat16" in k else torch.float16
        want = here[k].double()
        err = (base[k].double() - want).abs()
        bound = 2 * U[dt] * want.abs() + F32 * want.abs().max()
        assert bool((err <= bound).all()), k


def _object_files():
    root = pathlib.Path(__file__).resolve().parents[1] / "build"
    return sorted(root.glob("*/CMakeFiles/_C.dir/csrc/**/*.o"))


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_isa_units_export_only_per_isa_symbols(isa):
    # Every vague-linkage symbol (inline functions, template instantiations: nm types W, V, u)
    # that an *_avx2 (*_avx512) object defines must carry the isa_avx2 (isa_avx512) namespace, so
    # that the linker cannot merge it with another build's copy. DW.ref.__gxx_personality_v0 is a data pointer to
    # the C++ runtime's personality routine, the same in every unit; _ZZN2at... are static
    # variables inside ATen's inline functions (at::parallel_for's once-per-thread init flag,
    # built in with OpenMP): data that must be one per program, not code.
    objs = _object_files()
    units = [o for o in objs if o.name.endswith(f"_{isa}.cpp.o")]
    if not units:
        pytest.skip(f"no build tree with {isa} objects (build/*/CMakeFiles) next to the tests")
    nm = subprocess.run(["nm", "--defined-only", *map(str, units)], capture_output=True, text=True)
    if nm.returncode != 0:
        pytest.skip(f"nm unavailable: {nm.stderr[:200]}")
    shared = []
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("W", "V", "u", "w", "v"):
            name = parts[2]
            if f"isa_{isa}" not in name and not name.startswith(("DW.ref.", "_ZZN2at")):
                shared.append(name)
    assert not shared, f"symbols without per-ISA linkage in the {isa} units: {shared[:10]}"


# ------------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALF)
def test_cuda_mixed_dtypes_match_cpu(dtype):
    # The same mixes on CUDA (float32 parameters with a half x; half against float32 in the
    # losses) against the CPU kernels: both round the same float32-accurate values once.
    x, beta, gamma = gdn_inputs(dtype)
    cpu = ops.gdn(x, beta.float(), gamma.float(), True)
    close(ops.gdn(x.cuda(), beta.float().cuda(), gamma.float().cuda(), True).cpu(), cpu, dtype, "gdn")
    xs = x.cuda().requires_grad_()
    bs, gs = beta.float().cuda().requires_grad_(), gamma.float().cuda().requires_grad_()
    grads = torch.autograd.grad(ops.gdn(xs, bs, gs).float().sum(), (xs, bs, gs))
    assert [t.dtype for t in grads] == [dtype, torch.float32, torch.float32]
    a, b = ssim_inputs(torch.float32)
    got = ops.one_minus_ssim(a.to(dtype).cuda(), b.cuda())
    assert got.dtype == torch.float32
    close(got.cpu(), ops.one_minus_ssim(a.to(dtype), b), torch.float32, "one_minus_ssim")
    base = 0.05 + 0.9 * torch.rand(2, 30)
    others = (base.unsqueeze(1) + 0.03 * torch.randn(2, 3, 30)).clamp(0.02, 0.98).to(dtype)
    got = ops.pair_distances(base.cuda(), others.cuda(), "bce", weight=torch.rand(2).cuda())
    assert got.dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALF)
def test_cuda_autocast_step_matches_float32(dtype):
    # as test_cpu_autocast_step_matches_float32, on CUDA (global gradient norm)
    model = _model(0).cuda()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=g).cuda()
    target = (x + 0.1 * torch.randn(x.shape, generator=g).cuda()).clamp(0, 1)

    def step(dt):
        model.zero_grad()
        with torch.autocast("cuda", dtype=dt or torch.float16, enabled=dt is not None):
            loss = vnn.SSIMLoss()(torch.sigmoid(model(x)), target)
        loss.backward()
        return loss, torch.cat([p.grad.flatten() for p in model.parameters()])

    loss32, g32 = step(None)
    loss, gh = step(dtype)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert ((gh - g32).norm() / g32.norm()).item() <= 16 * U[dtype]
