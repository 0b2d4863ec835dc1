"""Image data: the folder loader's bit depths and failure modes, and the stream of
random crops that is the default training data."""

import struct
import zlib

import numpy as np
import pytest
import torch

from vaeiso_ext.data.images import RandomCrops, load_image_folder, split

PIL = pytest.importorskip("PIL.Image")


def _ramp16(h=64, w=64):
    """A 16-bit ramp over the full 0..65535 range (each row the same)."""
    return np.tile(np.linspace(0, 65535, w).round().astype(np.uint16), (h, 1))


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    ramp = _ramp16()
    PIL.fromarray(ramp).save(tmp_path / "g16.png")  # PIL writes a 16-bit greyscale PNG
    x = load_image_folder(tmp_path, size=64)
    assert x.shape == (1, 3, 64, 64)
    want = torch.from_numpy(ramp.astype(np.float64) / 65535.0)
    # no resize (64 -> 64): the values are the ramp / 65535, rounded to float32 (rel 6e-8)
    for c in range(3):
        torch.testing.assert_close(x[0, c].double(), want, rtol=0, atol=1e-7)
    # the old convert("RGB") clipped 98% of the ramp to 1.0; here only the last column is 1.0
    assert float((x == 1.0).float().mean()) < 0.05


def _write_png16(path, arr, filters=(0,)):
    """An independent minimal PNG encoder: (H, W, 3) uint16 -> 16-bit RGB PNG, row filters cycled
    from ``filters`` (0 none, 1 Sub, 2 Up, 3 Average, 4 Paeth) as in the PNG spec."""
    h, w, _ = arr.shape
    data = arr.astype(">u2").view(np.uint8).reshape(h, w * 6).astype(np.int64)
    bpp, lines = 6, []
    for y in range(h):
        f = filters[y % len(filters)]
        cur = data[y]
        up = data[y - 1] if y else np.zeros_like(cur)
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        if f == 0:
            pred = 0
        elif f == 1:
            pred = left
        elif f == 2:
            pred = up
        elif f == 3:
            pred = (left + up) // 2
        else:
            p = left + up - ul
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
        lines.append(bytes([f]) + ((cur - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(lines)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("filters", [(0,), (1, 2, 3, 4)])
def test_16bit_colour_png_is_scaled(tmp_path, filters):
    rng = np.random.default_rng(4)
    ramp = _ramp16()
    rgb = np.stack([ramp, ramp[:, ::-1], rng.integers(0, 65536, ramp.shape, dtype=np.uint16)], axis=-1)
    _write_png16(tmp_path / "c16.png", rgb, filters)
    x = load_image_folder(tmp_path, size=64)
    want = torch.from_numpy(rgb.astype(np.float64) / 65535.0).permute(2, 0, 1)
    torch.testing.assert_close(x[0].double(), want, rtol=0, atol=1e-7)


def test_8bit_png_matches_division_by_255(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    PIL.fromarray(arr).save(tmp_path / "a.png")
    x = load_image_folder(tmp_path, size=64)
    torch.testing.assert_close(x[0].double(), torch.from_numpy(arr / 255.0).permute(2, 0, 1), rtol=0, atol=1e-7)


def test_folder_with_one_image(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    PIL.fromarray(arr).save(tmp_path / "only.png")
    x = load_image_folder(tmp_path, size=64)
    train, test = split(x, 0.1, seed=0)
    assert train.shape == test.shape == (1, 3, 64, 64)  # was: an empty training set


def test_unreadable_files_skipped_and_counted(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (70, 70, 3), dtype=np.uint8)
    for i in range(3):
        PIL.fromarray(arr).save(tmp_path / f"ok{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "ok0.png").read_bytes()[:40])
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        load_image_folder(tmp_path)
    report = {}
    x = load_image_folder(tmp_path, skip_unreadable=True, report=report)
    assert x.shape[0] == 3
    assert report["loaded"] == 3 and report["skipped"] == 2
    assert sorted(p.rsplit("/", 1)[-1] for p in report["skipped_files"]) == ["broken.jpg", "truncated.png"]
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"nope")
    with pytest.raises(ValueError, match="none of its 1 images"):
        load_image_folder(only_bad, skip_unreadable=True)


# ------------------------------------------------------------------ random crops


def _photo(h, w, seed):
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def test_random_crops_whole_image_or_its_mirror():
    # a 64x64 photograph admits one 64x64 crop: the image itself or its left-right mirror
    p = _photo(64, 64, 0)
    rc = RandomCrops([p], size=64, epoch_size=32, seed=0)
    x = rc.sample(40, torch.Generator().manual_seed(0))
    ref = torch.from_numpy(p).permute(2, 0, 1)
    same = [(xi == ref).all().item() for xi in x]
    mirrored = [(xi == ref.flip(-1)).all().item() for xi in x]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 5 <= sum(mirrored) <= 35  # p = 1/2 each: outside [5, 35] of 40 has probability < 1e-5


def test_random_crops_are_fresh_and_resumable():
    rc = RandomCrops([_photo(200, 300, 1), _photo(120, 90, 2)], size=64, epoch_size=128, seed=3)
    assert rc.shape == (128, 3, 64, 64) and len(rc) == 128
    idx = torch.arange(16)
    rc.set_epoch(0)
    a, b = rc[idx], rc[idx]
    assert a.shape == (16, 3, 64, 64) and not torch.equal(a, b)  # the same indices, fresh crops
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    rc.set_epoch(0)
    torch.testing.assert_close(rc[idx], a, rtol=0, atol=0)  # bitwise: the same seeded draws
    rc.set_epoch(1)
    assert not torch.equal(rc[idx], a)
    f1, f2 = rc.fixed(8, seed=5), rc.fixed(8, seed=5)
    assert torch.equal(f1, f2)


def test_random_crops_values_come_from_the_photo():
    # a photograph constant in each channel gives crops with exactly those values at any scale
    p = np.empty((300, 400, 3), np.float32)
    p[..., 0], p[..., 1], p[..., 2] = 0.25, 0.5, 0.75
    x = RandomCrops([p], size=64, seed=0).sample(6, torch.Generator().manual_seed(1))
    for c, v in enumerate((0.25, 0.5, 0.75)):
        # bilinear weights sum to 1 in float32: error ~ a few ulps of v
        torch.testing.assert_close(x[:, c], torch.full_like(x[:, c], v), rtol=0, atol=1e-6)


def test_random_crops_rejects_small_photos():
    with pytest.raises(ValueError, match="at least 64x64"):
        RandomCrops([_photo(50, 80, 0)], size=64)


def test_random_crops_rank_is_given_not_looked_up():
    # rank 0 is the single-process stream; another rank draws other crops, and exactly those the
    # stream drew under torchrun when it looked the rank up itself (seeded from (seed, epoch,
    # rank)), so a data-parallel run recorded then resumes on the same crops
    photos = [_photo(120, 150, 0), _photo(90, 200, 1)]
    single, r0, r1 = (RandomCrops(photos, size=32, seed=2, **kw) for kw in ({}, {"rank": 0}, {"rank": 1}))
    for s in (single, r0, r1):
        s.set_epoch(3)
    a = single[torch.arange(4)]
    assert torch.equal(r0[torch.arange(4)], a)
    b = r1[torch.arange(4)]
    assert not torch.equal(b, a)
    assert torch.equal(b, single.sample(4, torch.Generator().manual_seed(((2 * 1_000_003 + 3) * 64 + 1) * 7 + 5)))
    for bad, err in ((-1, ValueError), (1.0, TypeError), (True, TypeError)):
        with pytest.raises(err, match="RandomCrops: rank"):
            RandomCrops(photos, size=32, rank=bad)


def test_random_crops_work_with_the_trainer_blocked(monkeypatch):
    # sys.modules[name] = None makes any import of that module raise ImportError
    import sys

    monkeypatch.setitem(sys.modules, "vaeiso_ext.train", None)
    rc = RandomCrops([_photo(80, 80, 0)], size=32, epoch_size=4, seed=1, rank=1)
    rc.set_epoch(2)
    rc.skip(1)
    assert rc[torch.arange(2)].shape == (2, 3, 32, 32)


def test_data_layer_imports_nothing_above_it():
    # data/ sits below training: no module of it imports train, experiments or the CLI, at the
    # top or inside a function
    import ast
    from pathlib import Path

    import vaeiso_ext.data

    above = (
        "vaeiso_ext.train",
        "vaeiso_ext.checkpoint",
        "vaeiso_ext.distributed",
        "vaeiso_ext.experiments",
        "vaeiso_ext.cli",
    )
    files = sorted(Path(vaeiso_ext.data.__file__).parent.glob("*.py"))
    assert any(f.name == "images.py" for f in files)
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(["vaeiso_ext", "data"][: 3 - node.level]) if node.level else ""
                mod = ".".join(p for p in (base, node.module or "") if p)
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            bad = [n for n in names if n.startswith(above)]
            assert not bad, f"{f.name}:{node.lineno} imports {bad}"
