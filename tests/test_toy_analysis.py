"""Analysis of a small trained toy model: every quantity of docs/ops.md's analysis section within loose bounds."""

import math

import pytest
import torch

from vaeiso_ext.analysis import analyze, log_density
from vaeiso_ext.analysis.summary import correlation
from vaeiso_ext.experiments.toy import EXPERIMENT as TOY
from vaeiso_ext.experiments.toy import ToyConfig
from vaeiso_ext.metrics import by_name as metric_from_name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # lambda 50 converges in ~1,200 steps on 4,000 samples (a few seconds on one core)
    torch.set_num_threads(1)
    run = ToyConfig(dataset="mix", loss="sse", lam=50.0, epochs=40, n_train=4000, n_test=2000)
    model, data, history = TOY.fit(run, progress=False)
    res = analyze(model, data, metric_from_name("sse"), run.beta, keep_samples=True)
    return run, model, data, res


def test_per_dimension_quantities(trained):
    run, model, data, res = trained
    dims = res["dims"]
    assert res["n_active"] == 3 and all(d["active"] for d in dims)
    inv = [d["inv_sigma2_mean"] for d in dims]
    assert inv == sorted(inv, reverse=True)  # ordered by descending E[sigma^-2]
    for d in dims:
        assert 0.7 < d["norm_mean"] < 1.3, d
        # the paper's forward difference agrees with the exact jvp limit
        assert d["dj_mean"] == pytest.approx(d["dj_jvp_mean"], rel=0.02)
        assert d["norm_jvp_mean"] == pytest.approx(d["gram_diag_mean"], rel=1e-9)
        assert d["var_estimate"] == pytest.approx(run.beta / 2 * d["inv_sigma2_mean"])
    ratios = [d["inv_sigma2_ratio"] for d in dims]
    assert ratios[-1] == 1.0
    assert 2.5 < ratios[1] < 6.5 and 9 < ratios[0] < 25  # theory 4 and 16
    # (beta/2) E[sigma^-2] estimates Var(s_j) = 8/3, 2/3, 1/6 roughly
    for d, v in zip(dims, (8 / 3, 2 / 3, 1 / 6)):
        assert 0.5 * v < d["var_estimate"] < 2.0 * v


def test_isometry_gram_and_correlations(trained):
    _, _, _, res = trained
    g = res["gram"]
    assert 0.7 < g["diag_mean"] < 1.3
    assert g["offdiag_abs_mean"] < 0.3
    m = torch.tensor(g["mean_matrix"])
    assert torch.allclose(m, m.T)
    c = res["correlations"]
    assert set(c) >= {"p_mu", "exp_neg_L", "scaled_p_mu_prod_sigma", "scaled_exp_neg_L"}
    # the isometric-embedding estimates beat the prior alone (Fig. 3, Fig. 8)
    assert c["scaled_p_mu_prod_sigma"]["pearson"] > c["p_mu"]["pearson"] + 0.2
    assert c["scaled_p_mu_prod_sigma"]["pearson"] > 0.6
    assert c["scaled_p_mu_prod_sigma"]["spearman"] > 0.6
    # square error: a_x = 1, so the scaled and unscaled estimates coincide
    assert c["scaled_exp_neg_L"]["pearson"] == pytest.approx(c["exp_neg_L"]["pearson"])


def test_rate_distortion(trained):
    run, _, _, res = trained
    rd = res["rate_distortion"]
    assert rd["coding_loss"] == pytest.approx(rd["coding_loss_theory"], rel=0.3)
    assert rd["coding_loss_theory"] == pytest.approx(3 * run.beta / 2)
    assert rd["transform_coding_ratio_theory"] == pytest.approx(21 * run.beta / 16)
    assert rd["transform_coding_ratio"] < 1.0
    # Mix, SSE: H(s) = 0.5 + log(2 sqrt2) + 0.5 + log(2 sqrt3)
    assert rd["entropy_s"] == pytest.approx(1.0 + math.log(2 * math.sqrt(2)) + math.log(2 * math.sqrt(3)))
    assert abs(rd["rate"] - rd["rate_theory"]) < 1.0


def test_log_density_matches_the_analysis_estimates(trained):
    run, model, data, res = trained
    lp = log_density(model, data.x_test, metric_from_name("sse"), run.beta)
    ref = res["samples"]["scaled_p_mu_prod_sigma"]
    assert lp.shape == (data.x_test.shape[0],) and lp.dtype == torch.float64
    assert torch.allclose(lp, ref, atol=1e-9)
    elbo = log_density(model, data.x_test, metric_from_name("sse"), run.beta, method="elbo")
    assert torch.allclose(elbo, res["samples"]["scaled_exp_neg_L"], atol=1e-9)
    # a single sample works when n_active is given; the a_x factor enters with n/2
    one = log_density(model, data.x_test[:1], metric_from_name("downward"), run.beta, n_active=3)
    a = metric_from_name("downward").scale(data.x_test[:1].double())
    assert one.item() == pytest.approx(lp[0].item() + 1.5 * math.log(a.item()), abs=1e-9)
    with pytest.raises(ValueError, match="method"):
        log_density(model, data.x_test, metric_from_name("sse"), run.beta, method="nope")


def test_correlation_helper_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    t = torch.randn(500, generator=g, dtype=torch.float64)
    e = t + 0.5 * torch.randn(500, generator=g, dtype=torch.float64)
    c = correlation(e, t)
    ex, tx = torch.exp(e - e.max()), torch.exp(t - t.max())
    assert c["pearson"] == pytest.approx(stats.pearsonr(ex.numpy(), tx.numpy())[0], abs=1e-10)
    assert c["spearman"] == pytest.approx(stats.spearmanr(e.numpy(), t.numpy())[0], abs=1e-10)
    # -inf (zero true density) entries are dropped, not propagated as NaN
    t2 = t.clone()
    t2[0] = -math.inf
    assert math.isfinite(correlation(e, t2)["pearson"])


def test_plain_tensor_data_skips_density_quantities(trained):
    run, model, data, _ = trained
    res = analyze(model, data.x_test[:300], metric_from_name("upward"), run.beta, n_samples=200)
    assert res["n_samples"] == 200 and res["correlations"] == {}
    assert "rate_theory" not in res["rate_distortion"] and len(res["dims"]) == 3
