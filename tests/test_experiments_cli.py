"""Issue 15: a run folder is one run's record (no silent mixing or overwriting), step counts are
exact, user errors are one `error:` line with exit code 2, old checkpoints still analyse, and
each experiment's --help lists its own options only."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaeiso_ext.checkpoint import load_checkpoint, steps_per_epoch
from vaeiso_ext.cli import main
from vaeiso_ext.train import TrainConfig, TrainingDiverged, train

TINY = ["--n-train", "600", "--n-test", "300", "--batch-size", "100", "--no-progress"]
OLD_TOY = Path(__file__).parent / "data" / "old_layout_toy"


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes and mtime."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "run"
    assert main(["reproduce", "toy", "--epochs", "3", "--seed", "3", "--out", str(out), *TINY]) == 0
    return out


# ------------------------------------------------------------------ the run folder


def test_mismatched_resume_is_refused_and_writes_nothing(toy_run, capsys):
    before = _snapshot(toy_run)
    rc = main(
        [
            "reproduce",
            "toy",
            "--epochs",
            "4",
            "--seed",
            "3",
            "--dataset",
            "ramp",
            "--loss",
            "upward",
            "--out",
            str(toy_run),
            "--resume",
            *TINY[:-1],
            "--n-train",
            "700",
            "--no-progress",
        ]
    )
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--resume refused" in line
    for flag in ("--dataset", "--loss", "--n-train"):  # the options to change, as typed
        assert flag + ":" in line
    assert "n_train" not in line
    assert "seed:" not in line and "epochs:" not in line  # equal fields / the growable length
    assert _snapshot(toy_run) == before


def test_another_run_into_a_used_folder_needs_overwrite(toy_run, tmp_path, capsys):
    before = _snapshot(toy_run)
    assert main(["reproduce", "toy", "--epochs", "1", "--out", str(toy_run), *TINY]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--resume" in line and "--overwrite" in line
    assert _snapshot(toy_run) == before
    # --overwrite replaces it (in a copy, to keep the module's run)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(toy_run, copy)
    assert main(["reproduce", "toy", "--epochs", "1", "--out", str(copy), "--overwrite", "--no-figures", *TINY]) == 0
    res = json.loads((copy / "results.json").read_text())
    assert res["training"]["epochs_done"] == 1 and res["config"]["seed"] == 0
    assert not (copy / "figures" / "dims.png").exists()  # no stale figures of the old run
    assert load_checkpoint(str(copy / "checkpoint.pt"))["epoch"] == 1


def test_resume_at_or_below_done_reanalyses_and_reports_what_was_trained(toy_run, capsys):
    ck_before = (toy_run / "checkpoint.pt").read_bytes()
    assert (
        main(
            [
                "reproduce",
                "toy",
                "--epochs",
                "2",
                "--seed",
                "3",
                "--out",
                str(toy_run),
                "--resume",
                "--no-figures",
                *TINY,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "already done" in out and "re-analysing" in out
    assert (toy_run / "checkpoint.pt").read_bytes() == ck_before  # not retrained, not rewritten
    res = json.loads((toy_run / "results.json").read_text())
    spe = steps_per_epoch(600, 100)
    assert res["training"]["epochs_done"] == 3 and res["training"]["steps"] == 3 * spe
    assert res["config"]["epochs"] == 3
    report = (toy_run / "report.md").read_text()
    assert f"trained {3 * spe} Adam steps = 3 epochs" in report and "2 epochs" not in report


def test_analyze_accepts_a_run_folder_and_n_samples(toy_run, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["analyze", str(toy_run), "--out", str(out), "--n-samples", "50", "--no-figures", "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["n_samples"] == 50
    # the same analysis again into the same folder: the same run, no --overwrite needed
    assert main(["analyze", str(toy_run), "--out", str(out), "--no-figures", "--no-progress"]) == 0
    # but not into a folder holding another run
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text('{"experiment": "toy", "config": {"seed": 9}}')
    assert main(["analyze", str(toy_run), "--out", str(other), "--no-progress"]) == 2
    assert "--overwrite" in _one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------ exact step counts


def _adam_steps(ck: dict) -> set:
    """The step counts Adam itself recorded (one per parameter tensor)."""
    return {int(s["step"]) for s in ck["optimizer"]["state"].values()}


def test_iterations_are_exact_adam_steps(tmp_path):
    out = tmp_path / "dg"
    # batch 2: 100 steps are far less than one epoch of the 1617 training digits
    assert (
        main(
            [
                "reproduce",
                "digits",
                "--iterations",
                "100",
                "--batch-size",
                "2",
                "--latent",
                "2",
                "--n-eval",
                "8",
                "--no-progress",
                "--no-figures",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ck = load_checkpoint(str(out / "checkpoint.pt"))
    assert ck["step"] == 100 and _adam_steps(ck) == {100}
    res = json.loads((out / "results.json").read_text())
    assert res["training"]["steps"] == 100 and res["training"]["complete"]
    assert "trained 100 Adam steps" in (out / "report.md").read_text()


def test_epochs_are_whole_passes(toy_run):
    ck = load_checkpoint(str(toy_run / "checkpoint.pt"))
    assert _adam_steps(ck) == {3 * steps_per_epoch(600, 100)}


def _toy_model(seed=0):
    from vaeiso_ext.models import ToyVAE

    torch.manual_seed(seed)
    return ToyVAE(enc_hidden=(16,), dec_hidden=(16,))


def test_mid_epoch_resume_is_bit_identical(tmp_path):
    from vaeiso_ext.data import make_toy
    from vaeiso_ext.metrics import by_name

    x = make_toy("mix", 600, 10, seed=0).x_train  # 6 steps per epoch of 100
    cfg = dict(lam=50.0, epochs=None, batch_size=100, seed=4)
    straight = _toy_model()
    h1 = train(straight, x, by_name("sse"), TrainConfig(iterations=10, **cfg), progress=False)
    ck = str(tmp_path / "ck.pt")
    train(_toy_model(), x, by_name("sse"), TrainConfig(iterations=7, **cfg), progress=False, checkpoint=ck)
    assert load_checkpoint(ck)["step"] == 7  # stopped inside the second epoch
    resumed = _toy_model(seed=99)
    h2 = train(
        resumed, x, by_name("sse"), TrainConfig(iterations=10, **cfg), progress=False, checkpoint=ck, resume=True
    )
    # the trainer promises bitwise determinism for a resume (all randomness from (seed, epoch))
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert h1.steps == h2.steps == 10
    with pytest.raises(ValueError, match="exactly one of epochs and iterations"):
        TrainConfig(epochs=3, iterations=5).validate()


class _NanAfter:
    """Square error that turns NaN after ``n`` calls (a divergence at a known step)."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def distance(self, x, y):
        self.calls += 1
        d = ((x - y) ** 2).sum(1)
        return d * math.nan if self.calls > self.n else d


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from vaeiso_ext.data import make_toy

    x = make_toy("mix", 600, 10, seed=0).x_train
    ck = str(tmp_path / "ck.pt")
    with pytest.raises(TrainingDiverged) as e:
        train(_toy_model(), x, _NanAfter(8), TrainConfig(epochs=3, batch_size=100), progress=False, checkpoint=ck)
    assert e.value.step == 9 and e.value.good_step == 6
    saved = load_checkpoint(ck)
    assert saved["step"] == 6 and all(torch.isfinite(v).all() for v in saved["model"].values())


