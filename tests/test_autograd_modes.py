"""Every autograd mode a researcher reaches (docs/ops.md, conventions), against the float64 reference.

Double backward (gradgradcheck, gradient penalties), forward mode (forward_ad, torch.func.jvp,
jacfwd), the torch.func transforms (grad, vjp, jacrev, vmap with the batch on any argument,
vmap(grad) per-sample gradients, hessian) over every op and module, parameters included via
functional_call; devices checked in the fake implementations; export, TorchScript and the
modules' argument checks.

Tolerance: the fused ops and vaeiso_ext.reference evaluate the same float64 formulas in a
different order (fused passes, cancellation-free forms, GEMMs). Round-off is then ~1e-16 times
the number of terms summed (at most ~1e3 here) times the conditioning of the SSIM ratio, about
1e-13 relative; RTOL = 1e-10 (the issue's figure) keeps a wide margin and still catches any
formula error, which is O(1). Entries that should be ~0 are compared with an absolute tolerance
of RTOL times the largest entry of the reference (the scale of the round-off there).
"""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from op_contract import MODES, SSIM_KW, VARIANTS, distance_inputs, gdn_inputs, gen, images
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vjp, vmap
from torch.utils._python_dispatch import TorchDispatchMode

from vaeiso_ext import nn as vnn
from vaeiso_ext import ops
from vaeiso_ext import reference as ref

D = torch.float64
RTOL = 1e-10


def close(got, want, rtol=RTOL):
    """Leaf-wise (tensors, tuples, dicts) comparison at the module's tolerance."""
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for k in want:
            close(got[k], want[k], rtol)
        return
    if isinstance(want, (tuple, list)):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            close(a, b, rtol)
        return
    scale = want.abs().max().item() if want.numel() else 1.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * max(scale, 1e-300))


# The rows of the one op table (tests/op_contract.py) that carry every autograd mode.
CASES = [(c.name, c.fn, c.ref, c.args) for c in MODES]
IDS = [c[0] for c in CASES]


def weights_for(fn, args, seed=7):
    """A fixed random cotangent, so that scalar losses see every output entry."""
    return torch.randn(fn(*args).shape, generator=gen(seed), dtype=D)


def tangents_for(args, seed=8):
    g = gen(seed)
    return tuple(torch.randn(a.shape, generator=g, dtype=D) for a in args)


# ------------------------------------------------------------------------------ double backward


# gradgradcheck of every op: tests/test_op_contract.py


@pytest.mark.parametrize("inverse,simplified", VARIANTS)
def test_gdn_gradient_penalty_matches_reference(inverse, simplified):
    """The issue's first case: a second derivative through ops.gdn was 100% off (warn and drop)."""
    args = gdn_inputs(5)
    out = []
    for fn in (ops.gdn, ref.gdn):
        leaves = tuple(a.clone().requires_grad_() for a in args)
        y = fn(*leaves, inverse, simplified)
        gs = torch.autograd.grad(y.square().sum(), leaves, create_graph=True)
        penalty = sum(g.square().sum() for g in gs)
        out.append(torch.autograd.grad(penalty, leaves))
    close(out[0], out[1])


def test_module_gradient_penalty_and_hessian():
    m = vnn.GDN(3).double()
    x = gdn_inputs(6)[0].requires_grad_()
    (gx,) = torch.autograd.grad(m(x).square().sum(), x, create_graph=True)
    got = torch.autograd.grad(gx.square().sum(), [x] + list(m.parameters()))
    beta, gamma = (p.detach().requires_grad_() for p in m.effective_params())
    x2 = x.detach().requires_grad_()
    (gx2,) = torch.autograd.grad(ref.gdn(x2, beta, gamma).square().sum(), x2, create_graph=True)
    want_x = torch.autograd.grad(gx2.square().sum(), x2)[0]
    close(got[0], want_x)
    assert all(torch.isfinite(g).all() for g in got[1:])


