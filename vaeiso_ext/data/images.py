"""Image data for the image VAE (the paper's App. D.2): a folder of images, or real photographs
shipped inside scikit-image cut into square crops (the default: a fresh machine has them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

# Colour photographs bundled with scikit-image (no download needed).
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "stereo_motorcycle",
)


def _pil_to_rgb01(im) -> np.ndarray:
    """A PIL image -> (H, W, 3) float32 in [0, 1], scaled by the bit depth of its mode.

    ``convert("RGB")`` clips 16- and 32-bit modes to 8 bits (a 0..65535 ramp becomes mostly 255),
    so integer modes beyond 8 bits are read as arrays and divided by their own full scale."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.float32) / 65535.0
    elif mode == "I":  # 32-bit integer: PIL's mode for most 16-bit greyscale PNGs
        arr = np.asarray(im, dtype=np.float64)
        arr = (arr / (65535.0 if arr.max() <= 65535 else 2.0**32 - 1)).astype(np.float32)
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float32)
    else:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.repeat(arr[..., None], 3, axis=-1)  # greyscale -> RGB


def _read_png16(path: Path) -> np.ndarray | None:
    """A 16-bit-per-channel colour PNG as (H, W, 3) float32 in [0, 1] (Pillow reads those as
    8-bit RGB), or None when the file is not one."""
    from .png16 import is_png16_colour, read_png16

    with open(path, "rb") as f:
        if not is_png16_colour(f.read(26)):
            return None
        f.seek(0)
        arr = read_png16(f.read())
    return (arr[..., :3].astype(np.float64) / 65535.0).astype(np.float32)


