"""Image data for the image VAE (SPEC §5, App. D.2): a folder of images, or real photographs
shipped inside scikit-image cut into 64x64 crops (the default: a fresh machine has them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

# Colour photographs bundled with scikit-image (no download needed).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
                  "hubble_deep_field", "stereo_motorcycle")


def _to_tensor(rgb: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).float().div_(255.0)


def load_image_folder(path: str | os.PathLike, size: int = 64, crop: int | None = None,
                      limit: int | None = None) -> Tensor:
    """Load every image in ``path`` as a centred square crop resized to ``size`` x ``size``.

    Args:
        path: a folder of images (e.g. CelebA's ``img_align_celeba``); sub-folders are ignored.
        size: output side (64 for the paper's network).
        crop: side of the centred square cut before resizing; default the image's shorter side.
            For CelebA's 178x218 aligned faces a side near 148 keeps the face.
        limit: load at most this many images (sorted by file name).

    Returns an ``(N, 3, size, size)`` float32 tensor in [0, 1]. Raises ``FileNotFoundError``
    for a missing folder, ``ValueError`` for a folder with no images, an unreadable file or an
    image smaller than the crop (the message names the file).
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
    out = torch.empty(len(files), 3, size, size)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                w, h = im.size
                side = crop or min(w, h)
                if side > min(w, h) or side < size:
                    raise ValueError(
                        f"image {f} is {w}x{h}: too small for a {side}x{side} crop resized to "
                        f"{size}x{size} (the crop must fit in the image and be at least {size})")
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
                out[i] = _to_tensor(np.asarray(im))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read image {f}: {e}") from e
    return out.clamp_(0.0, 1.0)


def skimage_crops(size: int = 64, stride: int | None = None, scales: tuple[float, ...] = (1.0, 0.5, 0.25)) -> Tensor:
    """``size`` x ``size`` crops of the colour photographs shipped with scikit-image.

    Each photograph is used at several ``scales`` (downscaled with anti-aliasing, so crops range
    from texture to whole objects) and cut on a grid of step ``stride`` (default ``size // 2``).
    Returns ``(N, 3, size, size)`` float32 in [0, 1], in a fixed order (shuffle with a seed).
    """
    try:
        import skimage.data
        from skimage.transform import rescale
    except ImportError as e:
        raise ImportError("the default image data needs scikit-image: pip install scikit-image") from e
    stride = stride or size // 2
    crops = []
    for name in SKIMAGE_PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # an image this scikit-image does not ship
            continue
        img = img[0] if isinstance(img, tuple) else img
        img = np.asarray(img, dtype=np.float32)[..., :3] / 255.0
        for s in scales:
            im = img if s == 1.0 else rescale(img, s, anti_aliasing=True, channel_axis=-1)
            H, W = im.shape[:2]
            for top in range(0, H - size + 1, stride):
                for left in range(0, W - size + 1, stride):
                    crops.append(im[top:top + size, left:left + size])
    if not crops:
        raise RuntimeError("no scikit-image photographs could be loaded")
    arr = np.stack(crops).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().clamp_(0.0, 1.0)


def split(x: Tensor, held_out: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Seeded shuffle and split into (train, held-out)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    n_test = max(1, int(round(held_out * x.shape[0])))
    return x[perm[n_test:]], x[perm[:n_test]]