def test_divergence_on_the_command_line(tmp_path, capsys):
    rc = main(["reproduce", "toy", "--lr", "1000", "--epochs", "3", "--out", str(tmp_path / "d"), *TINY])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "diverged at step" in line and "smaller" in line and "--lr" in line and "--lambda" in line


# ------------------------------------------------------------------ user errors


@pytest.mark.parametrize(
    "argv",
    [
        ["reproduce", "toy", "--lambda", "inf"],
        ["reproduce", "toy", "--lambda", "nan"],
        ["reproduce", "toy", "--lambda", "0"],
        ["reproduce", "toy", "--lr", "-1"],
        ["reproduce", "toy", "--epochs", "0"],
        ["reproduce", "toy", "--n-test", "1"],
        ["reproduce", "toy", "--data", "somewhere"],  # an images option
        ["reproduce", "toy", "--iterations", "5"],
        ["reproduce", "images", "--epochs", "3"],  # a toy option
        ["reproduce", "images", "--dataset", "ramp"],
        ["reproduce", "images", "--crop", "100"],  # --crop without --data
        ["reproduce", "digits", "--data", "somewhere"],
        ["reproduce", "digits", "--n-eval", "1"],
        ["reproduce", "sweep", "--lambdas", "1,inf"],
        ["reproduce", "sweep", "--losses", "sse,l1"],
        ["reproduce", "toy", "--resume", "--overwrite"],
        ["reproduce"],
        ["analyze", str(OLD_TOY), "--n-samples", "0"],
        ["analyze", str(OLD_TOY), "--n-samples", "1"],
    ],
)
def test_bad_flags_are_one_error_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, not even a default out/ folder
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err)
    assert os.listdir(tmp_path) == []


