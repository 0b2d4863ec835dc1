"""A reader for 16-bit-per-channel colour PNGs, which Pillow (and imageio through it) silently
reduces to 8 bits. Non-interlaced RGB / RGBA only (colour types 2 and 6): the rest is left to
Pillow, which reads greyscale 16-bit PNGs at full depth itself."""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {2: 3, 6: 4}


def is_png16_colour(head: bytes) -> bool:
    """True when the first 26 bytes of a file are a PNG header with bit depth 16, colour type 2 or 6."""
    return len(head) >= 26 and head[:8] == _SIGNATURE and head[24] == 16 and head[25] in _CHANNELS


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def read_png16(data: bytes) -> np.ndarray:
    """Decode a 16-bit RGB/RGBA PNG to an ``(H, W, C)`` uint16 array; ``ValueError`` otherwise."""
    if not is_png16_colour(data[:26]):
        raise ValueError("not a 16-bit RGB/RGBA PNG")
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise ValueError("truncated PNG chunk")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if ihdr is None or not idat:
        raise ValueError("PNG without IHDR or IDAT")
    w, h, depth, ctype, _, _, interlace = ihdr
    if interlace:
        raise ValueError("interlaced 16-bit PNGs are not supported")
    ch = _CHANNELS[ctype]
    bpp, stride = 2 * ch, 2 * ch * w
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    except zlib.error as e:
        raise ValueError(f"corrupt PNG data: {e}") from e
    if raw.size != h * (stride + 1):
        raise ValueError("PNG data size does not match its header")
    rows = raw.reshape(h, stride + 1)
    out = np.zeros((h, stride), dtype=np.int64)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(h):
        f, line = rows[y, 0], rows[y, 1:].astype(np.int64)
        if f == 0:
            cur = line
        elif f == 1:  # Sub: a running sum along each byte lane, mod 256
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif f == 2:  # Up
            cur = (line + prev) % 256
        elif f in (3, 4):  # Average, Paeth: sequential over pixels
            cur = np.empty(stride, dtype=np.int64)
            left = np.zeros(bpp, dtype=np.int64)
            upleft = np.zeros(bpp, dtype=np.int64)
            for x in range(w):
                s = slice(x * bpp, (x + 1) * bpp)
                up = prev[s]
                pred = (left + up) // 2 if f == 3 else _paeth(left, up, upleft)
                cur[s] = (line[s] + pred) % 256
                left, upleft = cur[s], up
        else:
            raise ValueError(f"PNG row filter {f} is invalid")
        out[y], prev = cur, cur
    b = out.astype(np.uint8).reshape(h, w, ch, 2)
    return (b[..., 0].astype(np.uint16) << 8) | b[..., 1]
