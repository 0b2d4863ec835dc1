"""Images and digits (App. D.2, G): data loaders, models, training, analysis, CLI."""

import json

import pytest
import torch

from vaeiso_ext import metrics
from vaeiso_ext.analysis import analyze_latents
from vaeiso_ext.data.digits import load_digits
from vaeiso_ext.data.images import load_image_folder, skimage_crops
from vaeiso_ext.experiments import UsageError, read_run
from vaeiso_ext.experiments.digits import DigitsConfig
from vaeiso_ext.experiments.images import EXPERIMENT as IMAGES
from vaeiso_ext.experiments.images import ImagesConfig
from vaeiso_ext.experiments.real_report import traversal_grid
from vaeiso_ext.models import ConvVAE, DigitsVAE, build_model
from vaeiso_ext.train import TrainConfig, train

# ------------------------------------------------------------------ models


def test_conv_vae_shapes():
    torch.manual_seed(0)
    m = ConvVAE(latent=8)
    x = torch.rand(2, 3, 64, 64)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (2, 8)
    assert m.decode(mu).shape == (2, 3, 64, 64)
    x_hat, mu2, lv2, z = m(x)
    assert x_hat.shape == x.shape and z.shape == (2, 8)
    # the App. D.2 layers: GDN in the encoder, IGDN in the decoder
    from vaeiso_ext.nn import GDN

    gdns = [mod for mod in m.modules() if isinstance(mod, GDN)]
    assert sum(not g.inverse for g in gdns) == 4 and sum(g.inverse for g in gdns) == 4
    assert build_model(m.config).config == m.config


def test_digits_vae_shapes():
    m = DigitsVAE(latent=5)
    x = torch.rand(3, 784)
    with torch.no_grad():
        x_hat, mu, logvar, z = m(x)
    assert x_hat.shape == (3, 784) and mu.shape == (3, 5)
    assert float(x_hat.min()) >= 0 and float(x_hat.max()) <= 1  # sigmoid output for BCE
    with pytest.raises(ValueError, match="image_size"):
        ConvVAE(image_size=60)


# ------------------------------------------------------------------ data


def test_skimage_crops_and_digits():
    x = skimage_crops(64)
    assert x.dim() == 4 and x.shape[1:] == (3, 64, 64) and x.shape[0] > 500
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    d, y = load_digits()
    assert d.shape == (1797, 784) and y.shape == (1797,)
    assert float(d.min()) == 0.0 and float(d.max()) <= 1.0


def _write_images(folder, sizes):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        arr = (torch.rand(h, w, 3) * 255).byte().numpy()
        Image.fromarray(arr).save(folder / f"img{i}.png")


def test_image_folder_loader(tmp_path):
    _write_images(tmp_path / "ok", [(100, 80), (90, 120)])
    x = load_image_folder(tmp_path / "ok", size=64)
    assert x.shape == (2, 3, 64, 64)
    x = load_image_folder(tmp_path / "ok", size=64, crop=70)
    assert x.shape == (2, 3, 64, 64)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty")
    _write_images(tmp_path / "small", [(40, 50)])
    with pytest.raises(ValueError, match="img0.png.*too small"):
        load_image_folder(tmp_path / "small", size=64)
    _write_images(tmp_path / "crop", [(100, 100)])
    with pytest.raises(ValueError, match="too small"):
        load_image_folder(tmp_path / "crop", size=64, crop=120)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        load_image_folder(bad)