@pytest.mark.parametrize("name,fn,rf,args", CASES, ids=IDS)
def test_hessian_vector_products(name, fn, rf, args):
    """Reverse-over-reverse with a fixed cotangent, all inputs at once."""
    w = weights_for(rf, args)
    res = []
    for f in (fn, rf):
        leaves = tuple(a.clone().requires_grad_() for a in args)
        gs = torch.autograd.grad((f(*leaves) * w).sum(), leaves, create_graph=True)
        res.append(torch.autograd.grad(sum((g * t).sum() for g, t in zip(gs, tangents_for(args))), leaves))
    close(res[0], res[1])


# ------------------------------------------------------------------------------ forward mode


@pytest.mark.parametrize("name,fn,rf,args", CASES, ids=IDS)
def test_forward_ad_and_func_jvp(name, fn, rf, args):
    ts = tangents_for(args)
    _, want = jvp(rf, args, ts)
    out, got = jvp(fn, args, ts)
    close(out, rf(*args))
    close(got, want)
    with fwAD.dual_level():
        dual = fn(*(fwAD.make_dual(a, t) for a, t in zip(args, ts)))
        tangent = fwAD.unpack_dual(dual).tangent
    assert tangent is not None, "forward AD dropped the tangent"
    close(tangent, want)


def test_ssim_jvp_is_not_zero_and_matches_central_difference():
    """The issue's case: torch.func.jvp through ops.ssim returned exactly 0."""
    x, y = images(9, shape=(2, 3, 16, 16))  # default window (11)
    t = torch.randn(x.shape, generator=gen(10), dtype=D)
    _, got = jvp(lambda u: ops.ssim(u, y), (x,), (t,))
    h = 1e-4  # central difference: truncation ~h**2, round-off ~1e-16 / h: both below 1e-7
    fd = (ref.ssim(x + h * t, y) - ref.ssim(x - h * t, y)) / (2 * h)
    assert got.abs().min() > 1e-3
    torch.testing.assert_close(got, fd, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------ torch.func


@pytest.mark.parametrize("name,fn,rf,args", CASES, ids=IDS)
def test_grad_vjp_jacrev_jacfwd(name, fn, rf, args):
    w = weights_for(rf, args)
    argnums = tuple(range(len(args)))

    def loss(f):
        return lambda *a: (f(*a) * w).sum()

    close(grad(loss(fn), argnums=argnums)(*args), grad(loss(rf), argnums=argnums)(*args))
    (_, pull), (_, pull_ref) = vjp(fn, *args), vjp(rf, *args)
    close(pull(w), pull_ref(w))
    want = jacrev(rf, argnums=argnums)(*args)
    close(jacrev(fn, argnums=argnums)(*args), want)
    close(jacfwd(fn, argnums=argnums)(*args), want)


def batched(args, i, B=3, seed=11):
    """Argument i made a batch of B different values (scaled copies keep them valid inputs)."""
    a = args[i]
    scales = 1 + 0.1 * torch.rand(B, generator=gen(seed + i), dtype=D)
    if a.min() >= 0 and a.max() <= 1:  # images, probabilities: stay inside (0, 1)
        return torch.stack([a**s for s in scales])
    return torch.stack([a * s for s in scales])


@pytest.mark.parametrize("name,fn,rf,args", CASES, ids=IDS)
def test_vmap_with_the_batch_on_any_argument(name, fn, rf, args):
    n = len(args)
    for i in range(n):
        for bdim in (0, 1):
            bat = batched(args, i)
            if bdim:
                bat = bat.movedim(0, 1)
            in_dims = tuple(bdim if j == i else None for j in range(n))
            call = tuple(bat if j == i else a for j, a in enumerate(args))
            got = vmap(fn, in_dims=in_dims)(*call)
            want = torch.stack(
                [
                    rf(*[bat.select(bdim, k) if j == i else a for j, a in enumerate(args)])
                    for k in range(bat.shape[bdim])
                ]
            )
            close(got, want)
    # every argument batched at once
    bats = tuple(batched(args, i) for i in range(n))
    close(vmap(fn)(*bats), torch.stack([rf(*[b[k] for b in bats]) for k in range(3)]))


@pytest.mark.parametrize("name,fn,rf,args", CASES, ids=IDS)
def test_per_sample_gradients(name, fn, rf, args):
    """vmap(grad): one gradient per sample n of the leading dim, all arguments (GDN's beta and
    gamma are shared by the samples: unbatched, and their per-sample gradients differ)."""
    argnums = tuple(range(len(args)))
    w = weights_for(rf, args)
    shared = name.startswith("gdn")
    in_dims = tuple(None if shared and i else 0 for i in range(len(args))) + (0,)

    def per_sample(f):
        def loss(*a):
            wn = a[-1]
            return (f(*(t if shared and i else t.unsqueeze(0) for i, t in enumerate(a[:-1]))) * wn).sum()

        return vmap(grad(loss, argnums=argnums), in_dims=in_dims)(*args, w)

    close(per_sample(fn), per_sample(rf))


@pytest.mark.parametrize(
    "name,fn,rf,args", [c for c in CASES if c[0] in ("gdn-inv1-simp0", "ssim-valid", "pair_distances-bce")]
)
def test_hessian(name, fn, rf, args):
    small = tuple(a[:1] for a in args)
    if name.startswith("gdn"):
        small = (args[0][:1, :, :2, :2],) + args[1:]
    w = weights_for(rf, small)
    close(
        torch.func.hessian(lambda a: (fn(a, *small[1:]) * w).sum())(small[0]),
        torch.func.hessian(lambda a: (rf(a, *small[1:]) * w).sum())(small[0]),
    )


# ------------------------------------------------------------------------------ modules


def reference_gdn_module(m, params, x):
    """The module's math in plain torch: the non-negative reparametrization, then reference.gdn
    (parameters here are above their bounds, where the lower bound is the identity)."""
    ped = m.beta_reparam.pedestal
    beta = torch.maximum(params["beta"], m.beta_reparam.lower_bound.bound) ** 2 - ped
    gamma = torch.maximum(params["gamma"], m.gamma_reparam.lower_bound.bound) ** 2 - ped
    return ref.gdn(x, beta, gamma, m.inverse, m.simplified)


@pytest.mark.parametrize("cls,simplified", [(vnn.GDN, False), (vnn.IGDN, False), (vnn.GDN, True)])
def test_gdn_modules_under_torch_func(cls, simplified):
    m = cls(3, simplified=simplified).double()
    with torch.no_grad():  # non-identity parameters
        m.beta.mul_(1.2)
        m.gamma.add_(0.3 * torch.rand(3, 3, generator=gen(12), dtype=D))
    params = {k: v.detach() for k, v in m.named_parameters()}
    x = gdn_inputs(13)[0]
    w = torch.randn(x.shape, generator=gen(14), dtype=D)

    def ours(p, a):
        return functional_call(m, p, (a,))

    def theirs(p, a):
        return reference_gdn_module(m, p, a)

    for f in (grad, jacrev):
        close(f(lambda p: (ours(p, x) * w).sum())(params), f(lambda p: (theirs(p, x) * w).sum())(params))
    close(jacfwd(lambda a: ours(params, a))(x), jacrev(lambda a: theirs(params, a))(x))
    tp = {k: torch.randn(v.shape, generator=gen(15), dtype=D) for k, v in params.items()}
    close(jvp(lambda p: ours(p, x), (params,), (tp,))[1], jvp(lambda p: theirs(p, x), (params,), (tp,))[1])
    close(vmap(m)(x.unsqueeze(1)).squeeze(1), theirs(params, x))

    def per_sample(f):
        return vmap(grad(lambda p, a, wn: (f(p, a[None]) * wn).sum()), in_dims=(None, 0, 0))(params, x, w)

    close(per_sample(ours), per_sample(theirs))


def test_gdn_module_forward_ad_runs_the_fused_op():
    m = vnn.IGDN(4).double()
    x, t = torch.randn(2, 4, 3, 3, dtype=D), torch.randn(2, 4, 3, 3, dtype=D)
    with CountVaeisoOps() as counts, fwAD.dual_level():
        tangent = fwAD.unpack_dual(m(fwAD.make_dual(x, t))).tangent
    assert counts.calls.get("vaeiso.gdn_forward.default", 0) == 1, counts.calls
    beta, gamma = (p.detach() for p in m.effective_params())
    close(tangent, jvp(lambda a: ref.gdn(a, beta, gamma, True), (x,), (t,))[1])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_ssim_loss_under_torch_func(reduction):
    loss = vnn.SSIMLoss(reduction, **SSIM_KW)
    x, y = images(16)

    def theirs(a, b):
        out = 1 - ref.ssim(a, b, **SSIM_KW)
        return out.mean() if reduction == "mean" else out

    for f in (jacrev, jacfwd):
        close(f(loss, argnums=(0, 1))(x, y), jacrev(theirs, argnums=(0, 1))(x, y))
    if reduction == "mean":
        close(grad(loss)(x, y), grad(theirs)(x, y))
        close(
            vmap(grad(lambda a, b: loss(a[None], b[None])))(x, y),
            vmap(grad(lambda a, b: theirs(a[None], b[None])))(x, y),
        )
    close(vmap(loss, in_dims=(None, 0))(x, torch.stack([y, x])), torch.stack([theirs(x, y), theirs(x, x)]))


# ------------------------------------------------------------------------------ bce at saturation


def test_bce_gradient_at_binary_targets_equals_reference():
    """The issue's case: backward was NaN where other == base in {0, 1} (0/0); the reference
    gives dD/do = [1, -1, 0] there, first and second derivative finite."""
    base = torch.tensor([[0.0, 1.0, 0.5]], dtype=D)
    res = []
    for f in (ops.pair_distances, ref.pair_distances):
        b, o = base.clone().requires_grad_(), base.clone().unsqueeze(1).requires_grad_()
        res.append(torch.autograd.grad(f(b, o, "bce").sum(), (b, o)))
    close(res[0], res[1])
    assert res[0][1].flatten().tolist() == [1.0, -1.0, 0.0]  # exact: 1/1 - 0, 0 - 1/1, 0
    g = grad(lambda o: ops.pair_distances(base, o, "bce").sum())(base.unsqueeze(1))
    assert torch.isfinite(g).all()


# ------------------------------------------------------------------------------ devices


def test_raw_backward_on_mixed_devices_raises_naming_the_argument():
    """The wrappers' device checks (meta beside CPU, every argument) are in tests/test_op_contract.py;
    the raw kernels raise RuntimeError naming theirs."""
    x, y = images(17)
    with pytest.raises(RuntimeError, match="ssim_backward: maps: expected a tensor on cpu"):
        torch.ops.vaeiso.ssim_backward(
            torch.ones(2, 2, dtype=D), x.new_empty(0), x, y, torch.empty(2, 2, 4, 3, 4, device="meta"), 5, 1.5, False
        )


# ------------------------------------------------------------------------------ deployment


class CountVaeisoOps(TorchDispatchMode):
    """Counts the torch.ops.vaeiso calls that reach the kernels."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name.startswith("vaeiso."):
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("cls", [vnn.GDN, vnn.IGDN])
def test_export_runs_the_fused_op(cls):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), cls(4)).eval()
    x = torch.randn(2, 3, 8, 8)
    ep = torch.export.export(model, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert any(t.startswith("vaeiso.gdn") for t in targets), targets
    torch.testing.assert_close(ep.module()(x), model(x))


@pytest.mark.parametrize("simplified", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
def test_torchscript_gdn(inverse, simplified):
    m = vnn.GDN(5, inverse=inverse, simplified=simplified)
    with torch.no_grad():
        m.gamma.add_(0.1 * torch.rand(5, 5, generator=gen(19)))
    scripted = torch.jit.script(m)
    x = torch.randn(2, 5, 4, 4, generator=gen(20))
    torch.testing.assert_close(scripted(x), m(x), rtol=0, atol=0)  # the same kernel on the same input
    compressai_layers = pytest.importorskip("compressai.layers")
    theirs = compressai_layers.GDN1(5, inverse=inverse) if simplified else compressai_layers.GDN(5, inverse=inverse)
    theirs.load_state_dict(m.state_dict())
    torch.testing.assert_close(scripted(x), torch.jit.script(theirs)(x), rtol=1e-5, atol=1e-6)


def test_modules_reject_non_tensors_naming_the_argument():
    y = torch.rand(1, 1, 16, 16)
    with pytest.raises(TypeError, match="SSIMLoss: x: expected a torch.Tensor, got list"):
        vnn.SSIMLoss()(y.tolist(), y)
    with pytest.raises(TypeError, match="SSIMLoss: y: expected a torch.Tensor, got float"):
        vnn.SSIMLoss()(y, 0.5)
    with pytest.raises(TypeError, match="GDN: x: expected a torch.Tensor, got list"):
        vnn.GDN(1)(y.tolist())
    with pytest.raises(TypeError, match="IGDN: x: expected a torch.Tensor"):
        vnn.IGDN(1)(None)


def test_dj_prime_jvp_runs_the_fused_igdn():
    """analysis.dj_prime(method="jvp") on the image decoder reaches the fused IGDN (counted at
    the dispatcher) and equals the same decoder with the reference IGDN."""
    from vaeiso_ext import metrics
    from vaeiso_ext.analysis import dj_prime
    from vaeiso_ext.models import ConvVAE

    torch.manual_seed(0)
    model = ConvVAE(latent=3, channels=4, image_size=16, hidden=16).double().eval()
    z = torch.randn(2, 3, dtype=D)
    metric = metrics.SSIM(window_size=5)
    with CountVaeisoOps() as counts:
        got = dj_prime(model.decoder, z, metric, method="jvp")
    n_igdn = sum(isinstance(mod, vnn.IGDN) for mod in model.decoder.modules())
    assert counts.calls.get("vaeiso.gdn_forward.default", 0) >= n_igdn, counts.calls

    class RefIGDN(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            beta, gamma = self.m.effective_params()
            return ref.gdn(x, beta, gamma, True)

    for i, mod in enumerate(model.decoder):
        if isinstance(mod, vnn.IGDN):
            model.decoder[i] = RefIGDN(mod)
    want = dj_prime(model.decoder, z, metric, method="jvp")
    close(got, want)


# ------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("name,fn,rf,args", CASES, ids=IDS)
def test_cuda_torch_func_and_double_backward(name, fn, rf, args):
    """The same rules on the CUDA kernels (float64): jvp, jacrev, vmap, per-sample grads and a
    Hessian-vector product against the reference run on the same device."""
    args = tuple(a.cuda() for a in args)
    ts = tuple(t.cuda() for t in tangents_for(args))
    close(jvp(fn, args, ts)[1], jvp(rf, args, ts)[1])
    argnums = tuple(range(len(args)))
    close(jacrev(fn, argnums=argnums)(*args), jacrev(rf, argnums=argnums)(*args))
    bat = batched(args, 0)
    close(
        vmap(fn, in_dims=(0,) + (None,) * (len(args) - 1))(bat, *args[1:]), torch.stack([rf(b, *args[1:]) for b in bat])
    )
    w = weights_for(rf, args).cuda()
    res = []
    for f in (fn, rf):
        leaves = tuple(a.clone().requires_grad_() for a in args)
        gs = torch.autograd.grad((f(*leaves) * w).sum(), leaves, create_graph=True)
        res.append(torch.autograd.grad(sum((g * t).sum() for g, t in zip(gs, ts)), leaves))
    close(res[0], res[1])


def test_raw_custom_ops_double_backward():
    """torch.ops.vaeiso.* (the torch.compile path) share the differentiable backward."""
    x, b, g = (a.requires_grad_() for a in gdn_inputs(22))
    for inv, simp in VARIANTS:
        assert torch.autograd.gradgradcheck(lambda *a: torch.ops.vaeiso.gdn(*a, inv, simp), (x, b, g))
    u, v = (a.requires_grad_() for a in images(23))
    assert torch.autograd.gradgradcheck(lambda p, q: torch.ops.vaeiso.ssim(p, q, **SSIM_KW), (u, v))
    o = torch.stack([v.detach(), u.detach() * 0.9], 1).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda p, q: torch.ops.vaeiso.ssim_pairs(p, q, **SSIM_KW), (u, o))
    base, others, w = (a.requires_grad_() for a in distance_inputs(24))
    assert torch.autograd.gradgradcheck(
        lambda *a: torch.ops.vaeiso.pair_distances(a[0], a[1], "bce", a[2]), (base, others, w)
    )
