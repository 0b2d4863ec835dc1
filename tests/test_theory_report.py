"""What the theory predicts, reported: 1 - sigma_j^2 beside the norm, the ratio norm / (1 - sigma_j^2),
the informative rule E[sigma^-2] >= threshold, and the training vs held-out fit. The oracle is a
VAE whose sigma and D'_j are known in closed form: a linear encoder with a chosen log-variance per
dim and a linear decoder Dec(z) = A z with square error, so D'_j = ||A e_j||^2 exactly and
E_eps D(x, Dec(mu + sigma eps)) = ||x - A mu||^2 + sum_j sigma_j^2 ||A e_j||^2."""

import json
import math

import pytest
import torch
from torch import nn

from vaeiso_ext import metrics
from vaeiso_ext.analysis import VAEAdapter, analyze, analyze_latents
from vaeiso_ext.analysis.latents import INFORMATIVE_THRESHOLD, RATIO_FLOOR, fit_stats

BETA = 0.02
# the per-dim latent variances: two informative (1/sigma^2 >= 10), one between (3.3), one whose
# 1 - sigma^2 is below the ratio floor, one with sigma^2 > 1; dim 2 also varies with x so that some
# of its samples fall below the floor and others not
SIGMA2 = [0.01, 0.05, 0.3, 0.95, 1.5]
VARYING_DIM, VARYING_SLOPE = 2, 1.2


class LinearVAE(nn.Module):
    """mu = W x; log sigma^2 = c + v * x_0 (v zero but in one dim); Dec(z) = A z."""

    def __init__(self, x_dim=4, out=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = len(SIGMA2)
        self.latent = n
        self.enc = nn.Linear(x_dim, n, bias=False).double()
        self.decoder = nn.Linear(n, out, bias=False).double()
        with torch.no_grad():
            self.enc.weight.copy_(torch.randn(n, x_dim, generator=g, dtype=torch.float64))
            A = torch.randn(out, n, generator=g, dtype=torch.float64)
            # dim 0 exactly at the sigma optimum: (2/beta) sigma^2 ||A e_0||^2 = 1 - sigma^2
            A[:, 0] *= math.sqrt(BETA * (1 - SIGMA2[0]) / (2 * SIGMA2[0])) / A[:, 0].norm()
            self.decoder.weight.copy_(A)
        self.c = nn.Parameter(torch.log(torch.tensor(SIGMA2, dtype=torch.float64)))
        v = torch.zeros(n, dtype=torch.float64)
        v[VARYING_DIM] = VARYING_SLOPE
        self.register_buffer("v", v)

    def encode(self, x):
        return self.enc(x), self.c + x[:, :1] * self.v

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        mu, lv = self.encode(x)
        return self.decode(mu), mu, lv, mu


def _vae(model):
    """A model written here, not from vaeiso_ext.models: its convention said explicitly."""
    return VAEAdapter(model.encode, model.decode, posterior="logvar")


def samples(n=300, seed=1):
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def closed_form(model, x, threshold=INFORMATIVE_THRESHOLD, floor=RATIO_FLOOR):
    """Per-sample sigma^2, norm and per-dim expected statistics, computed without the analysis."""
    with torch.no_grad():
        mu = x @ model.enc.weight.T
        logvar = model.c + x[:, :1] * model.v
        s2 = logvar.exp()
        dj = (model.decoder.weight**2).sum(0)  # ||A e_j||^2
        norm = (2 / BETA) * s2 * dj
    om = 1 - s2
    dims = []
    for j in range(s2.shape[1]):
        keep = om[:, j] >= floor
        r = norm[keep, j] / om[keep, j]
        dims.append(
            {
                "dj": dj[j].item(),
                "norm_mean": norm[:, j].mean().item(),
                "one_minus": om[:, j].mean().item(),
                "skipped": int((~keep).sum()),
                "ratio_mean": r.mean().item() if keep.any() else None,
                "ratio_sd": r.std(unbiased=False).item() if keep.any() else None,
                "ratio_of_means": norm[:, j].mean().item() / om[:, j].mean().item()
                if om[:, j].mean() >= floor
                else None,
                "informative": (1 / s2[:, j]).mean().item() >= threshold,
                "kl": (0.5 * (mu[:, j] ** 2 + s2[:, j] - logvar[:, j] - 1)).mean().item(),
            }
        )
    return dims


def approx_or_none(got, want, rel=1e-9, abs_tol=1e-12):
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want, rel=rel, abs=abs_tol)


