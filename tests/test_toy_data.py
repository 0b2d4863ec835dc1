"""Toy data: exact densities integrate to 1, the samplers match them, the data are seeded."""

import math

import pytest
import torch

from vaeiso_ext.data import TOY_DATASETS, make_toy, toy_components

scipy_stats = pytest.importorskip("scipy.stats")


def _grid(c, n=200_001):
    lo, hi = c.support
    if not math.isfinite(lo):
        sd = math.sqrt(c.variance)
        lo, hi = -12 * sd, 12 * sd
    return torch.linspace(lo, hi, n, dtype=torch.float64)


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_densities_integrate_to_one_with_stated_moments(name):
    for c, var in zip(toy_components(name), (1 / 6, 2 / 3, 8 / 3)):
        s = _grid(c)
        p = c.pdf(s)
        assert torch.trapezoid(p, s).item() == pytest.approx(1.0, abs=1e-6), c
        assert torch.trapezoid(s * p, s).item() == pytest.approx(0.0, abs=1e-6), c
        assert torch.trapezoid(s * s * p, s).item() == pytest.approx(var, rel=1e-5), c
        assert c.variance == pytest.approx(var)
        # closed-form entropy against -int p log p
        lp = torch.where(p > 0, c.log_pdf(s), torch.zeros_like(s))
        assert -torch.trapezoid(p * lp, s).item() == pytest.approx(c.entropy, abs=1e-4), c
        # cdf is the integral of the pdf
        cdf_num = torch.cumulative_trapezoid(p, s)
        assert torch.allclose(cdf_num[::1000], c.cdf(s[1:])[::1000] - c.cdf(s[:1]), atol=1e-6)
        # outside the support the density is zero
        lo, hi = c.support
        if math.isfinite(lo):
            out = torch.tensor([lo - 1e-3, hi + 1e-3], dtype=torch.float64)
            assert torch.all(c.pdf(out) == 0) and torch.all(torch.isinf(c.log_pdf(out)))


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_sampler_matches_density(name):
    data = make_toy(name, n_train=20_000, n_test=100, seed=3)
    for i, c in enumerate(data.components):
        s = data.s_train[:, i].numpy()
        res = scipy_stats.kstest(s, lambda v: c.cdf(torch.as_tensor(v)).numpy())
        assert res.pvalue > 1e-3, (name, c, res)


def test_mix_entropy_matches_the_spec_example():
    data = make_toy("mix", n_train=10, n_test=10)
    assert [round(c.entropy, 3) for c in data.components] == [0.5, 1.040, 1.742]


def test_seeded_orthonormal_and_exact_log_prob():
    a = make_toy("mix", n_train=2000, n_test=500, seed=1)
    b = make_toy("mix", n_train=2000, n_test=500, seed=1)
    c = make_toy("mix", n_train=2000, n_test=500, seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (2000, 16) and a.x_train.dtype == torch.float32
    assert torch.allclose(a.basis.T @ a.basis, torch.eye(3, dtype=torch.float64), atol=1e-12)
    # held-out data are different draws from the same distribution
    assert not torch.equal(a.x_train[:500], a.x_test)
    # log p(x) from x (float32) agrees with the exact one from the sources away from the edges
    lp = a.log_prob(a.x_test)
    ok = torch.isfinite(lp) & (a.logp_test > -8)
    assert ok.float().mean() > 0.95
    assert torch.allclose(lp[ok], a.logp_test[ok], atol=1e-3)
    assert torch.allclose(a.sources(a.x_test), a.s_test, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dataset"):
        make_toy("moons")
    with pytest.raises(ValueError, match="n_train"):
        make_toy("mix", n_train=0)
