"""Training pieces added for the image experiments: the lr schedule (warm-up, step drop), training
on a stream of fresh random crops (resumable bit for bit), the scaled init of ConvVAE, the step
curve, the image size and the presets."""

import json

import numpy as np
import pytest
import torch

from vaeiso_ext import metrics
from vaeiso_ext.checkpoint import load_checkpoint
from vaeiso_ext.data.images import RandomCrops
from vaeiso_ext.models import ConvVAE, ToyVAE
from vaeiso_ext.train import TrainConfig, train


def test_warmup_lr_of_the_last_step(tmp_path):
    # 3 epochs of 4 batches = 12 steps; warm-up over 20: the last step's lr is 12/20 of lr
    torch.manual_seed(0)
    x = torch.randn(32, 16)
    ck = str(tmp_path / "c.pt")
    train(
        ToyVAE(),
        x,
        metrics.SSE(),
        TrainConfig(lam=10, epochs=3, batch_size=8, lr=1e-3, warmup=20),
        checkpoint=ck,
        progress=False,
    )
    # exact: the same float expression as train()'s, lr * ((step + 1) / warmup)
    assert load_checkpoint(ck)["optimizer"]["param_groups"][0]["lr"] == 1e-3 * (12 / 20)
    train(
        ToyVAE(),
        x,
        metrics.SSE(),
        TrainConfig(lam=10, epochs=3, batch_size=8, lr=1e-3, warmup=5),
        checkpoint=ck,
        progress=False,
    )
    assert load_checkpoint(ck)["optimizer"]["param_groups"][0]["lr"] == 1e-3


def test_lr_schedule_formula():
    lr, w, at, f = 1e-4, 50, 1200, 0.3
    c = TrainConfig(lr=lr, warmup=w, lr_drop_at=at, lr_drop=f)
    for step in (0, 24, 48):  # warm-up: lr (step + 1) / warmup, 0-based steps
        assert c.lr_at(step) == pytest.approx(lr * (step + 1) / w, rel=1e-15)
    for step in (49, 50, 700, 1199):  # the plateau: lr itself
        assert c.lr_at(step) == lr
    for step in (1200, 1201, 10**6):  # from step lr_drop_at on
        assert c.lr_at(step) == pytest.approx(lr * f, rel=1e-15)
    # a drop inside the warm-up multiplies it; no warm-up: lr then lr * f; lr_drop_at 0: never
    both = TrainConfig(lr=lr, warmup=10, lr_drop_at=4, lr_drop=0.5)
    assert both.lr_at(3) == pytest.approx(lr * 0.4, rel=1e-15)
    assert both.lr_at(4) == pytest.approx(lr * 0.5 * 0.5, rel=1e-15)
    assert [TrainConfig(lr=lr, lr_drop_at=2).lr_at(s) for s in range(4)] == [lr, lr, lr * 0.3, lr * 0.3]
    assert TrainConfig(lr=lr, lr_drop_at=0, lr_drop=0.5).lr_at(10**6) == lr
    for bad in (dict(lr_drop_at=-1), dict(lr_drop=0.0), dict(lr_drop=1.5), dict(lr_drop=float("nan"))):
        with pytest.raises(ValueError, match="TrainConfig: lr_drop"):
            TrainConfig(**bad).validate()


def test_lr_drop_applies_without_warmup(tmp_path):
    # the loop sets the lr from the schedule whenever there is one, not only with a warm-up
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    ck = str(tmp_path / "c.pt")
    torch.manual_seed(0)
    train(
        ToyVAE(),
        x,
        metrics.SSE(),
        TrainConfig(lam=10, epochs=3, batch_size=8, lr=1e-3, lr_drop_at=5),
        checkpoint=ck,
        progress=False,
    )
    assert load_checkpoint(ck)["optimizer"]["param_groups"][0]["lr"] == 1e-3 * 0.3


