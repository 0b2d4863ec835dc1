"""Data-parallel runs on CPU (gloo, 2 processes through torchrun): the world size is recorded and
checked, rank 0 alone prints and writes, the sweep trains data-parallel to the end, and nothing
continues or overwrites a run trained in another world size without being asked."""

import json
import os
import shutil

import pytest
import torch
from conftest import torchrun

from vaeiso_ext.checkpoint import CheckpointError, load_checkpoint
from vaeiso_ext.cli import main
from vaeiso_ext.train import TrainConfig, train

TOY = ["--epochs", "2", "--n-train", "1024", "--n-test", "200", "--no-figures"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same toy run trained in 2 processes and in 1."""
    root = tmp_path_factory.mktemp("dist")
    p = torchrun(["reproduce", "toy", *TOY, "--no-progress", "--out", str(root / "two")], root)
    assert p.returncode == 0, p.stdout + p.stderr
    assert main(["reproduce", "toy", *TOY, "--no-progress", "--out", str(root / "one")]) == 0
    return root


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_world_size_and_backend_are_recorded(runs):
    for name, world, backend, text in (
        ("two", 2, "gloo", "data-parallel in 2 processes (gloo)"),
        ("one", 1, None, "in 1 process"),
    ):
        ck = load_checkpoint(str(runs / name / "checkpoint.pt"))
        assert ck["world_size"] == world and ck["backend"] == backend
        res = json.loads((runs / name / "results.json").read_text())
        assert res["training"]["world_size"] == world and res["training"]["backend"] == backend
        assert text in (runs / name / "report.md").read_text()
    assert "data-parallel" not in (runs / "one" / "report.md").read_text()


def test_resume_in_another_world_size_is_refused(runs, tmp_path, capsys):
    # 2 processes -> 1
    two = shutil.copytree(runs / "two", tmp_path / "two")
    before = (two / "checkpoint.pt").read_bytes()
    assert main(["reproduce", "toy", *TOY[2:], "--epochs", "3", "--resume", "--no-progress", "--out", str(two)]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "world size 2 (recorded)" in lines[0] and "world size 1 (current)" in lines[0]
    assert (two / "checkpoint.pt").read_bytes() == before
    # 1 process -> 2: refused before training, one line (rank 0's)
    one = shutil.copytree(runs / "one", tmp_path / "one")
    before = (one / "checkpoint.pt").read_bytes()
    p = torchrun(
        ["reproduce", "toy", *TOY[2:], "--epochs", "3", "--resume", "--no-progress", "--out", str(one)], tmp_path
    )
    assert p.returncode != 0
    lines = _error_lines(p.stderr)
    assert len(lines) == 1, p.stderr
    assert "world size 1 (recorded)" in lines[0] and "world size 2 (current)" in lines[0]
    assert (one / "checkpoint.pt").read_bytes() == before


def test_train_refuses_to_resume_a_checkpoint_of_another_world_size(runs, tmp_path):
    # the library call too (not only the CLI): a checkpoint of 2 processes in this one
    ck = str(tmp_path / "ck.pt")
    shutil.copy(runs / "two" / "checkpoint.pt", ck)
    from vaeiso_ext.data import make_toy
    from vaeiso_ext.experiments.toy import EXPERIMENT, ToyConfig

    cfg = ToyConfig(epochs=3, n_train=1024, n_test=200)
    tcfg = EXPERIMENT.train_config(cfg)
    model = EXPERIMENT.new_model(cfg)
    data = make_toy(cfg.dataset, cfg.n_train, cfg.n_test, seed=cfg.data_seed)
    with pytest.raises(CheckpointError, match=r"world size 2 \(recorded\).*world size 1 \(current\)"):
        train(
            model,
            data.x_train,
            EXPERIMENT.metric(cfg),
            TrainConfig(**{**tcfg.__dict__, "epochs": 3}),
            checkpoint=ck,
            resume=True,
            progress=False,
        )


def test_analyze_out_onto_a_run_of_another_world_size_is_refused(runs, tmp_path, capsys):
    two = shutil.copytree(runs / "two", tmp_path / "two")
    before = sorted(os.listdir(two)), (two / "results.json").read_text()
    # the same options, another world size (and so another checkpoint): refused
    assert main(["analyze", str(runs / "one"), "--out", str(two), "--no-figures", "--no-progress"]) == 2
    line = _error_lines(capsys.readouterr().err)[0]
    assert "--overwrite" in line and "another checkpoint" in line
    assert (sorted(os.listdir(two)), (two / "results.json").read_text()) == before
    # the outputs of an analysis of the 2-process run (no checkpoint): refused for the 1-process one
    outs = tmp_path / "outs"
    assert main(["analyze", str(two), "--out", str(outs), "--no-figures", "--no-progress"]) == 0
    assert main(["analyze", str(runs / "one"), "--out", str(outs), "--no-figures", "--no-progress"]) == 2
    line = _error_lines(capsys.readouterr().err)[0]
    assert "world size 2" in line and "world size 1" in line and "--overwrite" in line
    # the same 2-process run again: the same run, allowed; --overwrite writes the other one
    assert main(["analyze", str(two), "--out", str(outs), "--no-figures", "--no-progress"]) == 0
    assert main(["analyze", str(runs / "one"), "--out", str(outs), "--overwrite", "--no-figures", "--no-progress"]) == 0
    assert json.loads((outs / "results.json").read_text())["training"]["world_size"] == 1


def test_torchrun_sweep_trains_to_the_end_and_rank0_alone_prints(tmp_path):
    out = tmp_path / "sweep"
    p = torchrun(
        [
            "reproduce",
            "sweep",
            "--datasets",
            "mix",
            "--losses",
            "sse",
            "--lambdas",
            "10,100",
            "--epochs",
            "2",
            "--n-train",
            "1024",
            "--n-test",
            "200",
            "--out",
            str(out),
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["lam"] for r in rows] == [10.0, 100.0] and all(r["epochs"] == 2 for r in rows)
    for lam in (10, 100):
        res = json.loads((out / f"mix_sse_lam{lam}" / "results.json").read_text())
        assert res["training"]["world_size"] == 2 and res["training"]["complete"]
    # one status line per run, not one per rank; one "[i/n]" line per run; one "wrote"
    assert p.stderr.count("generating toy data") == 2, p.stderr
    assert p.stdout.count("[1/2]") == 1 and p.stdout.count("wrote ") == 1, p.stdout


def test_analyze_under_torchrun_is_one_clear_line(runs, tmp_path):
    p = torchrun(["analyze", str(runs / "one"), "--out", str(tmp_path / "a")], tmp_path)
    assert p.returncode != 0
    lines = _error_lines(p.stderr)
    assert lines == ["error: `analyze` runs in one process: run it without torchrun"], p.stderr
    assert not (tmp_path / "a").exists()


def test_history_records_one_process():
    from vaeiso_ext.data import make_toy
    from vaeiso_ext.metrics import SSE
    from vaeiso_ext.models import ToyVAE

    h = train(
        ToyVAE(), make_toy("mix", 256, 10, seed=0).x_train, SSE(), TrainConfig(epochs=1, batch_size=128), progress=False
    )
    assert (h.world_size, h.backend) == (1, None)
    assert torch.isfinite(torch.tensor(h[-1]["loss"]))