def check_dims(res_dims, want, informative_key=True):
    for d in res_dims:
        w = want[d["index"]]
        assert d["dj_mean"] == pytest.approx(w["dj"], rel=1e-7)  # forward difference of a linear map
        assert d["norm_mean"] == pytest.approx(w["norm_mean"], rel=1e-7)
        assert d["kl"] == pytest.approx(w["kl"], rel=1e-9)
        assert d["one_minus_sigma2_mean"] == pytest.approx(w["one_minus"], rel=1e-9, abs=1e-12)
        assert d["norm_ratio_skipped"] == w["skipped"]
        approx_or_none(d["norm_ratio_mean"], w["ratio_mean"], rel=1e-7)
        # the forward difference's rounding (~1e-13 relative per sample) is the SD of a constant
        approx_or_none(d["norm_ratio_sd"], w["ratio_sd"], rel=1e-6, abs_tol=1e-7 * abs(w["ratio_mean"] or 0.0))
        approx_or_none(d["norm_ratio_of_means"], w["ratio_of_means"], rel=1e-7)
        assert d["informative"] is w["informative"]


def test_analyze_latents_against_the_closed_form():
    model, x = LinearVAE(), samples()
    res = analyze_latents(_vae(model), x, metrics.SSE(), BETA)
    want = closed_form(model, x)
    check_dims(res["dims"], want)
    # the set-up covers every case of the ratio: all kept, some skipped, all skipped
    skipped = [w["skipped"] for w in want]
    assert skipped[0] == 0 and 0 < skipped[VARYING_DIM] < x.shape[0] and skipped[3] == skipped[4] == x.shape[0]
    # at the sigma optimum the norm is 1 - sigma^2, not 1: the ratio is 1
    d0 = next(d for d in res["dims"] if d["index"] == 0)
    assert d0["norm_ratio_mean"] == pytest.approx(1.0, rel=1e-7)
    assert d0["norm_mean"] == pytest.approx(1 - SIGMA2[0], rel=1e-7)
    # across the informative dims
    inf = [w for w in want if w["informative"]]
    assert res["informative_threshold"] == INFORMATIVE_THRESHOLD and res["ratio_floor"] == RATIO_FLOOR
    assert res["informative_dims"] == len(inf) == sum(d["informative"] for d in res["dims"])
    nm = torch.tensor([w["norm_mean"] for w in inf], dtype=torch.float64)
    assert res["norm_informative"]["mean"] == pytest.approx(nm.mean().item(), rel=1e-7)
    assert res["norm_informative"]["sd"] == pytest.approx(nm.std(unbiased=False).item(), rel=1e-6)
    rm = torch.tensor([w["ratio_mean"] for w in inf], dtype=torch.float64)
    assert res["norm_ratio_informative"]["mean"] == pytest.approx(rm.mean().item(), rel=1e-7)
    # the KL rule is kept beside it, as before
    act = [w["kl"] >= res["kl_threshold"] for w in want]
    assert res["active_dims"] == sum(act)
    assert all(d["active"] is act[d["index"]] for d in res["dims"])
    am = torch.tensor([w["norm_mean"] for w, a in zip(want, act) if a], dtype=torch.float64)
    assert res["norm_active"]["mean"] == pytest.approx(am.mean().item(), rel=1e-7)


def test_informative_threshold_and_ratio_floor_are_parameters():
    model, x = LinearVAE(), samples()
    # a threshold between the E[sigma^-2] of dims 2 and 3 (closed form: mean of exp(-log sigma^2))
    inv = [(1 / torch.exp(model.c[j] + x[:, 0] * model.v[j])).mean().item() for j in range(5)]
    t = math.sqrt(inv[2] * inv[3])
    floor = 0.02
    res = analyze_latents(_vae(model), x, metrics.SSE(), BETA, informative_threshold=t, ratio_floor=floor, gram=False)
    want = closed_form(model, x, threshold=t, floor=floor)
    check_dims(res["dims"], want)
    assert res["informative_dims"] == 3 and res["informative_threshold"] == t
    assert want[3]["skipped"] == 0  # 1 - 0.95 is above this floor
    # no informative dim at all: the summaries are None, not NaN
    none = analyze_latents(_vae(model), x, metrics.SSE(), BETA, informative_threshold=max(inv) * 2, gram=False)
    assert none["informative_dims"] == 0
    assert none["norm_informative"] == {"mean": None, "sd": None} == none["norm_ratio_informative"]


