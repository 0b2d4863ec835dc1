"""The analysis's model protocol (docs/analysis.md) on VAEs written here, not from vaeiso_ext.models:
each posterior parametrisation gives the log-variance form's analysis, every malformed model its
message, spatial latents their flattened analysis, the caller's model is left as it was, and
every analysis function reads its metric argument the same way."""

import math

import pytest
import torch
from torch import nn

from vaeiso_ext import metrics
from vaeiso_ext.analysis import (
    POSTERIORS,
    VAEAdapter,
    analyze,
    analyze_latents,
    dj_prime,
    fit_stats,
    isometry_gram,
    log_density,
)

D, N_LAT = 6, 3


class UserVAE(nn.Module):
    """A researcher's VAE: a linear decoder behind dropout (identity in eval mode), an encoder
    returning (mu, s) with s in the parametrisation ``posterior``."""

    def __init__(self, posterior: str = "logvar", seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.enc = nn.Linear(D, 2 * N_LAT)
        self.dec = nn.Linear(N_LAT, D)
        self.drop = nn.Dropout(0.5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
        self.posterior = posterior

    def encode(self, x):
        h = self.enc(x)
        mu, logvar = h[:, :N_LAT], h[:, N_LAT:] - 2.0  # sigma^2 well below 1
        s = {"logvar": logvar, "log_sigma": 0.5 * logvar, "sigma": torch.exp(0.5 * logvar), "var": torch.exp(logvar)}[
            self.posterior
        ]
        return mu, s

    def decode(self, z):
        return self.dec(self.drop(z))


def _x(n=40, seed=1):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _adapter(model, posterior=None):
    return VAEAdapter(model.encode, model.decode, posterior=posterior or model.posterior)


def _norms(res):
    return {d["index"]: (d["norm_mean"], d["kl"], d["inv_sigma2_mean"], d["dj_mean"]) for d in res["dims"]}


# ------------------------------------------------------------------ parametrisations


@pytest.mark.parametrize("posterior", sorted(POSTERIORS))
def test_each_parametrisation_gives_the_log_variance_analysis(posterior):
    x = _x()
    ref = analyze_latents(_adapter(UserVAE("logvar")), x, metrics.SSE(), 0.1)
    got = analyze_latents(_adapter(UserVAE(posterior)), x, metrics.SSE(), 0.1)
    want, have = _norms(ref), _norms(got)
    assert want.keys() == have.keys()
    for j in want:
        torch.testing.assert_close(torch.tensor(have[j]), torch.tensor(want[j]), rtol=1e-12, atol=0)
    assert got["posterior"] == posterior and got["gram"]["diag_mean"] == pytest.approx(
        ref["gram"]["diag_mean"], rel=1e-12
    )


def test_log_variance_norms_equal_the_closed_form():
    # linear decoder, square error: D'_j = ||W e_j||^2 exactly, so the norm's mean over x is
    # (2 / beta) mean_x(sigma_j^2) ||W_j||^2; an oracle independent of dj_prime and the adapter
    m, x, beta = UserVAE("logvar"), _x(), 0.1
    res = analyze_latents(_adapter(m), x, "sse", beta)
    with torch.no_grad():
        _, logvar = m.encode(x.double().float())
        w2 = (m.dec.weight.double() ** 2).sum(0)
        m.double()
        s2 = m.encode(x.double())[1].exp()
    want = (2.0 / beta) * s2.mean(0) * w2
    for d in res["dims"]:
        assert d["norm_mean"] == pytest.approx(want[d["index"]].item(), rel=1e-6)
        assert d["dj_mean"] == pytest.approx(w2[d["index"]].item(), rel=1e-6)


# ------------------------------------------------------------------ malformed models


class Returns(nn.Module):
    """A VAE whose encoder and decoder return what the test says."""

    def __init__(self, enc, dec=None):
        super().__init__()
        self.lin = nn.Linear(D, N_LAT)
        self.enc, self.dec = enc, dec or (lambda z: torch.zeros(z.shape[0], D, dtype=z.dtype))

    def encode(self, x):
        return self.enc(self.lin(x))

    def decode(self, z):
        return self.dec(z)


MALFORMED = [
    ("three_outputs", lambda h: (h, h, h), None, "logvar", TypeError, r"two tensors.*tuple of 3"),
    ("one_tensor", lambda h: h, None, "logvar", TypeError, r"two tensors.*Tensor of shape"),
    ("shapes_differ", lambda h: (h, h[:, :2]), None, "logvar", ValueError, r"one shape"),
    ("integer_s", lambda h: (h, h.long()), None, "logvar", TypeError, r"floating-point"),
    ("negative_sigma", lambda h: (h, h - 10.0), None, "sigma", ValueError, r"sigma finite and > 0.*'sigma'"),
    ("zero_variance", lambda h: (h, torch.zeros_like(h)), None, "var", ValueError, r"sigma finite and > 0"),
    ("infinite_logvar", lambda h: (h, h + math.inf), None, "logvar", ValueError, r"sigma finite and > 0"),
    ("nan_mu", lambda h: (h * math.nan, h), None, "logvar", ValueError, r"mu is not finite"),
    ("decoder_tuple", lambda h: (h, h), lambda z: (z, z), "logvar", TypeError, r"decode\(z\) to return a tensor"),
    (
        "decoder_shape",
        lambda h: (h, h),
        lambda z: torch.zeros(z.shape[0], D + 1, dtype=z.dtype),
        "logvar",
        ValueError,
        r"data's shape",
    ),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_each_malformed_model_gets_its_message(case):
    _, enc, dec, posterior, exc, pattern = case
    m = Returns(enc, dec)
    with pytest.raises(exc, match=r"^analyze_latents: model: .*" + pattern):
        analyze_latents(VAEAdapter(m.encode, m.decode, posterior=posterior), _x(), "sse", 0.1)


def test_decoder_output_must_suit_the_metric():
    m = Returns(lambda h: (h, h), lambda z: 2.0 + torch.zeros(z.shape[0], D, dtype=z.dtype))
    with pytest.raises(ValueError, match=r"^analyze_latents: the decoder's output .*BCE metric takes probabilities"):
        analyze_latents(VAEAdapter(m.encode, m.decode, posterior="logvar"), _x().sigmoid(), "bce", 0.1)


def test_undeclared_models_are_refused_not_guessed():
    # a model with encode/decode whose convention is not stated: (mu, logvar) and (mu, sigma) look alike
    with pytest.raises(
        TypeError,
        match=r"^analyze_latents: model: expected a vaeiso_ext.analysis.VAEAdapter.*"
        r"UserVAE.*posterior=",
    ):
        analyze_latents(UserVAE(), _x(), "sse", 0.1)
    with pytest.raises(TypeError, match=r"^fit_stats: model: .*Linear"):  # forward only: no encode
        fit_stats(nn.Linear(D, D), _x(), "sse")


def test_adapter_arguments_are_checked():
    m = UserVAE()
    with pytest.raises(ValueError, match=r"^VAEAdapter: posterior: expected one of .*'logvar'.*got 'logsigma'"):
        VAEAdapter(m.encode, m.decode, posterior="logsigma")
    with pytest.raises(TypeError, match=r"^VAEAdapter: encode: expected a callable"):
        VAEAdapter(None, m.decode, posterior="logvar")
    with pytest.raises(TypeError, match=r"^VAEAdapter: modules: encode is neither an nn.Module"):
        VAEAdapter(lambda x: m.encode(x), m.decode, posterior="logvar")
    # a lambda is fine once its modules are named
    a = VAEAdapter(lambda x: m.encode(x), m.decode, posterior="logvar", modules=m)
    assert a.modules == (m,)


def test_three_output_model_through_the_adapter_equals_the_two_output_one():
    # the (z, mu, logvar) convention, adapted as docs/analysis.md shows
    m = UserVAE("logvar")
    x = _x()
    ref = analyze_latents(_adapter(m), x, "sse", 0.1, gram=False)
    adapted = VAEAdapter(lambda x: (torch.zeros(1),) + tuple(m.encode(x)), m.decode, posterior="logvar", modules=m)
    with pytest.raises(TypeError, match="tuple of 3"):
        analyze_latents(adapted, x, "sse", 0.1)
    fixed = VAEAdapter(lambda x: adapted.encode(x)[1:], m.decode, posterior="logvar", modules=m)
    assert _norms(analyze_latents(fixed, x, "sse", 0.1, gram=False)) == _norms(ref)


# ------------------------------------------------------------------ spatial latents


class ConvLatentVAE(nn.Module):
    """A latent of shape (C, h, w) = (2, 2, 3): a 1x1-conv encoder and decoder on (N, 1, 2, 3)
    "images" of 4 channels."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.enc = nn.Conv2d(4, 4, 1)
        self.dec = nn.Conv2d(2, 4, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))

    def encode(self, x):
        h = self.enc(x)
        return h[:, :2], h[:, 2:] - 2.0

    def decode(self, z):
        return torch.tanh(self.dec(z))


def test_spatial_latent_is_the_flattened_one_with_positions_and_channels():
    m = ConvLatentVAE()
    x = torch.randn(30, 4, 2, 3, generator=torch.Generator().manual_seed(4))
    res = analyze_latents(VAEAdapter(m.encode, m.decode, posterior="logvar"), x, "sse", 0.1)
    # the same model with the latent flattened by hand: the oracle for the flattened analysis
    flat = VAEAdapter(
        lambda x: tuple(t.flatten(1) for t in m.encode(x)),
        lambda z: m.decode(z.reshape(-1, 2, 2, 3)),
        posterior="logvar",
        modules=m,
    )
    ref = analyze_latents(flat, x, "sse", 0.1)
    assert res["latent_shape"] == [2, 2, 3] and len(res["dims"]) == 12
    assert _norms(res) == _norms(ref) and res["gram"] == ref["gram"]
    for d in res["dims"]:
        c, i, j = d["position"]
        assert d["index"] == c * 6 + i * 3 + j
        assert res["maps"]["norm_mean"][c][i][j] == d["norm_mean"]
        assert res["maps"]["kl"][c][i][j] == d["kl"]
    for ch in res["channels"]:
        mine = [d for d in res["dims"] if d["position"][0] == ch["channel"]]
        assert ch["dims"] == 6 and ch["active_dims"] == sum(d["active"] for d in mine)
        assert ch["kl_sum"] == pytest.approx(sum(d["kl"] for d in mine), rel=1e-12)
        act = [d["norm_mean"] for d in mine if d["active"]]
        if act:
            assert ch["norm_active"]["mean"] == pytest.approx(sum(act) / len(act), rel=1e-12)
    assert "position" not in ref["dims"][0] and "channels" not in ref


# ------------------------------------------------------------------ the caller's model


def _state(m):
    return (
        [(n, s.training) for n, s in m.named_modules()],
        [(n, p.requires_grad, p.dtype, p.data_ptr(), p.detach().clone()) for n, p in m.named_parameters()],
    )


def _same_state(a, b):
    assert a[0] == b[0]
    for (n1, r1, d1, ptr1, v1), (n2, r2, d2, ptr2, v2) in zip(a[1], b[1]):
        assert (n1, r1, d1, ptr1) == (n2, r2, d2, ptr2)
        assert torch.equal(v1, v2)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_callers_model_is_left_as_it_was(mode):
    m = UserVAE()
    m.train(mode == "train")
    m.drop.train(True)  # a mixed state survives too
    m.enc.weight.requires_grad_(False)
    m.dec.weight.grad = torch.ones_like(m.dec.weight)
    before = _state(m)
    a, x = _adapter(m), _x()
    res = analyze_latents(a, x, "sse", 0.1)  # float64 by default: the float32 model is cast and restored
    assert "eval mode" in res["model_mode"]
    _same_state(before, _state(m))
    fit_stats(a, x, "sse")
    _same_state(before, _state(m))
    analyze(a, x, "sse", 0.1, mc_samples=2)
    _same_state(before, _state(m))
    log_density(a, x, "sse", 0.1)
    _same_state(before, _state(m))
    dj_prime(m.decode, x[:, :N_LAT], "sse")
    isometry_gram(m.dec, x[:, :N_LAT], torch.ones(40, N_LAT), "sse", 0.1)
    _same_state(before, _state(m))
    assert torch.equal(m.dec.weight.grad, torch.ones_like(m.dec.weight))
    # ... also after an analysis that failed half-way
    with pytest.raises(ValueError):
        analyze_latents(VAEAdapter(m.encode, m.decode, posterior="sigma", modules=m), x, "sse", 0.1)
    _same_state(before, _state(m))


@pytest.mark.parametrize("method", ["forward", "central", "jvp"])
def test_training_mode_dropout_cannot_leak_into_dj(method):
    m = UserVAE()
    m.train()
    z = torch.randn(20, N_LAT, generator=torch.Generator().manual_seed(5))
    # the oracle: D'_j of a linear decoder under square error is ||W e_j||^2
    want = (m.dec.weight**2).sum(0).expand(20, N_LAT)
    for decoder in (m.decode, m):  # a bound method of the module, and a module (m.forward is not defined)
        if decoder is m:
            decoder = nn.Sequential(m.drop, m.dec).train()
        a = dj_prime(decoder, z, "sse", method=method)
        b = dj_prime(decoder, z, "sse", method=method)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, want.detach(), rtol=2e-3 if method != "jvp" else 1e-5, atol=1e-6)
    assert m.training and m.drop.training


# ------------------------------------------------------------------ metrics


def test_metric_by_name_equals_the_object():
    a, x = _adapter(UserVAE()), _x()
    assert _norms(analyze_latents(a, x, "sse", 0.1)) == _norms(analyze_latents(a, x, metrics.SSE(), 0.1))
    z = x[:, :N_LAT]
    torch.testing.assert_close(
        dj_prime(a.decode, z, "downward"), dj_prime(a.decode, z, metrics.DownwardConvex()), rtol=0, atol=0
    )


FUNCTIONS = {
    "analyze_latents": lambda a, x, metric: analyze_latents(a, x, metric, 0.1),
    "fit_stats": lambda a, x, metric: fit_stats(a, x, metric),
    "analyze": lambda a, x, metric: analyze(a, x, metric, 0.1),
    "log_density": lambda a, x, metric: log_density(a, x, metric, 0.1),
    "dj_prime": lambda a, x, metric: dj_prime(a.decode, x[:, :N_LAT], metric),
    "isometry_gram": lambda a, x, metric: isometry_gram(a.decode, x[:, :N_LAT], torch.ones(40, N_LAT), metric, 0.1),
}


@pytest.mark.parametrize("fn", list(FUNCTIONS))
@pytest.mark.parametrize(
    "bad, exc, pattern",
    [
        (metrics.SSE, TypeError, r"got the class SSE: pass SSE\(\) or 'sse'"),
        (object(), TypeError, r"one of the names \('sse'"),
        (None, TypeError, r"one of the names \('sse'"),
        ("l2", ValueError, r"one of the names \('sse'.*got 'l2'"),
    ],
)
def test_every_analysis_function_reads_its_metric_the_same_way(fn, bad, exc, pattern):
    with pytest.raises(exc, match=rf"^{fn}: metric: .*{pattern}"):
        FUNCTIONS[fn](_adapter(UserVAE()), _x(), bad)


@pytest.mark.parametrize("metric", ["bce", metrics.BCE()])
def test_density_estimates_say_which_metrics_they_support(metric):
    m = UserVAE()
    a = VAEAdapter(lambda x: m.encode(x), lambda z: torch.sigmoid(m.decode(z)), posterior="logvar", modules=m)
    x = torch.rand(40, D, generator=torch.Generator().manual_seed(6))
    with pytest.raises(ValueError, match=r"^log_density: metric: .*G_x = a_x I.*BCE has no scalar metric tensor"):
        log_density(a, x, metric, 0.1)
    res = analyze(a, x, metric, 0.1, mc_samples=2)
    assert "BCE has no scalar metric tensor" in res["density_note"]
    assert res["correlations"] == {} and "entropy_y" not in res["rate_distortion"]
    res = analyze(a, x, metric, 0.1, mc_samples=2, keep_samples=True)
    assert set(res["samples"]) == {"log_p_true", "p_mu", "exp_neg_L", "p_mu_prod_sigma"}


@pytest.mark.parametrize(
    "fn, call",
    [
        ("analyze_latents", lambda a, x: analyze_latents(a, x, "sse", 0)),
        ("analyze_latents", lambda a, x: analyze_latents(a, x, "sse", 0.1, eps=-1)),
        ("analyze_latents", lambda a, x: analyze_latents(a, x, "sse", 0.1, method="backward")),
        ("analyze", lambda a, x: analyze(a, x, "sse", math.nan)),
        ("log_density", lambda a, x: log_density(a, x, "sse", -2.0)),
        ("log_density", lambda a, x: log_density(a, x, "sse", 0.1, method="exact")),
    ],
)
def test_errors_name_the_function_called(fn, call):
    with pytest.raises(ValueError, match=rf"^{fn}: (beta|eps|method): "):
        call(_adapter(UserVAE()), _x())


def test_bce_metric_refuses_values_outside_the_unit_interval():
    x = torch.rand(3, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^BCE.distance: x: .*in \[0, 1\], got values in \[1"):
        metrics.BCE().distance(x + 1.0, x)
    with pytest.raises(ValueError, match=r"^BCE.distance: y: "):
        metrics.BCE().distance(x, x - 1.0)
    with pytest.raises(ValueError, match=r"^BCE.pairs: base: "):
        metrics.BCE().pairs(-x, x.unsqueeze(1))
    with pytest.raises(ValueError, match=r"^BCE.distance: x: .*nan"):
        metrics.BCE().distance(x * math.nan, x)
    # inside [0, 1] (0 and 1 included for the target) the value is the Bernoulli KL
    t = torch.tensor([[0.0, 1.0, 0.3]], dtype=torch.float64)
    p = torch.tensor([[0.2, 0.9, 0.3]], dtype=torch.float64)
    want = -math.log(0.8) - math.log(0.9)
    assert metrics.BCE().distance(t, p).item() == pytest.approx(want, rel=1e-12)


def test_the_example_of_the_docs_runs_and_leaves_the_model_as_it_was():
    # docs/analysis.md's example, run as written, on a model that is not ours; its log-sigma
    # encoder read through the adapter gives the analysis of the same model read as log-variance
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "analysis.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class TutorialVAE" in b)
    env = {"x_heldout": torch.randn(24, 16, generator=torch.Generator().manual_seed(8))}
    exec(compile(block.replace("print(", "(lambda *a: a)("), "docs/analysis.md", "exec"), env)
    model, res = env["model"], env["res"]
    assert model.training and len(res["dims"]) == 3 and "eval mode" in res["model_mode"]
    as_logvar = VAEAdapter(
        lambda x: (model.body(x).chunk(2, dim=1)[0], 2 * model.body(x).chunk(2, dim=1)[1]),
        model.dec,
        posterior="logvar",
        modules=model,
    )
    want = analyze_latents(as_logvar, env["x_heldout"], "sse", beta=0.01)
    for a, b in zip(_norms(res).values(), _norms(want).values()):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-12, atol=0)
