"""nn.GDN's non-negative reparametrisation as one autograd node gives the bits of the chain it
replaced (LowerBound, then the square, then the pedestal subtracted): values, gradients, second
derivatives (through the straight-through bound), forward-mode derivatives and vmap, with stored
values on both sides of the bound."""

import pytest
import torch

from vaeiso_ext import nn as vnn


def _chain(r, p):
    return r.lower_bound(p) ** 2 - r.pedestal.to(p.dtype)


@pytest.mark.parametrize("which", ["beta", "gamma"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reparam_node_matches_the_chain(which, dtype):
    g = torch.Generator().manual_seed(21)
    m = vnn.GDN(7).to(dtype)
    r = m.beta_reparam if which == "beta" else m.gamma_reparam
    p = getattr(m, which)
    with torch.no_grad():  # half below the bound, half above
        p.copy_(
            torch.where(
                torch.rand(p.shape, generator=g) < 0.5, torch.zeros(p.shape), torch.rand(p.shape, generator=g)
            ).to(dtype)
        )
    bound = r.lower_bound.bound.item()
    assert (p < bound).any() and (p > bound).any()
    got, want = r(p), _chain(r, p)
    assert torch.equal(got, want)
    for sign in (1.0, -1.0):  # a gradient pushing up passes below the bound, one pushing down not
        gy = sign * torch.rand(p.shape, generator=g).to(dtype)
        ga = torch.autograd.grad(r(p), p, gy, create_graph=True)[0]
        gb = torch.autograd.grad(_chain(r, p), p, gy, create_graph=True)[0]
        assert torch.equal(ga, gb)
        assert torch.equal(torch.autograd.grad(r(p), p, gy)[0], gb)  # the plain backward's path
        v = torch.randn(p.shape, generator=g).to(dtype)
        assert torch.equal(torch.autograd.grad(ga, p, v)[0], torch.autograd.grad(gb, p, v)[0])
    t = torch.randn(p.shape, generator=g).to(dtype)
    q = p.detach()
    assert torch.equal(torch.func.jvp(r, (q,), (t,))[1], torch.func.jvp(lambda a: _chain(r, a), (q,), (t,))[1])
    batch = torch.stack([q, q.flip(0), 2 * q])
    assert torch.equal(torch.func.vmap(r)(batch), torch.stack([_chain(r, b) for b in batch]).detach())


def test_module_gradients_unchanged_in_all_params():
    """The module's parameter gradients through the new node equal those through the chain."""
    g = torch.Generator().manual_seed(22)
    m = vnn.IGDN(6).double()
    with torch.no_grad():
        m.gamma.add_(0.05 * torch.randn(6, 6, generator=g, dtype=torch.float64))
    x = torch.randn(2, 6, 5, 5, generator=g, dtype=torch.float64)
    gy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(m(x), (m.beta, m.gamma), gy)
    from vaeiso_ext import ops

    beta, gamma = _chain(m.beta_reparam, m.beta), _chain(m.gamma_reparam, m.gamma)
    want = torch.autograd.grad(ops.gdn(x, beta, gamma, True), (m.beta, m.gamma), gy)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
