"""Fake (meta) implementations of the SSIM family's custom ops: output shapes and dtypes for
torch.compile, torch.export and meta tensors.

They mirror the kernels' own checks (RuntimeError, as the kernels raise to direct callers of
``torch.ops.vaeiso``); the public wrappers have checked their arguments (``.checks``) before any op
is reached. Imported by ``._ssim`` for its registrations.
"""

import torch
from torch import Tensor

from ._modes import HALF


def _fake_pair_dtype(op: str, x: Tensor, y: Tensor) -> torch.dtype:
    # Mirrors loss_pair_dtype in csrc/common.h: the same dtype, or autocast's half / float32 mix
    # (computed in float32).
    if x.dtype == y.dtype:
        return x.dtype
    torch._check(
        (x.dtype in HALF and y.dtype == torch.float32) or (x.dtype == torch.float32 and y.dtype in HALF),
        lambda: (
            f"{op}: y: expected dtype {x.dtype} (the dtype of x), or float32 against a "
            f"float16/bfloat16 x (autocast's mix), got {y.dtype}"
        ),
    )
    return torch.float32


def _fake_check_image(op: str, x: Tensor, name: str, window_size: int) -> None:
    torch._check(x.dim() == 4, lambda: f"{op}: {name}: expected a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    torch._check(
        window_size >= 1 and window_size % 2 == 1,
        lambda: f"{op}: window_size: expected an odd positive integer, got {window_size}",
    )
    torch._check(
        window_size <= x.shape[2] and window_size <= x.shape[3],
        lambda: (
            f"{op}: window_size: the window ({window_size}) is larger than the image (H={x.shape[2]}, W={x.shape[3]})"
        ),
    )


def _fake_check_device(op: str, ref: Tensor, ref_name: str, **others: Tensor) -> None:
    for name, t in others.items():
        torch._check(
            t.device == ref.device,
            lambda: f"{op}: {name}: expected a tensor on {ref.device} (the device of {ref_name}), got {t.device}",
        )


def _out_hw(h, w, window_size: int, same: bool):
    pad = window_size // 2 if same else 0
    return h + 2 * pad - window_size + 1, w + 2 * pad - window_size + 1


@torch.library.register_fake("vaeiso::ssim_forward")
def _ssim_forward_fake(x, y, window_size, sigma, k1, k2, data_range, same_padding, cs_only, with_l1, need_maps):
    op = "ssim_forward"
    _fake_check_image(op, x, "x", window_size)
    torch._check(
        y.shape == x.shape, lambda: f"{op}: y: expected shape {tuple(x.shape)} (the shape of x), got {tuple(y.shape)}"
    )
    _fake_check_device(op, x, "x", y=y)
    dt = _fake_pair_dtype(op, x, y)
    acc = torch.float32 if dt in HALF else dt
    N, C, H, W = x.shape
    ho, wo = _out_hw(H, W, window_size, same_padding)
    one_minus = x.new_empty((N, C), dtype=acc)
    l1 = x.new_empty((N, C) if with_l1 else (0,), dtype=acc)
    maps = x.new_empty((N, C, 4, ho, wo) if need_maps else (0,), dtype=acc)
    return one_minus, l1, maps


@torch.library.register_fake("vaeiso::ssim_backward")
def _ssim_backward_fake(grad, grad_l1, x, y, maps, window_size, sigma, same_padding):
    _fake_check_device("ssim_backward", x, "x", grad=grad, y=y, maps=maps)
    return x.new_empty(x.shape), y.new_empty(y.shape)


@torch.library.register_fake("vaeiso::ssim_pairs")
def _ssim_pairs_fake(base, others, *, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0, padding="valid"):
    torch._check(
        padding in ("valid", "same"), lambda: f'ssim_pairs: padding: expected "valid" or "same", got {padding!r}'
    )
    _fake_check_image("ssim_pairs", base, "base", window_size)
    torch._check(
        others.dim() == 5 and others.shape[0] == base.shape[0] and others.shape[2:] == base.shape[1:],
        lambda: (
            f"ssim_pairs: others: expected shape (N, K, C, H, W) matching base {tuple(base.shape)}, "
            f"got {tuple(others.shape)}"
        ),
    )
    _fake_check_device("ssim_pairs", base, "base", others=others)
    return base.new_empty((base.shape[0], others.shape[1]))


@torch.library.register_fake("vaeiso::ssim_filter")
def _ssim_filter_fake(t, window_size, sigma, same_padding, transpose):
    h, w = t.shape[-2], t.shape[-1]
    pad = window_size // 2 if same_padding else 0
    if transpose:
        oh, ow = h + window_size - 1 - 2 * pad, w + window_size - 1 - 2 * pad
    else:
        oh, ow = h + 2 * pad - window_size + 1, w + 2 * pad - window_size + 1
    return t.new_empty(tuple(t.shape[:-2]) + (oh, ow))


@torch.library.register_fake("vaeiso::ssim_pool")
def _ssim_pool_fake(t, height, width, transpose):
    ph, pw = (height + 1) // 2, (width + 1) // 2
    h, w = (ph, pw) if transpose else (height, width)
    torch._check(
        t.dim() >= 2 and t.shape[-2] == h and t.shape[-1] == w,
        lambda: f"ssim_pool: t: expected its last two dims to be ({h}, {w}), got {tuple(t.shape)}",
    )
    oh, ow = (height, width) if transpose else (ph, pw)
    return t.new_empty(tuple(t.shape[:-2]) + (oh, ow))
