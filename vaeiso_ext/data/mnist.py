"""MNIST from the user's own files, in its distributed form (nothing is downloaded).

Accepted, in a folder ``DIR``:

- the IDX files ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (also spelled
  ``train-images.idx3-ubyte``), raw or gzipped (``.gz``); the label files
  (``train-labels-idx1-ubyte``, ``t10k-labels-idx1-ubyte``) are read and checked when present;
- or one ``.npz`` holding ``x_train`` and ``x_test`` (uint8, ``(N, 28, 28)`` or ``(N, 784)``;
  ``y_train`` / ``y_test`` optional), as Keras distributes it. ``DIR`` may also be the ``.npz``
  file itself.

Pixels are scaled to [0, 1] as uint8 / 255. The paper's split (App. G): the first 50,000 training
images train the model (all of them if the file holds fewer); the test file is held out. A bad
file raises ``ValueError`` naming the file and what is wrong (magic number, dimensions, size).
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

MNIST_SIDE = 28
MNIST_TRAIN = 50_000  # App. G: the first 50,000 training images
# IDX magic numbers: two zero bytes, the element type (0x08: unsigned byte), the number of dims
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

_NAMES = {  # what each file may be called (the first found wins), before an optional ".gz"
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


@dataclass
class MnistData:
    """Training and held-out images ``(N, 784)`` float32 in [0, 1], labels (or None), the files
    read and a one-line description of the split."""

    train: Tensor
    test: Tensor
    train_labels: Tensor | None
    test_labels: Tensor | None
    files: list[str] = field(default_factory=list)
    source: str = ""
    n_train_file: int = 0  # training images in the file (before taking the first 50,000)


def _read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped for a ``.gz`` name."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"MNIST file {path}: not a complete gzip file (truncated or corrupt: {e})") from None
    except OSError as e:
        raise ValueError(f"MNIST file {path}: cannot be read ({e.strerror or e})") from None


def read_idx(path: str | os.PathLike, *, images: bool = True) -> np.ndarray:
    """The uint8 array of an MNIST IDX file (raw or ``.gz``): images ``(N, 28, 28)`` (magic
    0x00000803) or labels ``(N,)`` (magic 0x00000801). Raises ``ValueError`` naming the file for
    a wrong magic number, wrong dimensions, or a size that does not match the header."""
    path = os.fspath(path)
    raw = _read_bytes(path)
    ndim = 3 if images else 1
    want_magic = IMAGES_MAGIC if images else LABELS_MAGIC
    what = "an images" if images else "a labels"
    if len(raw) < 4:
        raise ValueError(f"MNIST file {path}: truncated ({len(raw)} bytes, not even the 4-byte magic number)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != want_magic:
        raise ValueError(
            f"MNIST file {path}: bad magic number 0x{magic:08x} (expected 0x{want_magic:08x}, "
            f"{what} IDX file of unsigned bytes)"
        )
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"MNIST file {path}: truncated ({len(raw)} bytes, shorter than its {head}-byte header)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if images and dims[1:] != [MNIST_SIDE, MNIST_SIDE]:
        raise ValueError(
            f"MNIST file {path}: dimensions {dims[0]} x {dims[1]} x {dims[2]}, expected N x {MNIST_SIDE} x {MNIST_SIDE}"
        )
    if dims[0] < 1:
        raise ValueError(f"MNIST file {path}: holds no {'images' if images else 'labels'} (N = 0)")
    size = head + int(np.prod(dims))
    if len(raw) < size:
        raise ValueError(
            f"MNIST file {path}: truncated: the header promises {dims[0]:,} "
            f"{'images' if images else 'labels'} ({size:,} bytes), the file holds "
            f"{len(raw):,} bytes"
        )
    if len(raw) > size:
        raise ValueError(
            f"MNIST file {path}: wrong size: {len(raw):,} bytes where the header "
            f"({' x '.join(map(str, dims))}) makes {size:,}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _find(folder: str, key: str) -> str | None:
    for name in _NAMES[key]:
        for suffix in ("", ".gz"):
            p = os.path.join(folder, name + suffix)
            if os.path.isfile(p):
                return p
    return None


def _pixels(a: np.ndarray, where: str) -> Tensor:
    """uint8 images -> ``(N, 784)`` float32 in [0, 1]."""
    if a.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 pixels (0-255), got {a.dtype}")
    if a.ndim == 2 and a.shape[1] == MNIST_SIDE * MNIST_SIDE:
        a = a.reshape(-1, MNIST_SIDE, MNIST_SIDE)
    if a.ndim != 3 or a.shape[1:] != (MNIST_SIDE, MNIST_SIDE) or a.shape[0] < 1:
        raise ValueError(
            f"{where}: dimensions {' x '.join(map(str, a.shape))}, expected "
            f"N x {MNIST_SIDE} x {MNIST_SIDE} (or N x {MNIST_SIDE * MNIST_SIDE}) with N >= 1"
        )
    return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)


def _labels(a: np.ndarray | None, n: int, where: str) -> Tensor | None:
    if a is None:
        return None
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{where}: {a.shape[0] if a.ndim else 0} labels for {n} images")
    return torch.from_numpy(a.astype(np.int64))


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "x_test") if k not in z.files]
            if missing:
                raise ValueError(
                    f"MNIST file {path}: no {' or '.join(missing)} array (it holds {', '.join(z.files) or 'nothing'})"
                )
            return tuple(z[k] if k in z.files else None for k in ("x_train", "x_test", "y_train", "y_test"))
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise ValueError(f"MNIST file {path}: not a readable .npz (truncated or corrupt: {type(e).__name__})") from None
    except ValueError as e:
        if str(e).startswith("MNIST file"):
            raise
        raise ValueError(f"MNIST file {path}: not a readable .npz ({e})") from None


def mnist_files(path: str | os.PathLike) -> dict[str, str]:
    """Which files :func:`load_mnist` reads for ``path``: keys ``npz``, or ``train_images``,
    ``test_images`` and (when present) the label files. Raises ``FileNotFoundError`` for a missing
    path, ``ValueError`` for a folder without (a single choice of) MNIST files."""
    path = os.fspath(path)
    if os.path.isfile(path):
        if not path.endswith(".npz"):
            raise ValueError(f"MNIST data {path}: expected a folder of IDX files or an .npz file")
        return {"npz": path}
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MNIST data not found: {path}")
    found = {k: _find(path, k) for k in _NAMES}
    if found["train_images"] or found["test_images"]:
        for k in ("train_images", "test_images"):
            if not found[k]:
                raise ValueError(
                    f"MNIST folder {path}: no {_NAMES[k][0]} (raw or .gz) beside "
                    f"{os.path.basename(found['train_images'] or found['test_images'])}"
                )
        return {k: v for k, v in found.items() if v}
    npz = sorted(f for f in os.listdir(path) if f.endswith(".npz"))
    if len(npz) == 1:
        return {"npz": os.path.join(path, npz[0])}
    if npz:
        raise ValueError(f"MNIST folder {path}: several .npz files ({', '.join(npz)}); pass one of them")
    raise ValueError(
        f"MNIST folder {path}: no {_NAMES['train_images'][0]} / {_NAMES['test_images'][0]} "
        "(raw or .gz) and no .npz file"
    )


def load_mnist(path: str | os.PathLike, n_train: int = MNIST_TRAIN) -> MnistData:
    """MNIST from the user's files (see the module docstring): the first ``n_train`` training
    images (all, if the file holds fewer) and every test image, as ``(N, 784)`` float32 in
    [0, 1]."""
    files = mnist_files(path)
    if "npz" in files:
        p = files["npz"]
        xa, xb, ya, yb = _read_npz(p)
        x_tr, x_te = _pixels(xa, f"MNIST file {p}, x_train"), _pixels(xb, f"MNIST file {p}, x_test")
        y_tr = _labels(ya, x_tr.shape[0], f"MNIST file {p}, y_train")
        y_te = _labels(yb, x_te.shape[0], f"MNIST file {p}, y_test")
        used, where = [p], f"MNIST {p} (x_train, x_test)"
    else:
        x_tr = _pixels(read_idx(files["train_images"]), f"MNIST file {files['train_images']}")
        x_te = _pixels(read_idx(files["test_images"]), f"MNIST file {files['test_images']}")
        y_tr, y_te = (
            _labels(read_idx(files[k], images=False), x.shape[0], f"MNIST file {files[k]}") if k in files else None
            for k, x in (("train_labels", x_tr), ("test_labels", x_te))
        )
        used = list(files.values())
        where = f"MNIST IDX files in {os.fspath(path)}: " + ", ".join(
            os.path.basename(files[k]) for k in _NAMES if k in files
        )
    n_file = int(x_tr.shape[0])
    k = min(n_train, n_file)
    if k < n_file:
        split = f"training: the first {k:,} of the {n_file:,} training images"
    elif n_file < n_train:
        split = f"training: all {n_file:,} training images (the file holds fewer than {n_train:,})"
    else:
        split = f"training: all {n_file:,} training images"
    source = f"{where}; 28x28 pixels /255; {split}; held out: the {x_te.shape[0]:,} test images"
    if k < n_file:  # a copy, so that the unused images are freed
        x_tr, y_tr = x_tr[:k].clone(), None if y_tr is None else y_tr[:k].clone()
    return MnistData(x_tr, x_te, y_tr, y_te, used, source, n_file)