def test_missing_and_garbage_checkpoints(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2  # a folder: looks for checkpoint.pt in it
    assert "checkpoint.pt" in _one_error_line(capsys.readouterr().err)
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    assert main(["analyze", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "unreadable" in line and "weights_only" not in line


def test_bench_unknown_device_is_an_error_line(capsys):
    from vaeiso_ext.bench.runner import main as bench_main

    assert bench_main(["--device", "tpu"]) == 2
    assert "tpu" in _one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------ old checkpoints


def test_old_layout_toy_checkpoint_analyses(tmp_path, capsys):
    out = tmp_path / "old"
    assert main(["analyze", str(OLD_TOY / "checkpoint.pt"), "--out", str(out), "--no-progress"]) == 0
    old = json.loads((OLD_TOY / "results.json").read_text())  # what the old code wrote
    new = json.loads((out / "results.json").read_text())
    assert new["config"] == old["config"] and new["experiment"] == "toy"
    assert new["training"]["epochs_done"] == 2 and new["training"]["steps"] == 2 * 6
    # the same float64 analysis of the same weights: only summation order may differ
    for a, b in zip(old["dims"], new["dims"]):
        assert a["index"] == b["index"]
        for k in ("kl", "inv_sigma2_mean"):
            assert b[k] == pytest.approx(a[k], rel=1e-9)
    assert "trained 12 Adam steps = 2 epochs" in (out / "report.md").read_text()


def _old_layout_digits_checkpoint(path: Path):
    """A digits checkpoint as the code before issue 15 wrote it (its format, recorded from a
    run of that code): meta {"kind", "run"} with the old RealRun fields, no "step" key, an epoch
    count rounded up from the requested iterations."""
    from vaeiso_ext.models import DigitsVAE

    torch.manual_seed(0)
    model = DigitsVAE(latent=3, hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(4, 784))[0].sum().backward()
    opt.step()
    train_cfg = {"lam": 2000 / 784, "epochs": 2, "batch_size": 256, "lr": 0.001, "seed": 0, "decomposed": False}
    run = {
        "experiment": "digits",
        "data": None,
        "crop": None,
        "latent": 3,
        "lam": 2000.0,
        "iterations": 10,
        "batch_size": 256,
        "lr": 0.001,
        "seed": 0,
        "decomposed": False,
        "n_eval": 16,
        "held_out": 0.1,
        "kl_threshold": 0.1,
        "eps": 0.001,
    }
    hist = [{"epoch": e, "loss": 1.0, "distortion": 1.0, "kl": 0.1, "seconds": 1.0} for e in (1, 2)]
    torch.save(
        {
            "format": "vaeiso_ext.checkpoint/1",
            "epoch": 2,
            "train": train_cfg,
            "model_config": dict(model.config),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "history": hist,
            "meta": {"kind": "digits", "run": run},
            "world_size": 1,
            "versions": {"vaeiso_ext": "0.1.0", "torch": "2.14.1", "python": "3.11.7"},
        },
        path,
    )


def test_old_layout_digits_checkpoint_analyses(tmp_path):
    run = tmp_path / "old_digits"
    run.mkdir()
    _old_layout_digits_checkpoint(run / "checkpoint.pt")
    assert main(["analyze", str(run), "--no-figures", "--no-progress"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["experiment"] == "digits" and res["n_samples"] == 16 and len(res["dims"]) == 3
    # the old code trained whole epochs: 2 x ceil(1617 / 256) steps, not the 10 it was asked for
    assert res["training"]["steps"] == 2 * 7 and res["training"]["complete"]
    assert "trained 14 Adam steps" in (run / "report.md").read_text()
    # --n-samples is honoured for digits too (it used to be ignored)
    assert main(["analyze", str(run), "--n-samples", "10", "--no-figures", "--no-progress"]) == 0
    assert json.loads((run / "results.json").read_text())["n_samples"] == 10


# ------------------------------------------------------------------ help, progress, warnings


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_each_experiment_lists_its_own_options(capsys):
    toy = _help(["reproduce", "toy"], capsys)
    images = _help(["reproduce", "images"], capsys)
    digits = _help(["reproduce", "digits"], capsys)
    for flag in ("--dataset", "--loss", "--epochs", "--n-train", "--n-test", "--data-seed"):
        assert flag in toy and flag not in images and flag not in digits
    for flag in ("--data ", "--crop", "--iterations", "--n-eval", "--latent"):
        assert flag in images and flag not in toy
    assert "--crop" not in digits and "--iterations" in digits
    assert "--data " in digits and "MNIST" in digits  # issue 21: MNIST from the user's files
    for flag in ("--datasets", "--lambdas"):
        assert flag not in toy


def test_progress_and_status_lines(tmp_path, capsys):
    assert main(["reproduce", "toy", "--epochs", "1", "--out", str(tmp_path / "p"), "--no-figures", *TINY[:-1]]) == 0
    err = capsys.readouterr().err
    assert "generating toy data" in err and "analysing 300 held-out samples" in err
    assert "step" in err and "active dims" in err and "KL" in err
    assert "Warning" not in err


def test_no_jit_script_deprecation_warning():
    """The first forward-mode AD call makes torch import its jvp decompositions, which call the
    deprecated torch.jit.script; our analysis must not let that FutureWarning through. A fresh
    process: the import happens once per process."""
    code = (
        "import torch; from vaeiso_ext.analysis import dj_prime; from vaeiso_ext.metrics import by_name;"
        "dec = torch.nn.Linear(2, 4).double();"
        "dj_prime(dec, torch.zeros(3, 2, dtype=torch.float64), by_name('sse'), method='jvp')"
    )
    p = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr


def test_the_same_command_again_reanalyses_and_an_unfinished_run_needs_resume(toy_run, tmp_path, capsys):
    ck_before = (toy_run / "checkpoint.pt").read_bytes()
    assert (
        main(["reproduce", "toy", "--epochs", "3", "--seed", "3", "--out", str(toy_run), "--no-figures", *TINY]) == 0
    )  # `make demo` twice
    assert "already done" in capsys.readouterr().out
    assert (toy_run / "checkpoint.pt").read_bytes() == ck_before
    # an interrupted run: the checkpoint describes 3 epochs, 1 was trained
    from vaeiso_ext.experiments.toy import EXPERIMENT as TOY
    from vaeiso_ext.experiments.toy import ToyConfig

    cfg = ToyConfig(epochs=3, n_train=600, n_test=300, batch_size=100)
    out = tmp_path / "cut"
    data = TOY.load_data(cfg, False)
    train(
        TOY.new_model(cfg),
        data.x_train,
        TOY.metric(cfg),
        TrainConfig(lam=100.0, epochs=1, batch_size=100),
        checkpoint=str(out / "checkpoint.pt"),
        progress=False,
        meta=TOY.meta(cfg),
    )
    before = _snapshot(out)
    argv = ["reproduce", "toy", "--epochs", "3", "--out", str(out), "--no-figures", *TINY]
    assert main(argv) == 2
    assert "unfinished" in _one_error_line(capsys.readouterr().err)
    assert _snapshot(out) == before
    assert main(argv + ["--resume"]) == 0
    assert load_checkpoint(str(out / "checkpoint.pt"))["step"] == 3 * 6


# ------------------------------------------------------------------ messages a user can act on (issue 20)


DIGITS = ["--iterations", "4", "--batch-size", "16", "--latent", "2", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A finished 4-step digits run analysed on 8 held-out digits."""
    out = tmp_path_factory.mktemp("exp") / "digits"
    assert main(["reproduce", "digits", *DIGITS, "--n-eval", "8", "--out", str(out)]) == 0
    return out


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def test_resume_refusal_names_the_flags(digits_run, capsys):
    before = _snapshot(digits_run)
    assert (
        main(
            [
                "reproduce",
                "digits",
                *DIGITS,
                "--lambda",
                "100",
                "--lr",
                "0.01",
                "--n-eval",
                "10",
                "--out",
                str(digits_run),
                "--resume",
            ]
        )
        == 2
    )
    line = _one_error_line(capsys.readouterr().err)
    assert "--lambda: 2000.0 (saved) -> 100.0 (requested)" in line and "--lr:" in line
    assert "lam:" not in line and " lr:" not in line
    assert "n-eval" not in line and "n_eval" not in line  # analysis-only: never a difference
    assert _snapshot(digits_run) == before


def test_analysis_only_options_never_block_resume(digits_run, tmp_path, capsys):
    run = _copy(digits_run, tmp_path / "r")
    # more steps, another --n-eval, --no-figures: continued, and analysed as asked now
    assert (
        main(["reproduce", "digits", *DIGITS[2:], "--iterations", "6", "--n-eval", "10", "--out", str(run), "--resume"])
        == 0
    )
    assert load_checkpoint(str(run / "checkpoint.pt"))["step"] == 6
    res = json.loads((run / "results.json").read_text())
    assert res["n_samples"] == 10 == res["config"]["n_eval"] and res["training"]["steps"] == 6
    # a finished run: --resume re-analyses it with the --n-eval asked for
    assert main(["reproduce", "digits", *DIGITS, "--n-eval", "12", "--out", str(run), "--resume"]) == 0
    assert "already done" in capsys.readouterr().out
    assert json.loads((run / "results.json").read_text())["n_samples"] == 12


def test_same_run_asked_again_with_another_n_eval_reanalyses(digits_run, tmp_path, capsys):
    run = _copy(digits_run, tmp_path / "r")
    ck_before = (run / "checkpoint.pt").read_bytes()
    assert main(["reproduce", "digits", *DIGITS, "--n-eval", "20", "--out", str(run)]) == 0
    assert "already done" in capsys.readouterr().out
    assert (run / "checkpoint.pt").read_bytes() == ck_before  # not retrained
    res = json.loads((run / "results.json").read_text())
    assert res["n_samples"] == 20 == res["config"]["n_eval"]
    # and `analyze --out` into that folder again: the same run, whatever n_eval it was analysed on
    assert (
        main(["analyze", str(run), "--out", str(tmp_path / "a"), "--n-samples", "9", "--no-figures", "--no-progress"])
        == 0
    )
    assert main(["analyze", str(run), "--out", str(tmp_path / "a"), "--no-figures", "--no-progress"]) == 0


@pytest.mark.parametrize("resume", [False, True])
def test_damaged_checkpoint_offers_overwrite_not_resume(digits_run, tmp_path, capsys, resume):
    run = _copy(digits_run, tmp_path / "r")
    ck = run / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: len(ck.read_bytes()) // 2])  # an interrupted copy
    before = _snapshot(run)
    argv = ["reproduce", "digits", *DIGITS, "--out", str(run)]
    assert main(argv + (["--resume"] if resume else [])) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "damaged" in line and str(ck) in line and "--overwrite" in line
    assert "pass --resume" not in line and "unfinished" not in line
    assert _snapshot(run) == before
    assert main(argv + ["--overwrite"]) == 0  # what the message offers works
    assert load_checkpoint(str(ck))["step"] == 4


def test_n_eval_default_is_all_held_out_at_most_256(digits_run, tmp_path, capsys):
    from vaeiso_ext.experiments.digits import DigitsConfig

    assert DigitsConfig().n_eval is None  # the default, resolved against the data at analysis
    run = _copy(digits_run, tmp_path / "r")
    # scikit-learn's digits hold out 180: the default analyses all of them, without a note
    assert main(["analyze", str(run), "--no-figures", "--no-progress"]) == 0
    assert "note:" not in capsys.readouterr().err
    res = json.loads((run / "results.json").read_text())
    assert res["n_held_out"] == 180  # round(0.1 * 1797)
    # the stored run asked for 8; a fresh description without --n-eval gets all 180
    assert res["n_samples"] == 8 == res["config"]["n_eval"]
    fresh = tmp_path / "fresh"
    assert main(["reproduce", "digits", *DIGITS, "--out", str(fresh)]) == 0
    res = json.loads((fresh / "results.json").read_text())
    assert res["n_samples"] == 180 == res["config"]["n_eval"] and "n_eval_note" not in res
    # more than is held out: clamped, said on stderr and in results.json, config and count agree
    assert main(["reproduce", "digits", *DIGITS, "--n-eval", "300", "--out", str(fresh)]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "300" in err and "180" in err
    res = json.loads((fresh / "results.json").read_text())
    assert res["n_samples"] == 180 == res["config"]["n_eval"]
    assert "300" in res["n_eval_note"] and "180" in res["n_eval_note"]


def test_reports_say_1_epoch(tmp_path):
    from vaeiso_ext.experiments.outputs import run_title
    from vaeiso_ext.experiments.runs import trained_text

    out = tmp_path / "one"
    assert main(["reproduce", "toy", "--epochs", "1", "--out", str(out), "--no-figures", *TINY]) == 0
    report = (out / "report.md").read_text()
    assert "= 1 epoch of 600 samples" in report and "1 epochs" not in report
    res = json.loads((out / "results.json").read_text())
    assert run_title(res, "x").endswith("(1 epoch)")
    t = {
        **res["training"],
        "steps": 1,
        "epochs_done": 0.5,
        "complete": False,
        "requested": 1,
        "length_field": "iterations",
    }
    assert trained_text(t).startswith("trained 1 Adam step = 0.50 epochs of 600 samples")
    assert trained_text(t).endswith("1 iteration was requested")
