"""CLI smoke runs: reproduce, analyze, sweep, and clear errors without partial overwrites."""

import json
import os

import pytest
import torch

from vaeiso_ext.cli import main

TINY = ["--n-train", "600", "--n-test", "300", "--no-progress", "--batch-size", "100"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert (
        main(
            [
                "reproduce",
                "toy",
                "--dataset",
                "ramp",
                "--loss",
                "downward",
                "--lambda",
                "20",
                "--epochs",
                "2",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    return out


def test_reproduce_writes_results_report_figures(run_dir, capsys):
    files = sorted(os.listdir(run_dir))
    assert files == ["checkpoint.pt", "figures", "report.md", "results.json"]
    assert sorted(os.listdir(run_dir / "figures")) == ["dims.png", "fig3_scatter.png"]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["config"]["dataset"] == "ramp" and res["config"]["loss"] == "downward"
    assert res["config"]["lam"] == 20.0 and res["config"]["epochs"] == 2
    assert {"torch", "vaeiso_ext"} <= set(res["versions"])
    for d in res["dims"]:
        assert {"kl", "inv_sigma2_mean", "dj_mean", "dj_sd", "norm_mean", "norm_sd"} <= set(d)
    assert set(res["correlations"]) >= {"p_mu", "exp_neg_L", "scaled_p_mu_prod_sigma", "scaled_exp_neg_L"}
    for v in res["correlations"].values():
        assert set(v) == {"pearson", "spearman"}
    assert {"diag_mean", "offdiag_abs_mean"} <= set(res["gram"])
    assert {
        "coding_loss",
        "coding_loss_theory",
        "transform_loss",
        "transform_coding_ratio",
        "rate",
        "rate_theory",
    } <= set(res["rate_distortion"])
    report = (run_dir / "report.md").read_text()
    assert "E[sigma^-2]" in report and "figures/fig3_scatter.png" in report
    for png in (run_dir / "figures").iterdir():
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 300_000


def test_analyze_checkpoint_and_resume(run_dir, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["analyze", str(run_dir / "checkpoint.pt"), "--out", str(out), "--no-figures"]) == 0
    a = json.loads((run_dir / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert a["dims"] == b["dims"] and a["correlations"] == b["correlations"]
    assert "norm (2/b) s^2 D'" in capsys.readouterr().out
    # --resume to a longer run continues from the checkpoint's epoch
    assert (
        main(
            [
                "reproduce",
                "toy",
                "--dataset",
                "ramp",
                "--loss",
                "downward",
                "--lambda",
                "20",
                "--epochs",
                "3",
                "--out",
                str(run_dir),
                "--resume",
                "--no-figures",
                *TINY,
            ]
        )
        == 0
    )
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 3 and len(ck["history"]) == 3


def test_corrupt_or_missing_checkpoint_is_a_clear_error_and_overwrites_nothing(tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    (out / "results.json").write_text('{"keep": true}')
    (out / "report.md").write_text("keep")
    bad = out / "checkpoint.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    assert main(["analyze", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unreadable" in err and str(bad) in err
    assert main(["analyze", str(tmp_path / "nope.pt"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    # resume from the corrupt checkpoint: same clear error, nothing replaced
    assert main(["reproduce", "toy", "--epochs", "2", "--out", str(out), "--resume", *TINY]) == 2
    assert "unreadable" in capsys.readouterr().err
    assert (out / "results.json").read_text() == '{"keep": true}'
    assert (out / "report.md").read_text() == "keep"
    assert bad.read_bytes() == b"\x00garbage" * 100
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "report.md", "results.json"]
    # --resume where there is no checkpoint at all
    assert main(["reproduce", "toy", "--out", str(tmp_path / "empty"), "--resume", *TINY]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_bad_arguments_exit_cleanly(capsys):
    assert main(["reproduce", "toy", "--lambda", "-1", *TINY]) == 2
    assert "lambda" in capsys.readouterr().err
    assert main(["reproduce", "toy", "--dataset", "moons"]) == 2
    assert "moons" in capsys.readouterr().err


def test_sweep_smoke(tmp_path):
    out = tmp_path / "sweep"
    args = [
        "reproduce",
        "sweep",
        "--datasets",
        "mix",
        "--losses",
        "sse,upward",
        "--lambdas",
        "10,100",
        "--epochs",
        "1",
        "--out",
        str(out),
        *TINY,
    ]
    assert main(args) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert len(rows) == 4 and {r["loss"] for r in rows} == {"sse", "upward"}
    figs = sorted(os.listdir(out / "figures"))
    assert figs == ["sweep_mix_sse.png", "sweep_mix_upward.png", "sweep_rate_distortion.png"]
    assert "App. E.2" in (out / "report.md").read_text()
    # a second call finds every run done and only redraws
    stamp = (out / "mix_sse_lam10" / "checkpoint.pt").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "mix_sse_lam10" / "checkpoint.pt").stat().st_mtime_ns == stamp