def test_bad_thresholds_are_refused():
    model, x = LinearVAE(), samples(8)
    for kw, msg in (
        ({"informative_threshold": 0.0}, "informative_threshold"),
        ({"informative_threshold": float("nan")}, "informative_threshold"),
        ({"ratio_floor": 0.0}, "ratio_floor"),
        ({"ratio_floor": 1.0}, "ratio_floor"),
    ):
        with pytest.raises(ValueError, match=f"analyze_latents: {msg}"):
            analyze_latents(_vae(model), x, metrics.SSE(), BETA, **kw)
        with pytest.raises(ValueError, match=f"analyze: {msg}"):
            analyze(_vae(model), x, metrics.SSE(), BETA, **kw)
    with pytest.raises(TypeError, match="analyze_latents: ratio_floor: expected a number, got str"):
        analyze_latents(_vae(model), x, metrics.SSE(), BETA, ratio_floor="0.1")


def test_toy_analysis_reports_the_same_quantities():
    model, x = LinearVAE(), samples()
    res = analyze(_vae(model), x, metrics.SSE(), BETA, mc_samples=1)
    check_dims(res["dims"], closed_form(model, x))
    lat = analyze_latents(_vae(model), x, metrics.SSE(), BETA, gram=False)
    for k in ("informative_dims", "informative_threshold", "ratio_floor"):
        assert res[k] == lat[k]
    for k in ("norm_informative", "norm_ratio_informative", "norm_active"):
        assert res[k]["mean"] == pytest.approx(lat[k]["mean"], rel=1e-9)


def test_fit_stats_against_the_closed_form():
    model, x = LinearVAE(), samples(2000, seed=3)
    f = fit_stats(_vae(model), x, metrics.SSE(), seed=5, chunk=128)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        A = model.decoder.weight
        B = A * logvar.exp().sqrt()[:, None, :]  # (N, out, n): A diag(sigma(x))
        r = x - mu @ A.T
        d_mu = (r**2).sum(1)
        expect = d_mu + (B**2).sum((1, 2))
        # Var_eps ||r - B eps||^2 = 4 ||B^T r||^2 + 2 ||B^T B||_F^2 (Gaussian moments)
        btr = torch.einsum("noj,no->nj", B, r)
        btb = torch.einsum("noj,nok->njk", B, B)
        var = 4 * (btr**2).sum(1) + 2 * (btb**2).sum((1, 2))
        kl = (0.5 * (mu**2 + logvar.exp() - logvar - 1)).sum(1)
    sd_of_mean = var.sum().sqrt().item() / x.shape[0]
    assert f["n_samples"] == x.shape[0]
    assert (expect - d_mu).mean().item() > 20 * sd_of_mean  # the check below sees the noise term
    assert abs(f["distortion_sampled"] - expect.mean().item()) < 5 * sd_of_mean
    assert f["distortion_mu"] == pytest.approx(d_mu.mean().item(), rel=1e-10)
    assert f["kl_total"] == pytest.approx(kl.mean().item(), rel=1e-10)
    # the noise is drawn for all samples at once: the chunking changes only rounding
    g = fit_stats(_vae(model), x, metrics.SSE(), seed=5, chunk=7)
    for k in ("distortion_sampled", "distortion_mu", "kl_total"):
        assert g[k] == pytest.approx(f[k], rel=1e-10)
    # another seed, other noise
    assert fit_stats(_vae(model), x, metrics.SSE(), seed=6)["distortion_sampled"] != f["distortion_sampled"]


# ------------------------------------------------------------------ the reports


def _digits_run(tmp_path):
    from vaeiso_ext.experiments.digits import EXPERIMENT as DIGITS
    from vaeiso_ext.experiments.digits import DigitsConfig
    from vaeiso_ext.experiments.real import RealData
    from vaeiso_ext.models import DigitsVAE

    torch.manual_seed(0)
    model = DigitsVAE(latent=3, pixels=64, hidden=16).eval()
    g = torch.Generator().manual_seed(2)
    data = RealData(torch.rand(40, 64, generator=g), torch.rand(12, 64, generator=g), "synthetic", False)
    cfg = DigitsConfig(latent=3, n_eval=12)
    res = DIGITS.analyze_model(cfg, model, data, {}, n_samples=None, progress=False)
    return DIGITS, cfg, model, data, res