def _resize(rgb: np.ndarray, size: int) -> Tensor:
    """(side, side, 3) float in [0, 1] -> (3, size, size), bicubic with antialiasing."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    if t.shape[-1] != size:
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return t[0]


def load_image_folder(
    path: str | os.PathLike,
    size: int = 64,
    crop: int | None = None,
    limit: int | None = None,
    skip_unreadable: bool = False,
    report: dict | None = None,
) -> Tensor:
    """Load every image in ``path`` as a centred square crop resized to ``size`` x ``size``.

    Args:
        path: a folder of images (e.g. CelebA's ``img_align_celeba``); sub-folders are ignored.
        size: output side (64 for the paper's network).
        crop: side of the centred square cut before resizing; default the image's shorter side.
            For CelebA's 178x218 aligned faces a side near 148 keeps the face.
        limit: load at most this many images (sorted by file name).
        skip_unreadable: skip files that cannot be decoded (counted in ``report``) instead of
            raising; images too small for the crop still raise.
        report: a dict that receives ``loaded``, ``skipped`` (count) and ``skipped_files``.

    8-bit images are divided by 255; 16-bit ones (greyscale, or colour PNGs via imageio) by
    65535, never clipped to 8 bits. Greyscale is repeated over the three channels, alpha dropped.
    Returns an ``(N, 3, size, size)`` float32 tensor in [0, 1]. Raises ``FileNotFoundError``
    for a missing folder, ``ValueError`` for a folder with no (readable) images, an unreadable
    file (unless skipped) or an image smaller than the crop (the message names the file).
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if limit is not None:
        files = files[:limit]
    out, skipped = [], []
    for f in files:
        try:
            rgb = _read_png16(f)
            if rgb is None:
                with Image.open(f) as im:
                    rgb = _pil_to_rgb01(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            if skip_unreadable:
                skipped.append(str(f))
                continue
            raise ValueError(f"cannot read image {f}: {e}") from e
        h, w = rgb.shape[:2]
        side = crop or min(w, h)
        if side > min(w, h) or side < size:
            raise ValueError(
                f"image {f} is {w}x{h}: too small for a {side}x{side} crop resized to "
                f"{size}x{size} (the crop must fit in the image and be at least {size})"
            )
        left, top = (w - side) // 2, (h - side) // 2
        out.append(_resize(rgb[top : top + side, left : left + side], size))
    if report is not None:
        report.update(loaded=len(out), skipped=len(skipped), skipped_files=skipped)
    if not out:
        raise ValueError(f"image folder {folder}: none of its {len(files)} images could be read")
    return torch.stack(out).clamp_(0.0, 1.0)


def skimage_photos() -> list[np.ndarray]:
    """The colour photographs of :data:`SKIMAGE_PHOTOS` this scikit-image ships, each (H, W, 3)
    float32 in [0, 1]."""
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError("the default image data needs scikit-image: pip install scikit-image") from e
    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # an image this scikit-image does not ship
            continue
        img = img[0] if isinstance(img, tuple) else img
        photos.append(np.asarray(img, dtype=np.float32)[..., :3] / 255.0)
    if not photos:
        raise RuntimeError("no scikit-image photographs could be loaded")
    return photos


class RandomCrops:
    """An endless stream of ``size`` x ``size`` crops of photographs, drawn afresh at each request:
    a photograph chosen with probability proportional to its area, a square of random side
    between ``min_scale`` of ``max_side`` (at least ``size``) and the photograph's shorter side
    (uniform in log side) at a random position, resized to ``size`` (antialiased) and flipped
    left-right with probability 1/2.

    Duck-types the data tensor :func:`vaeiso_ext.train.train` takes: ``shape[0]`` is the number of
    crops that make one "epoch" (``epoch_size``), ``x[idx]`` returns ``len(idx)`` fresh crops (the
    indices themselves are ignored) and ``set_epoch(e)`` reseeds the stream from ``(seed, e,
    rank)`` and ``skip(k)`` advances it past k crops, so a resumed run draws the same crops. ``fixed(n, seed)``
    gives a reproducible tensor of crops (a held-out set).

    ``rank``: the process's rank in a data-parallel run (the caller's: this layer knows nothing of
    training). Each rank draws its own share of every batch from its own seeded generator, so
    the world size is not needed; rank 0 is the single-process stream.
    """

    def __init__(
        self,
        photos: list[np.ndarray] | None = None,
        size: int = 64,
        epoch_size: int = 6400,
        min_scale: float = 0.125,
        seed: int = 0,
        rank: int = 0,
    ):
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"RandomCrops: rank: expected an int, got {type(rank).__name__}")
        if rank < 0:
            raise ValueError(f"RandomCrops: rank: expected an int >= 0, got {rank}")
        self.rank = rank
        photos = skimage_photos() if photos is None else photos
        self.photos = [torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)).permute(2, 0, 1) for p in photos]
        if not self.photos or min(min(p.shape[1:]) for p in self.photos) < size:
            raise ValueError(f"RandomCrops: every photograph must be at least {size}x{size}")
        if not 0 < min_scale <= 1:
            raise ValueError(f"RandomCrops: min_scale: expected in (0, 1], got {min_scale!r}")
        self.size, self.min_scale, self.seed = int(size), float(min_scale), int(seed)
        self.epoch_size = int(epoch_size)
        area = torch.tensor([float(p.shape[1] * p.shape[2]) for p in self.photos], dtype=torch.float64)
        self.weights = area / area.sum()
        self.device = torch.device("cpu")
        self.set_epoch(0)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.epoch_size, 3, self.size, self.size)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + int(epoch)) * 64 + self.rank) * 7 + 5)

    def to(self, device) -> "RandomCrops":
        self.device = torch.device(device)
        return self

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, idx) -> Tensor:
        n = len(idx) if hasattr(idx, "__len__") else int(idx.numel())
        return self.sample(n, self.generator).to(self.device)

    def _draw(self, n: int, g: torch.Generator) -> tuple[list, list]:
        """The random numbers of ``n`` crops: which photograph, and (scale, x, y, flip)."""
        which = torch.multinomial(self.weights, n, replacement=True, generator=g).tolist()
        return which, torch.rand(n, 4, generator=g, dtype=torch.float64).tolist()

    def skip(self, n: int) -> None:
        """Advance the stream past ``n`` crops without making them (a mid-epoch resume): the
        generator makes the same draws as ``x[idx]`` would, so the next crops are the same."""
        self._draw(n, self.generator)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` fresh crops ``(n, 3, size, size)`` drawn with ``generator``."""
        which, u = self._draw(n, generator)
        out = torch.empty(n, 3, self.size, self.size)
        for i, (k, (us, ux, uy, uf)) in enumerate(zip(which, u)):
            img = self.photos[k]
            H, W = img.shape[1:]
            hi = min(H, W)
            lo = min(hi, max(self.size, int(round(self.min_scale * hi))))
            side = int(round(lo * (hi / lo) ** us))  # uniform in log side
            top, left = int(ux * (H - side + 1)), int(uy * (W - side + 1))
            c = img[None, :, top : top + side, left : left + side]
            if side != self.size:
                c = torch.nn.functional.interpolate(
                    c, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
                )
            out[i] = c[0].flip(-1) if uf < 0.5 else c[0]
        return out.clamp_(0.0, 1.0)

    def fixed(self, n: int, seed: int) -> Tensor:
        """``n`` crops from a generator seeded with ``seed`` (independent of the stream)."""
        return self.sample(n, torch.Generator().manual_seed(int(seed)))


def skimage_crops(size: int = 64, stride: int | None = None, scales: tuple[float, ...] = (1.0, 0.5, 0.25)) -> Tensor:
    """``size`` x ``size`` crops of the colour photographs shipped with scikit-image.

    Each photograph is used at several ``scales`` (downscaled with anti-aliasing, so crops range
    from texture to whole objects) and cut on a grid of step ``stride`` (default ``size // 2``).
    Returns ``(N, 3, size, size)`` float32 in [0, 1], in a fixed order (shuffle with a seed).
    """
    try:
        from skimage.transform import rescale
    except ImportError as e:
        raise ImportError("the default image data needs scikit-image: pip install scikit-image") from e
    stride = stride or size // 2
    crops = []
    for img in skimage_photos():
        for s in scales:
            im = img if s == 1.0 else rescale(img, s, anti_aliasing=True, channel_axis=-1)
            H, W = im.shape[:2]
            for top in range(0, H - size + 1, stride):
                for left in range(0, W - size + 1, stride):
                    crops.append(im[top : top + size, left : left + size])
    if not crops:
        raise RuntimeError("no scikit-image photographs could be loaded")
    arr = np.stack(crops).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().clamp_(0.0, 1.0)


def split(x: Tensor, held_out: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Seeded shuffle and split into (train, held-out). A single sample cannot be split: it is
    returned as both (training on one image is a smoke test, not an experiment)."""
    if x.shape[0] == 1:
        return x, x
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    n_test = max(1, int(round(held_out * x.shape[0])))
    return x[perm[n_test:]], x[perm[:n_test]]