def test_checkpoints_older_than_the_lr_drop_trained_without_it():
    old = {
        "lam": 10.0,
        "epochs": 3,
        "batch_size": 8,
        "lr": 1e-3,
        "seed": 0,
        "decomposed": False,
        "iterations": None,
        "warmup": 4,
    }
    c = TrainConfig.from_dict(old)
    assert c.lr_drop_at == 0 and [c.lr_at(s) for s in (3, 10**6)] == [1e-3, 1e-3]


def test_warmup_of_one_step_is_no_warmup():
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    out = []
    for w in (0, 1, 4):
        torch.manual_seed(0)
        m = ToyVAE()
        train(m, x, metrics.SSE(), TrainConfig(lam=10, epochs=2, batch_size=8, warmup=w), progress=False)
        out.append(torch.cat([p.flatten() for p in m.parameters()]))
    # lr * min(1, (step + 1) / 1) == lr exactly: the same float ops, bitwise the same weights
    assert torch.equal(out[0], out[1])
    assert not torch.equal(out[0], out[2])


def _stream(seed=0):
    rng = np.random.default_rng(seed)
    return RandomCrops([rng.random((80, 96, 3), dtype=np.float32)], size=64, epoch_size=8, seed=seed)


@pytest.mark.parametrize("length,first,total", [("epochs", 1, 2), ("iterations", 3, 5)])
def test_training_on_random_crops_resumes_bit_identically(tmp_path, length, first, total):
    # epochs: resumed at an epoch boundary; iterations: at step 3 of 2-step epochs (mid-epoch: the
    # stream must skip the crops of the epoch's first batch). The lr drops at step 2: after the
    # resume (epochs) or before it (iterations)
    cfg = dict(lam=1000.0, batch_size=4, lr=1e-3, warmup=3, lr_drop_at=2, lr_drop=0.5, epochs=None)

    def run(n, ck, resume=False, model=None):
        torch.manual_seed(0)
        m = model or ConvVAE(latent=2, channels=4, hidden=16)
        train(
            m,
            _stream(),
            metrics.SSIM(),
            TrainConfig(**{**cfg, length: n}),
            checkpoint=ck,
            resume=resume,
            progress=False,
        )
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    whole = run(total, str(tmp_path / "a.pt"))
    part = run(first, str(tmp_path / "b.pt"))
    assert not torch.equal(whole, part)
    torch.manual_seed(123)  # the resumed run must not depend on the global RNG
    resumed = run(total, str(tmp_path / "b.pt"), resume=True, model=ConvVAE(latent=2, channels=4, hidden=16))
    # the same seeded crops, noise and lr schedule in the same order: bitwise the same weights
    assert torch.equal(whole, resumed)
    last = TrainConfig(**{**cfg, length: total}).lr_at(TrainConfig(**{**cfg, length: total}).total_steps(8) - 1)
    assert last == 1e-3 * 0.5
    assert load_checkpoint(str(tmp_path / "b.pt"))["optimizer"]["param_groups"][0]["lr"] == last


def test_random_crops_skip_draws_what_indexing_draws():
    a, b = _stream(), _stream()
    a.set_epoch(2), b.set_epoch(2)
    a[torch.arange(3)]
    b.skip(3)
    assert torch.equal(a[torch.arange(2)], b[torch.arange(2)])


def test_scaled_init_lets_z_reach_the_image():
    # PyTorch's default init: the output moves ~0.002 per unit of z (the collapse's start);
    # the scaled init: ~0.09 (docs/image_results.md). Both measured on 64 prior draws.
    z = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    spread = {}
    for init in ("torch", "scaled"):
        torch.manual_seed(0)
        with torch.no_grad():
            spread[init] = ConvVAE(init=init).decode(z).std(0).mean().item()
    assert spread["scaled"] > 10 * spread["torch"]
    assert 0.03 < spread["scaled"] < 0.25  # around the calibration target 0.25 (IGDN, 64 draws)


