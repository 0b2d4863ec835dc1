"""Real MNIST-format data through `--data`'s loader: Fashion-MNIST as Debian packages it
(`apt-get install dataset-fashion-mnist`, four gzipped IDX files in /usr/share/datasets/fashion-mnist).

The oracle is an independent reading of the same files (gzip + the IDX header read here with
`struct`, pixels / 255 in float64), and the data set's published facts: 60,000 training and 10,000
test images of 28x28, ten classes, 6,000 training and 1,000 test images per class.

Where the package is missing the test is skipped by name; CI installs it and sets
VAEISO_REQUIRE_FASHION_MNIST=1, which turns a missing folder into a failure."""

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from vaeiso_ext.data.mnist import MNIST_TRAIN, load_mnist

FOLDER = os.environ.get("VAEISO_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


def _available() -> bool:
    return os.path.isfile(os.path.join(FOLDER, "train-images-idx3-ubyte.gz"))


if not _available() and os.environ.get("VAEISO_REQUIRE_FASHION_MNIST") != "1":
    pytest.skip(
        f"Fashion-MNIST not installed at {FOLDER} (apt-get install dataset-fashion-mnist)", allow_module_level=True
    )


def _read(name: str) -> np.ndarray:
    """The IDX file read independently of vaeiso_ext: big-endian magic and dims, then uint8."""
    with gzip.open(os.path.join(FOLDER, name), "rb") as f:
        raw = f.read()
    (magic,) = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    assert magic >> 8 == 0x08, f"{name}: not an unsigned-byte IDX file"
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def data():
    assert _available(), f"VAEISO_REQUIRE_FASHION_MNIST=1 but no Fashion-MNIST in {FOLDER}"
    return load_mnist(FOLDER)


def test_sizes_and_app_g_split(data):
    assert data.n_train_file == 60_000
    assert data.train.shape == (MNIST_TRAIN, 784) == (50_000, 784)  # App. G: the first 50,000 train
    assert data.test.shape == (10_000, 784)
    assert data.train.dtype == data.test.dtype == torch.float32
    assert "the first 50,000 of the 60,000 training images" in data.source
    assert "10,000 test images" in data.source


def test_pixels_match_an_independent_reading(data):
    x_tr = _read("train-images-idx3-ubyte.gz")
    x_te = _read("t10k-images-idx3-ubyte.gz")
    assert x_tr.shape == (60_000, 28, 28) and x_te.shape == (10_000, 28, 28)
    want_tr = torch.from_numpy(x_tr[:50_000].reshape(50_000, -1).astype(np.float64) / 255.0)
    want_te = torch.from_numpy(x_te.reshape(10_000, -1).astype(np.float64) / 255.0)
    # float32 holds k/255 to half an ulp of a number below 1: at most 2^-25
    torch.testing.assert_close(data.train.double(), want_tr, rtol=0, atol=2.0**-25)
    torch.testing.assert_close(data.test.double(), want_te, rtol=0, atol=2.0**-25)
    # the pixel range: both ends occur (real photographs of clothes on a black background)
    for x in (data.train, data.test):
        assert x.min().item() == 0.0 and x.max().item() == 1.0


def test_labels_ten_balanced_classes(data):
    y_tr_file = _read("train-labels-idx1-ubyte.gz")
    y_te = _read("t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(np.bincount(y_tr_file, minlength=10), np.full(10, 6_000))
    assert np.array_equal(np.bincount(y_te, minlength=10), np.full(10, 1_000))
    assert torch.equal(data.train_labels, torch.from_numpy(y_tr_file[:50_000].astype(np.int64)))
    assert torch.equal(data.test_labels, torch.from_numpy(y_te.astype(np.int64)))
