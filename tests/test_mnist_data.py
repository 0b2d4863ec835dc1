"""Issue 21: MNIST from the user's own files (IDX raw or gzipped, or an .npz), split as in App. G,
and a bad file is one `error:` line naming the file and what is wrong. The tests write small
files themselves, byte by byte from the IDX format (big-endian magic number and dimensions,
then the uint8 pixels), and compare what is loaded with the pixels written."""

import gzip
import json
import shutil
import struct

import numpy as np
import pytest
import torch

from vaeiso_ext.cli import main
from vaeiso_ext.data.mnist import MNIST_TRAIN, load_mnist, mnist_files, read_idx

N_TRAIN, N_TEST = 30, 12


def _idx(arr: np.ndarray, magic: int) -> bytes:
    """The IDX encoding: magic number and dimensions as big-endian uint32, then the bytes."""
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _images(n: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    a[0, 0, 0], a[0, 0, 1] = 0, 255  # both ends of the range
    return a


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """Training and test images and labels, and a folder holding them as raw IDX files."""
    d = {
        "x_train": _images(N_TRAIN, 1),
        "x_test": _images(N_TEST, 2),
        "y_train": np.arange(N_TRAIN, dtype=np.uint8) % 10,
        "y_test": (np.arange(N_TEST, dtype=np.uint8) * 3) % 10,
    }
    folder = tmp_path_factory.mktemp("mnist") / "idx"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(_idx(d["x_train"], 0x803))
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx(d["x_test"], 0x803))
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx(d["y_train"], 0x801))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(d["y_test"], 0x801))
    d["folder"] = folder
    return d


def _expected(pixels: np.ndarray) -> torch.Tensor:
    """uint8 / 255 in float64, flattened to 784 pixels per image."""
    return torch.from_numpy(pixels.reshape(len(pixels), -1).astype(np.float64) / 255.0)


def _check(data, x_train, x_test):
    assert data.train.dtype == data.test.dtype == torch.float32
    assert data.train.shape == (len(x_train), 784) and data.test.shape == (len(x_test), 784)
    # float32 holds k/255 to half an ulp (<= 2^-25 here); float64 is the oracle
    torch.testing.assert_close(data.train.double(), _expected(x_train), rtol=0, atol=2.0**-25)
    torch.testing.assert_close(data.test.double(), _expected(x_test), rtol=0, atol=2.0**-25)
    assert data.train.min() == 0 and data.train.max() == 1


def test_raw_idx_folder(mnist):
    data = load_mnist(mnist["folder"])
    _check(data, mnist["x_train"], mnist["x_test"])  # fewer than 50,000: all of them train
    assert torch.equal(data.train_labels, torch.from_numpy(mnist["y_train"].astype(np.int64)))
    assert torch.equal(data.test_labels, torch.from_numpy(mnist["y_test"].astype(np.int64)))
    assert data.n_train_file == N_TRAIN and len(data.files) == 4
    assert "train-images-idx3-ubyte" in data.source and "t10k-images-idx3-ubyte" in data.source
    assert f"fewer than {MNIST_TRAIN:,}" in data.source


def test_the_first_training_images_train_and_the_test_file_is_held_out(mnist):
    data = load_mnist(mnist["folder"], n_train=20)  # as 50,000 of MNIST's 60,000
    _check(data, mnist["x_train"][:20], mnist["x_test"])
    assert torch.equal(data.train_labels, torch.from_numpy(mnist["y_train"][:20].astype(np.int64)))
    assert data.n_train_file == N_TRAIN and f"first 20 of the {N_TRAIN} training images" in data.source


def test_gzipped_idx_and_the_dotted_spelling(mnist, tmp_path):
    for src, name in (
        ("train-images-idx3-ubyte", "train-images.idx3-ubyte.gz"),
        ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"),
    ):
        (tmp_path / name).write_bytes(gzip.compress((mnist["folder"] / src).read_bytes()))
    data = load_mnist(tmp_path)
    _check(data, mnist["x_train"], mnist["x_test"])
    assert data.train_labels is None and data.test_labels is None  # label files are optional
    assert "train-images.idx3-ubyte.gz" in data.source and "t10k-images-idx3-ubyte.gz" in data.source


def test_read_idx_labels(mnist):
    y = read_idx(mnist["folder"] / "train-labels-idx1-ubyte", images=False)
    assert y.dtype == np.uint8 and np.array_equal(y, mnist["y_train"])


@pytest.mark.parametrize("flat", [False, True])
def test_npz_folder_and_file(mnist, tmp_path, flat):
    shape = (lambda a: a.reshape(len(a), -1)) if flat else (lambda a: a)
    p = tmp_path / "mnist.npz"
    np.savez(
        p,
        x_train=shape(mnist["x_train"]),
        x_test=shape(mnist["x_test"]),
        y_train=mnist["y_train"],
        y_test=mnist["y_test"],
    )
    for where in (tmp_path, p):  # the folder holding it, or the file itself
        data = load_mnist(where, n_train=25)
        _check(data, mnist["x_train"][:25], mnist["x_test"])
        assert torch.equal(data.test_labels, torch.from_numpy(mnist["y_test"].astype(np.int64)))
        assert data.files == [str(p)] and str(p) in data.source