def test_real_results_text_and_report_show_the_theory(tmp_path):
    exp, cfg, model, data, res = _digits_run(tmp_path)
    n = res["n_samples"]
    # the fit: held-out = the samples analysed, training = as many training samples
    f = res["fit"]
    assert f["held_out"]["n_samples"] == n == f["train"]["n_samples"]
    metric = exp.metric(cfg)
    with torch.no_grad():
        for key, xs in (("held_out", data.test[:n]), ("train", data.train[:n])):
            mu, lv = model.encode(xs)
            assert f[key]["distortion_mu"] == pytest.approx(
                metric.distance(xs, model.decode(mu)).mean().item(), rel=1e-5
            )
            kl = (0.5 * (mu**2 + lv.exp() - lv - 1)).sum(1).mean().item()
            assert f[key]["kl_total"] == pytest.approx(kl, rel=1e-5)
    text = exp.summary(res)
    for s in (
        "1 - sigma^2",
        "norm / (1 - sigma^2)",
        "active (KL)",
        "informative",
        f"informative (E[sigma^-2] >= {INFORMATIVE_THRESHOLD:g}): {res['informative_dims']} of 3",
        f"active (KL): mean KL >= {cfg.kl_threshold} nats: {res['active_dims']} of 3",
        "memorised",
        "held out",
        "training",
    ):
        assert s in text, s
    for d in res["dims"]:  # every row carries its 1 - sigma^2
        assert f"{d['one_minus_sigma2_mean']:.3f}" in text
    paths = exp.write_outputs(str(tmp_path), res, model, data, figures=True)
    report = (tmp_path / "report.md").read_text()
    assert "norm / (1 - sigma^2)" in report and "memorised" in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["fit"]) >= {"train", "held_out", "seed", "train_samples"}
    assert set(saved["fit"]["train"]) == {"n_samples", "distortion_sampled", "distortion_mu", "kl_total"}
    for k in (
        "informative_dims",
        "norm_informative",
        "norm_ratio_informative",
        "informative_threshold",
        "ratio_floor",
        "active_dims",
        "norm_active",
    ):
        assert k in saved, k
    assert (tmp_path / "figures" / "dims.png").stat().st_size > 0 and len(paths) >= 4


def test_real_summary_reads_results_without_the_new_keys(tmp_path):
    """results.json written before these quantities still summarise and plot."""
    from vaeiso_ext.experiments.real_report import dims_figure, text_summary

    _, _, _, _, res = _digits_run(tmp_path)
    new = {
        "informative_dims",
        "norm_informative",
        "norm_ratio_informative",
        "informative_threshold",
        "ratio_floor",
        "fit",
    }
    old = {k: v for k, v in res.items() if k not in new}
    old["dims"] = [
        {k: d[k] for k in ("index", "kl", "inv_sigma2_mean", "dj_mean", "dj_sd", "norm_mean", "norm_sd", "active")}
        for d in res["dims"]
    ]
    text = text_summary(old)
    assert "active (KL)" in text and "informative (" not in text and "memorised" not in text
    dims_figure(old, str(tmp_path / "old.png"))
    assert (tmp_path / "old.png").stat().st_size > 0


def test_toy_tables_and_figure_show_the_theory(tmp_path):
    from vaeiso_ext.experiments.toy import dims_figure, markdown_report, table_dims, text_table

    model, x = LinearVAE(), samples()
    res = analyze(_vae(model), x, metrics.SSE(), BETA, mc_samples=1)
    res.update(config={"dataset": "mix", "loss": "sse", "lam": 1 / BETA, "decomposed": False}, training={})
    for out in (text_table(res), markdown_report(res)):
        for s in (
            "1 - sigma^2",
            "norm/(1-sigma^2)",
            "informative",
            "active (KL)",
            f"informative (E[sigma^-2] >= {INFORMATIVE_THRESHOLD:g}): {res['informative_dims']} of 5",
        ):
            assert s in out, s
        for d in table_dims(res):
            assert f"{d['one_minus_sigma2_mean']:.3f}" in out
    dims_figure(res, str(tmp_path / "dims.png"))
    assert (tmp_path / "dims.png").stat().st_size > 0


def test_side_by_side_figure_script(tmp_path, capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "image_runs_figure.py"
    spec = importlib.util.spec_from_file_location("image_runs_figure", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    exp, _, model, data, res = _digits_run(tmp_path)
    exp.write_outputs(str(tmp_path / "conv"), res, model, data, figures=False)
    dec = dict(res, config=dict(res["config"], decomposed=True))
    exp.write_outputs(str(tmp_path / "dec"), dec, model, data, figures=False)
    out = tmp_path / "both.png"
    assert script.main([str(tmp_path / "conv"), str(tmp_path / "dec" / "results.json"), str(out)]) == 0
    assert out.stat().st_size > 0
    assert "informative (E[sigma^-2] >= " in script.subtitle(res)
    assert script.main(["a"]) == 2 and capsys.readouterr().err.startswith("error: usage")
    with pytest.raises(SystemExit, match=r"error: .*nope.*cannot read"):
        script.main([str(tmp_path / "nope"), str(tmp_path / "dec"), str(out)])