def test_scaled_init_is_seeded():
    torch.manual_seed(3)
    a = ConvVAE(latent=4, channels=8, hidden=32)
    torch.manual_seed(3)
    b = ConvVAE(latent=4, channels=8, hidden=32)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_step_curve_run_writes_points(tmp_path):
    from vaeiso_ext.experiments.digits import EXPERIMENT as DIGITS
    from vaeiso_ext.experiments.digits import DigitsConfig

    torch.set_num_threads(1)
    cfg = DigitsConfig(iterations=21, batch_size=256, n_eval=16, latent=4, eval_every=10, curve_samples=16)
    res = DIGITS.reproduce(cfg, str(tmp_path), progress=False, figures=True, echo=None)
    # points before the first step, every 10 Adam steps (exact: 1617 training digits / 256 = 7
    # steps per epoch, so 10 and 20 fall mid-epoch) and at the end (21)
    steps = [p["step"] for p in res["curve"]["points"]]
    assert steps == [0, 10, 20, 21]
    assert res["training"]["steps"] == 21 and "evals" not in res["training"]
    with open(tmp_path / "curve.json") as f:
        assert [p["step"] for p in json.load(f)["points"]] == steps
    assert [p["step"] for p in load_checkpoint(str(tmp_path / "checkpoint.pt"))["evals"]] == steps
    last = res["curve"]["points"][-1]
    # the last point and the final analysis see the same model and samples (the curve in float32,
    # the analysis in float64: KLs agree to ~1e-6 relative), so the same active dims unless a KL
    # lies within ~1e-7 of the threshold
    assert last["active_dims"] == res["active_dims"]
    if res["active_dims"]:
        # curve: float32 D'_j; final analysis: float64. Float32 rounds outputs of size O(1) at
        # ~6e-8; the difference h*|J| (h = 1e-3, |J| >~ 0.1 here) keeps ~1e-3 relative: 1e-2 bounds it
        assert abs(last["norm_mean"] - res["norm_active"]["mean"]) <= 1e-2 * res["norm_active"]["mean"]
    assert (tmp_path / "figures" / "curve.png").exists() and (tmp_path / "results.json").exists()
    assert "## Step curve" in (tmp_path / "report.md").read_text()


def test_step_curve_resumed_equals_whole_run(tmp_path):
    # the curve is part of the run: a run resumed mid-way (mid-epoch) has the same points as
    # one trained straight through, bitwise (same seeded batches, noise and model)
    from vaeiso_ext.experiments.digits import EXPERIMENT as DIGITS
    from vaeiso_ext.experiments.digits import DigitsConfig

    torch.set_num_threads(1)
    kw = dict(batch_size=256, n_eval=16, latent=4, eval_every=5, curve_samples=16)
    whole = DIGITS.reproduce(
        DigitsConfig(iterations=12, **kw), str(tmp_path / "a"), progress=False, figures=False, echo=None
    )
    DIGITS.reproduce(DigitsConfig(iterations=8, **kw), str(tmp_path / "b"), progress=False, figures=False, echo=None)
    resumed = DIGITS.reproduce(
        DigitsConfig(iterations=12, **kw), str(tmp_path / "b"), resume=True, progress=False, figures=False, echo=None
    )

    def strip(res):  # eval_seconds is a wall time
        return [{k: v for k, v in p.items() if k != "eval_seconds"} for p in res["curve"]["points"]]

    # 8 is not a multiple of 5: the point at 8 (the end of the first run) stays in the record
    assert [p["step"] for p in resumed["curve"]["points"]] == [0, 5, 8, 10, 12]
    assert [p for p in strip(resumed) if p["step"] != 8] == strip(whole)