def test_file_choice_errors(mnist, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        mnist_files(tmp_path / "nope")
    with pytest.raises(ValueError, match="no .npz"):
        mnist_files(tmp_path)  # an empty folder
    shutil.copy(mnist["folder"] / "train-images-idx3-ubyte", tmp_path)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        mnist_files(tmp_path)  # the test file is missing


# ------------------------------------------------------------------ bad files via the CLI


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _corrupt(mnist, folder, name, data: bytes):
    """``folder``: a copy of the IDX folder with ``name`` replaced by ``data``."""
    shutil.copytree(mnist["folder"], folder)
    (folder / name).write_bytes(data)


def _bad_files(mnist):
    train = _idx(mnist["x_train"], 0x803)
    bad_dims = _idx(np.zeros((N_TRAIN, 27, 28), np.uint8), 0x803)
    labels_for_images = _idx(mnist["y_train"], 0x801)
    return {  # name -> (file name, bytes, what the message must say)
        "bad magic": ("train-images-idx3-ubyte", b"\x00\x00\x08\x04" + train[4:], "magic number"),
        "labels as images": ("t10k-images-idx3-ubyte", labels_for_images, "magic number"),
        "not IDX at all": ("train-images-idx3-ubyte", b"<html>not found</html>" * 40, "magic number"),
        "wrong dims": ("train-images-idx3-ubyte", bad_dims, "dimensions"),
        "truncated": ("train-images-idx3-ubyte", train[:-100], "truncated"),
        "truncated header": ("t10k-images-idx3-ubyte", train[:10], "truncated"),
        "trailing bytes": ("train-images-idx3-ubyte", train + b"\x00" * 7, "size"),
        "label count": ("train-labels-idx1-ubyte", _idx(mnist["y_train"][:-1], 0x801), "labels for"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "bad magic",
        "labels as images",
        "not IDX at all",
        "wrong dims",
        "truncated",
        "truncated header",
        "trailing bytes",
        "label count",
    ],
)
def test_bad_idx_file_is_one_error_line(mnist, tmp_path, capsys, case):
    name, data, what = _bad_files(mnist)[case]
    folder = tmp_path / "bad"
    _corrupt(mnist, folder, name, data)
    out = tmp_path / "out"
    # progress on (the default): no status line may come before the error
    assert main(["reproduce", "digits", "--data", str(folder), "--iterations", "2", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert what in line and name in line, line
    assert not out.exists()


def test_truncated_gzip_is_one_error_line(mnist, tmp_path, capsys):
    folder = tmp_path / "gz"
    folder.mkdir()
    gz = gzip.compress((mnist["folder"] / "train-images-idx3-ubyte").read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])
    shutil.copy(mnist["folder"] / "t10k-images-idx3-ubyte", folder)
    assert main(["reproduce", "digits", "--data", str(folder), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "train-images-idx3-ubyte.gz" in line and "truncated" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["truncated", "no x_test", "float pixels", "wrong dims"])
def test_bad_npz_is_one_error_line(mnist, tmp_path, capsys, case):
    p = tmp_path / "mnist.npz"
    if case == "truncated":
        np.savez(p, x_train=mnist["x_train"], x_test=mnist["x_test"])
        p.write_bytes(p.read_bytes()[:5000])
        what = "truncated"
    elif case == "no x_test":
        np.savez(p, x_train=mnist["x_train"], y_test=mnist["y_test"])
        what = "x_test"
    elif case == "float pixels":
        np.savez(p, x_train=mnist["x_train"] / 255.0, x_test=mnist["x_test"])
        what = "uint8"
    else:
        np.savez(p, x_train=mnist["x_train"], x_test=mnist["x_test"].reshape(N_TEST, 784, 1))
        what = "dimensions"
    assert main(["reproduce", "digits", "--data", str(p), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert what in line and str(p) in line, line
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ a run on MNIST files


def test_reproduce_digits_on_mnist_files(mnist, tmp_path, capsys):
    out = tmp_path / "run"
    # the quick preset (400 steps of batch 256: here all 30 images each step; 128 samples
    # analysed), fewer steps to keep the test short
    assert (
        main(
            [
                "reproduce",
                "digits",
                "--data",
                str(mnist["folder"]),
                "--quick",
                "--iterations",
                "20",
                "--latent",
                "4",
                "--no-figures",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for where in (res["data"], report):
        assert "MNIST" in where and str(mnist["folder"]) in where
        assert "train-images-idx3-ubyte" in where and "t10k-images-idx3-ubyte" in where
    assert res["training"]["n_train"] == N_TRAIN and res["training"]["steps"] == 20
    # --n-eval 128 (the preset) asks for more than the 12 held out: clamped, and said so
    assert res["n_held_out"] == N_TEST and res["n_samples"] == N_TEST == res["config"]["n_eval"]
    assert "128" in res["n_eval_note"] and "note:" in err and "128" in err
    assert res["config"]["data"] == str(mnist["folder"])
    # the held-out samples analysed are the test file's: their KL comes from those images
    from vaeiso_ext.experiments import read_run
    from vaeiso_ext.experiments.base import Experiment
    from vaeiso_ext.train import kl_per_dim

    ck, _, _ = read_run(str(out))
    model = Experiment.model_from_checkpoint(ck, str(out)).double().eval()
    with torch.no_grad():  # float32 rounds k/255 correctly, as the loader's float32 division does
        mu, logvar = model.encode(_expected(mnist["x_test"]).float().double())
    kl = kl_per_dim(mu, logvar).mean(0)
    by_index = {d["index"]: d["kl"] for d in res["dims"]}
    for j in range(4):
        assert by_index[j] == pytest.approx(kl[j].item(), rel=1e-9, abs=1e-12)
