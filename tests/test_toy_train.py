"""Trainer: bit-identical resume, decomposed objective, checkpoint errors, two-process DDP."""

import json
import os

import pytest
import torch
from conftest import torchrun

from vaeiso_ext.checkpoint import CheckpointError, load_checkpoint
from vaeiso_ext.data import make_toy
from vaeiso_ext.metrics import by_name as metric_from_name
from vaeiso_ext.models import ToyVAE
from vaeiso_ext.train import TrainConfig, train


@pytest.fixture(scope="module")
def small_data():
    return make_toy("mix", n_train=600, n_test=50, seed=0)


def _model(seed=0):
    torch.manual_seed(seed)
    return ToyVAE(enc_hidden=(32, 16), dec_hidden=(16, 32))


def _same_state(a, b):
    # bitwise: resume promises to continue bit-identically (same data order, RNG and optimizer state)
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("decomposed", [False, True])
def test_resume_is_bit_identical(tmp_path, small_data, decomposed):
    metric = metric_from_name("downward")
    cfg = TrainConfig(lam=100, epochs=4, batch_size=64, seed=5, decomposed=decomposed)
    straight = _model()
    h_straight = train(straight, small_data.x_train, metric, cfg, progress=False, checkpoint=str(tmp_path / "a.pt"))

    ck = str(tmp_path / "b.pt")
    first = _model()
    train(
        first, small_data.x_train, metric, TrainConfig(**{**cfg.__dict__, "epochs": 2}), progress=False, checkpoint=ck
    )
    assert load_checkpoint(ck)["epoch"] == 2
    resumed = _model(seed=123)  # different init: everything must come from the checkpoint
    h_resumed = train(resumed, small_data.x_train, metric, cfg, progress=False, checkpoint=ck, resume=True)
    assert _same_state(straight, resumed)
    assert [h["loss"] for h in h_straight] == [h["loss"] for h in h_resumed]
    a, b = load_checkpoint(str(tmp_path / "a.pt")), load_checkpoint(ck)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # the loss went down
    assert h_straight[-1]["loss"] < h_straight[0]["loss"]


def test_seeded_runs_repeat_and_seeds_differ(small_data):
    metric = metric_from_name("sse")
    cfg = TrainConfig(lam=10, epochs=1, batch_size=100, seed=1)
    a, b, c = _model(), _model(), _model()
    train(a, small_data.x_train, metric, cfg, progress=False)
    train(b, small_data.x_train, metric, cfg, progress=False)
    train(c, small_data.x_train, metric, TrainConfig(**{**cfg.__dict__, "seed": 2}), progress=False)
    assert _same_state(a, b) and not _same_state(a, c)


def test_checkpoint_errors(tmp_path, small_data):
    metric = metric_from_name("sse")
    with pytest.raises(CheckpointError, match="no such file"):
        train(
            _model(),
            small_data.x_train,
            metric,
            TrainConfig(epochs=1),
            progress=False,
            checkpoint=str(tmp_path / "missing.pt"),
            resume=True,
        )
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(str(bad))
    good = str(tmp_path / "good.pt")
    train(_model(), small_data.x_train, metric, TrainConfig(epochs=1, batch_size=200), progress=False, checkpoint=good)
    data = open(good, "rb").read()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(str(trunc))
    torch.save({"something": 1}, str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="not a vaeiso_ext checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="different config"):
        train(
            _model(),
            small_data.x_train,
            metric,
            TrainConfig(epochs=2, batch_size=200, lam=5),
            progress=False,
            checkpoint=good,
            resume=True,
        )
    # a failed resume left the good checkpoint untouched and no temporary files behind
    assert open(good, "rb").read() == data
    assert sorted(os.listdir(tmp_path)) == ["bad.pt", "good.pt", "other.pt", "trunc.pt"]


def test_two_process_ddp_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    args = ["reproduce", "toy", "--epochs", "2", "--n-train", "1024", "--n-test", "200"]
    p = torchrun(args + ["--out", str(out), "--no-figures", "--no-progress"], tmp_path, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    ck = load_checkpoint(str(out / "checkpoint.pt"))
    assert ck["world_size"] == 2 and ck["epoch"] == 2
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["epochs"] == 2 and len(res["dims"]) == 3
    # only rank 0 wrote: a single table on stdout, no stray files
    assert p.stdout.count("wrote ") == 1
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "report.md", "results.json"]
    assert ck["history"][-1]["loss"] < ck["history"][0]["loss"]


@pytest.mark.parametrize("save_every, expected", [(0.0, [100, 200, 300, 400]), (1e9, [100, 400])])
def test_checkpoint_writes_are_throttled_by_time(tmp_path, small_data, monkeypatch, save_every, expected):
    # 600 samples at batch 6: epochs of 100 steps. Every epoch end is written with save_every=0;
    # with a long interval only the first epoch and the end of the run.
    import vaeiso_ext.train as tr

    written = []
    real = tr.save_atomic
    monkeypatch.setattr(tr, "save_atomic", lambda obj, path: (written.append(obj["step"]), real(obj, path)))
    train(
        _model(),
        small_data.x_train,
        metric_from_name("sse"),
        TrainConfig(lam=100, epochs=4, batch_size=6),
        checkpoint=str(tmp_path / "ck.pt"),
        progress=False,
        save_every=save_every,
    )
    assert written == expected
    assert load_checkpoint(str(tmp_path / "ck.pt"))["step"] == 400


def test_training_flushes_denormals_and_restores_the_mode(small_data):
    # a float32 denormal times one is itself unless denormals are flushed to zero
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    seen = []

    def evaluate(model):
        seen.append((tiny * 1.0).item())
        return {}

    train(
        _model(),
        small_data.x_train,
        metric_from_name("sse"),
        TrainConfig(lam=100, epochs=1, batch_size=300),
        progress=False,
        evaluate=evaluate,
    )
    supported = torch.set_flush_denormal(False)  # False where the CPU cannot flush: then nothing to check
    if supported:
        assert seen and all(v == 0.0 for v in seen)
    assert (tiny * 1.0).item() != 0.0