def test_step_curve_option_is_part_of_the_run(tmp_path, capsys):
    from vaeiso_ext.cli import main

    out = str(tmp_path / "o")
    args = [
        "reproduce",
        "digits",
        "--iterations",
        "3",
        "--latent",
        "2",
        "--n-eval",
        "8",
        "--no-figures",
        "--no-progress",
        "--out",
        out,
    ]
    assert main(args + ["--eval-every", "2"]) == 0
    capsys.readouterr()
    # resuming with another curve interval is another run: refused, naming the option
    assert main(args[:2] + ["--iterations", "5"] + args[4:] + ["--eval-every", "3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--eval-every: 2" in err


def _images_config(argv):
    from vaeiso_ext.cli import _parser

    args, extra = _parser().parse_known_args(["reproduce", "images", *argv])
    assert not extra
    return args.exp.config_from_args(args)


def test_images_cpu_preset_and_explicit_options():
    from vaeiso_ext.experiments.images import EXPERIMENT as IMAGES

    # the CPU protocol of docs/image_results.md: 32x32 crops, the paper's network, lambda and
    # SSIM, batch 32, Adam 1e-4 with a 50-step warm-up and x0.3 from step 1200, 1500 steps, a
    # curve point every 100 steps, 256 held-out crops analysed
    cfg = _images_config(["--preset", "cpu"])
    assert (
        cfg.size,
        cfg.latent,
        cfg.lam,
        cfg.batch_size,
        cfg.lr,
        cfg.warmup,
        cfg.lr_drop_at,
        cfg.lr_drop,
        cfg.iterations,
        cfg.eval_every,
        cfg.n_eval,
        cfg.init,
        cfg.decomposed,
        cfg.data,
    ) == (32, 32, 1000.0, 32, 1e-4, 50, 1200, 0.3, 1500, 100, 256, "scaled", False, None)
    assert _images_config(["--preset", "cpu", "--decomposed"]).decomposed
    tc = IMAGES.train_config(cfg)
    assert (tc.lr, tc.warmup, tc.lr_drop_at, tc.lr_drop, tc.batch_size, tc.iterations, tc.lam) == (
        1e-4,
        50,
        1200,
        0.3,
        32,
        1500,
        1000.0,
    )
    # explicit options win over the preset
    cfg = _images_config(
        [
            "--preset",
            "cpu",
            "--iterations",
            "1400",
            "--eval-every",
            "200",
            "--warmup",
            "0",
            "--lr-drop-at",
            "0",
            "--size",
            "64",
        ]
    )
    assert (cfg.iterations, cfg.eval_every, cfg.warmup, cfg.lr_drop_at, cfg.size, cfg.n_eval) == (
        1400,
        200,
        0,
        0,
        64,
        256,
    )
    # the default stays the paper's protocol (a GPU job)
    d = _images_config([])
    assert (d.size, d.lr, d.iterations, d.batch_size, d.lr_drop_at, d.eval_every, d.init) == (
        64,
        1e-3,
        300_000,
        64,
        0,
        0,
        "scaled",
    )
    q = _images_config(["--quick"])
    assert q.size == 32 and q.iterations < 100 and q.n_eval <= 32
    # an old run (PyTorch init, no warm-up) can be described, hence resumed, on the command line
    assert (_images_config(["--init", "torch", "--warmup", "0"]).init) == "torch"


def test_images_option_errors_are_one_line(tmp_path, capsys):
    from vaeiso_ext.cli import main

    for argv, what in (
        (["--skip-unreadable"], "--skip-unreadable"),
        (["--warmup", "-1"], "--warmup"),
        (["--eval-every", "x"], "--eval-every"),
        (["--size", "40"], "--size"),
        (["--size", "0"], "--size"),
        (["--lr-drop", "2"], "--lr-drop"),
        (["--lr-drop-at", "-3"], "--lr-drop-at"),
    ):
        assert main(["reproduce", "images", *argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and what in err
    assert not (tmp_path / "o").exists()


def test_recorded_image_runs_read_as_they_trained():
    from vaeiso_ext.experiments.images import ImagesConfig

    # a description written before warm-up and the scaled init existed: trained with neither
    old = ImagesConfig.from_dict({"latent": 32, "lam": 1000.0, "iterations": 100, "batch_size": 32})
    assert (old.warmup, old.init) == (0, "torch")
    # imageexp's (old CLI) runs stored their warm-up and used the scaled init
    ie = ImagesConfig.from_dict({"latent": 32, "iterations": 100, "warmup": 1000, "skip_unreadable": False})
    assert (ie.warmup, ie.init) == (1000, "scaled")
    # and all of them before the image size and the lr drop: 64x64, no drop
    assert (old.size, old.lr_drop_at, ie.size, ie.lr_drop_at) == (64, 0, 64, 0)


def test_images_resume_with_a_longer_run_is_bit_identical(tmp_path):
    # the default data is a stream whose "epoch" is batch x min(iterations, 500): a run of 2 steps
    # (epochs of 2) resumed to 4 (epochs of 4) continues mid-epoch with the same crops, noise and
    # warm-up lr as a 4-step run: bitwise the same weights
    from vaeiso_ext.experiments.images import EXPERIMENT as IMAGES
    from vaeiso_ext.experiments.images import ImagesConfig

    torch.set_num_threads(1)
    kw = dict(latent=2, batch_size=4, lr=1e-4, n_eval=2, warmup=3, eval_every=1, curve_samples=2)
    IMAGES.reproduce(ImagesConfig(iterations=4, **kw), str(tmp_path / "a"), progress=False, figures=False, echo=None)
    IMAGES.reproduce(ImagesConfig(iterations=2, **kw), str(tmp_path / "b"), progress=False, figures=False, echo=None)
    res = IMAGES.reproduce(
        ImagesConfig(iterations=4, **kw), str(tmp_path / "b"), resume=True, progress=False, figures=False, echo=None
    )
    a, b = (load_checkpoint(str(tmp_path / d / "checkpoint.pt")) for d in "ab")
    assert a["step"] == b["step"] == 4 and res["training"]["steps"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # the curve too: the first run's last point (step 2) is the one a straight run takes there
    assert [{k: v for k, v in p.items() if k != "eval_seconds"} for p in b["evals"]] == [
        {k: v for k, v in p.items() if k != "eval_seconds"} for p in a["evals"]
    ]
    assert [p["step"] for p in a["evals"]] == [0, 1, 2, 3, 4]


def test_images_size_option_trains_and_analyses(tmp_path):
    # a 32x32 run: the stream, the held-out crops and the model take the size; `analyze` rebuilds
    # the 32x32 model from the checkpoint alone and finds the same per-dim results
    from vaeiso_ext.experiments import analyze_checkpoint
    from vaeiso_ext.experiments.images import EXPERIMENT as IMAGES
    from vaeiso_ext.experiments.images import ImagesConfig

    torch.set_num_threads(1)
    cfg = ImagesConfig(size=32, iterations=2, latent=2, batch_size=4, lr=1e-4, n_eval=2, warmup=2, lr_drop_at=1)
    res = IMAGES.reproduce(cfg, str(tmp_path / "r"), progress=False, figures=False, echo=None)
    ck = load_checkpoint(str(tmp_path / "r" / "checkpoint.pt"))
    assert ck["model_config"]["image_size"] == 32 and ck["train"]["lr_drop_at"] == 1
    assert ck["model"]["decoder.2.weight"].shape[0] == 64 * 2 * 2  # 64 channels of (32/16)^2 before the convs
    assert res["config"]["size"] == 32 and "32x32" in res["data"]
    again = analyze_checkpoint(
        str(tmp_path / "r" / "checkpoint.pt"), out=str(tmp_path / "a"), figures=False, progress=False, echo=None
    )
    # the same model on the same held-out crops in float64: the same numbers
    assert again["dims"] == res["dims"]


def test_images_stream_is_told_its_rank(monkeypatch):
    import vaeiso_ext.experiments.images as images

    monkeypatch.setattr(images, "init_distributed", lambda: (1, 2))
    data = images.EXPERIMENT.load_data(images.ImagesConfig(size=16, iterations=1, batch_size=2), progress=False)
    assert data.train.rank == 1 and data.train.size == 16 and data.test.shape[1:] == (3, 16, 16)