# ------------------------------------------------------------------ training and analysis


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    x = skimage_crops(64)[:96]
    m = ConvVAE(latent=4, channels=8, hidden=64)
    hist = train(m, x, metrics.SSIM(), TrainConfig(lam=1000.0, epochs=4, batch_size=32, seed=0), progress=False)
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_analysis_schema_digits():
    torch.manual_seed(0)
    d, _ = load_digits()
    m = DigitsVAE(latent=4, hidden=64)
    train(m, d[:512], metrics.BCE(), TrainConfig(lam=2000 / 784, epochs=3, batch_size=128), progress=False)
    res = analyze_latents(m, d[1500:1540], metrics.BCE(), beta=784 / 2000)
    assert len(res["dims"]) == 4 and res["n_samples"] == 40
    inv = [dim["inv_sigma2_mean"] for dim in res["dims"]]
    assert inv == sorted(inv, reverse=True)
    for dim in res["dims"]:
        assert set(dim) >= {"kl", "inv_sigma2_mean", "dj_mean", "dj_sd", "norm_mean", "norm_sd", "active"}
        assert all(torch.isfinite(torch.tensor(v)) for v in (dim["dj_mean"], dim["norm_mean"]))
    assert res["active_dims"] == sum(dim["active"] for dim in res["dims"])
    assert set(res["gram"]) == {"diag_mean", "offdiag_abs_mean"}


def test_norm_uses_the_papers_formula():
    """norm_mean must equal (2/beta) E[sigma^2 D'_j] computed independently."""
    from vaeiso_ext.analysis import dj_prime

    torch.manual_seed(1)
    m = DigitsVAE(latent=3, hidden=32).double()
    x = torch.rand(10, 784, dtype=torch.float64)
    beta = 0.5
    res = analyze_latents(m, x, metrics.BCE(), beta, gram=False)
    mu, lv = m.encode(x)
    dj = dj_prime(m.decode, mu.detach(), metrics.BCE())
    want = ((2 / beta) * lv.exp().detach() * dj).mean(0)
    for dim in res["dims"]:
        assert dim["norm_mean"] == pytest.approx(want[dim["index"]].item(), rel=1e-9)


def test_traversal_grid_shape():
    m = ConvVAE(latent=3, channels=8, hidden=32)
    g = traversal_grid(m, torch.rand(3, 64, 64), [2, 0, 1], values=(-2, 0, 2))
    assert g.shape == (3, 3 * 64, 3 * 64)
    d = DigitsVAE(latent=2, hidden=16)
    assert traversal_grid(d, torch.rand(784), [0, 1], values=(-2, 2)).shape == (3, 56, 56)


def test_reproduce_digits_cli_outputs(tmp_path):
    from vaeiso_ext.cli import main

    out = tmp_path / "digits"
    rc = main(
        [
            "reproduce",
            "digits",
            "--latent",
            "3",
            "--iterations",
            "20",
            "--n-eval",
            "16",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["experiment"] == "digits" and len(res["dims"]) == 3
    assert res["beta"] == pytest.approx(784 / 2000)
    assert (out / "report.md").read_text().startswith("# digits VAE")
    assert (out / "figures" / "traversal.png").stat().st_size > 0
    assert (out / "figures" / "dims.png").stat().st_size > 0
    ck, name, desc = read_run(str(out / "checkpoint.pt"))
    assert name == "digits" and desc["latent"] == 3 and ck["step"] == 20 and ck["history"]
    assert main(["analyze", str(out / "checkpoint.pt"), "--no-figures"]) == 0


def test_reproduce_images_cli_missing_folder(tmp_path, capsys):
    from vaeiso_ext.cli import main

    rc = main(["reproduce", "images", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_run_config_validation():
    with pytest.raises(UsageError, match="--crop"):
        ImagesConfig(crop=40).validate()
    with pytest.raises(UsageError, match="lambda"):
        DigitsConfig(lam=float("inf")).validate()
    import argparse

    p = argparse.ArgumentParser()
    IMAGES.add_arguments(p)
    r = IMAGES.config_from_args(p.parse_args(["--quick"]))
    assert r.iterations == 50 and r.lam == 1000 and IMAGES.beta(r) == pytest.approx(1e-3)
    r = IMAGES.config_from_args(p.parse_args(["--quick", "--iterations", "7"]))
    assert r.iterations == 7 and r.batch_size == 32  # an explicit option beats the preset
