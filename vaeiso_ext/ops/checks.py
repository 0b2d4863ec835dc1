"""Argument checks of the ops' Python wrappers and of the loss modules (``vaeiso_ext.nn``).

One convention: ``TypeError`` for a wrong type, ``ValueError`` for a wrong value, the message
naming the public function (or module) and the argument. Every public op (the SSIM family in
``._ssim`` and ``._ms_ssim``, ``gdn``, ``pair_distances``) and the loss modules of
``vaeiso_ext.nn`` check their arguments here, before any kernel runs, from shapes, dtypes and
devices only (no value is read from a device, so the checks also run on fake tensors under
``torch.compile``); the module is internal to the package (not part of the public API, which is
``vaeiso_ext.ops``).
"""

import math
import numbers

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor

from ._modes import HALF, compiling

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_PADDINGS = ("valid", "same")


def check_tensor(fn: str, name: str, t) -> None:
    """``t`` is a tensor of a dtype the kernels compute in (``TypeError`` otherwise)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: {name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{fn}: {name}: expected float32, float64, float16 or bfloat16, got {t.dtype}")


def check_device(fn: str, name: str, t: Tensor, ref: Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{fn}: {name}: expected a tensor on {ref.device} (the device of {ref_name}), got {t.device}")


def check_pair(fn: str, x, y, *, unbatched: bool = False) -> torch.dtype:
    """Checks the image pair of a loss-type op and returns the output dtype: the common dtype,
    or float32 for autocast's mix of a half type and float32.

    ``(N, C, H, W)`` images of one shape and device; ``unbatched`` also accepts ``(C, H, W)``."""
    check_tensor(fn, "x", x)
    check_tensor(fn, "y", y)
    if not (x.dim() == 4 or (unbatched and x.dim() == 3)):
        want = "a 3-D (C, H, W) or 4-D (N, C, H, W) tensor" if unbatched else "a 4-D tensor (N, C, H, W)"
        raise ValueError(f"{fn}: x: expected {want}, got shape {tuple(x.shape)}")
    if y.shape != x.shape:
        raise ValueError(f"{fn}: y: expected shape {tuple(x.shape)} (the shape of x), got {tuple(y.shape)}")
    if x.shape[-3] < 1:
        raise ValueError(f"{fn}: x: expected at least one channel, got shape {tuple(x.shape)}")
    check_device(fn, "y", y, x, "x")
    if x.dtype == y.dtype:
        return x.dtype
    if (x.dtype in HALF and y.dtype == torch.float32) or (x.dtype == torch.float32 and y.dtype in HALF):
        return torch.float32
    raise TypeError(
        f"{fn}: y: expected dtype {x.dtype} (the dtype of x), or float32 against a "
        f"float16/bfloat16 x (autocast's mix), got {y.dtype}"
    )


def check_batch(fn: str, x, v, x_name: str, v_name: str) -> torch.dtype:
    """Checks an ``(N, C, H, W)`` image and its ``(N, K, C, H, W)`` companions (same dtype and
    device); returns the dtype."""
    check_tensor(fn, x_name, x)
    check_tensor(fn, v_name, v)
    if x.dim() != 4:
        raise ValueError(f"{fn}: {x_name}: expected a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{fn}: {x_name}: expected at least one channel, got shape {tuple(x.shape)}")
    if v.dim() != 5 or v.shape[0] != x.shape[0] or v.shape[2:] != x.shape[1:]:
        N, C, H, W = x.shape
        raise ValueError(
            f"{fn}: {v_name}: expected shape ({N}, K, {C}, {H}, {W}) (N, K, C, H, W) matching "
            f"{x_name} {tuple(x.shape)}, got {tuple(v.shape)}"
        )
    check_device(fn, v_name, v, x, x_name)
    if v.dtype != x.dtype:
        raise TypeError(f"{fn}: {v_name}: expected dtype {x.dtype} (the dtype of {x_name}), got {v.dtype}")
    return x.dtype


def is_number(v) -> bool:
    # the exact-type test first: the ABC check costs a microsecond per argument on every call
    return type(v) is float or type(v) is int or (isinstance(v, numbers.Real) and not isinstance(v, bool))


def check_positive(fn: str, name: str, value) -> float:
    """A finite number > 0 (``TypeError`` for a non-number, ``ValueError`` otherwise)."""
    if not is_number(value):
        raise TypeError(f"{fn}: {name}: expected a positive number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{fn}: {name}: expected a positive number, got {value!r}")
    return value


def check_finite(fn: str, name: str, value) -> float:
    """A finite number (``TypeError`` for a non-number, ``ValueError`` otherwise)."""
    if not is_number(value):
        raise TypeError(f"{fn}: {name}: expected a finite number, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{fn}: {name}: expected a finite number, got {value!r}")
    return float(value)


def check_weight(fn: str, name: str, value) -> float:
    """A weight in [0, 1] (``TypeError`` for a non-number, ``ValueError`` otherwise): outside it,
    one of the two terms it mixes would be rewarded for growing."""
    value = check_finite(fn, name, value)
    if not 0 <= value <= 1:
        raise ValueError(f"{fn}: {name}: expected a weight in [0, 1], got {value!r}")
    return value


def check_window_size(fn: str, window_size) -> int:
    if type(window_size) is not int and (
        isinstance(window_size, bool) or not isinstance(window_size, numbers.Integral)
    ):
        raise TypeError(
            f"{fn}: window_size: expected an odd positive integer, got {type(window_size).__name__} {window_size!r}"
        )
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"{fn}: window_size: expected an odd positive integer, got {window_size!r}")
    return int(window_size)


def check_data_range(fn: str, data_range):
    """``data_range`` as a float (a number, or ``max - min`` of a ``(min, max)`` pair) or a
    tensor (checked against the images by :func:`check_range_for`)."""
    if isinstance(data_range, Tensor):
        if data_range.dtype.is_complex or data_range.dtype == torch.bool:
            raise TypeError(f"{fn}: data_range: expected a real tensor, got {data_range.dtype}")
        if data_range.dim() > 1:
            raise ValueError(f"{fn}: data_range: expected a tensor of shape (N,), got shape {tuple(data_range.shape)}")
        return data_range
    if isinstance(data_range, (tuple, list)):
        if len(data_range) != 2 or not all(is_number(v) for v in data_range):
            raise (ValueError if all(is_number(v) for v in data_range) else TypeError)(
                f"{fn}: data_range: expected a number, a (min, max) pair of numbers or a tensor of shape (N,), "
                f"got {data_range!r}"
            )
        lo, hi = float(data_range[0]), float(data_range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and hi - lo > 0):
            raise ValueError(f"{fn}: data_range: expected a (min, max) pair with max > min, got {data_range!r}")
        return hi - lo
    if not is_number(data_range):
        raise TypeError(
            f"{fn}: data_range: expected a number, a (min, max) pair or a tensor of shape (N,), "
            f"got {type(data_range).__name__}"
        )
    return check_positive(fn, "data_range", data_range)


def check_range_for(fn: str, rng, x: Tensor):
    """A tensor range against the images ``x`` (first dim N): shape ``(N,)`` or ``()``, same
    device, positive and finite (the value check is skipped while tracing or under a
    ``torch.func`` transform, where values cannot be read). A float passes unchanged."""
    if not isinstance(rng, Tensor):
        return rng
    if rng.dim() == 1 and rng.shape[0] != x.shape[0]:
        raise ValueError(
            f"{fn}: data_range: expected a tensor of shape ({x.shape[0]},) (one range per image), "
            f"got shape {tuple(rng.shape)}"
        )
    check_device(fn, "data_range", rng, x, "x")
    if not (compiling() or is_functorch_wrapped_tensor(rng)):
        with torch.no_grad():
            ok = bool(torch.all(torch.isfinite(rng) & (rng > 0)))
        if not ok:
            raise ValueError(f"{fn}: data_range: expected positive finite ranges, got {rng.detach().cpu().tolist()}")
    return rng


def check_padding(fn: str, padding) -> bool:
    """Whether ``padding`` is "same" ("valid" or "same", else ``ValueError``)."""
    if not isinstance(padding, str) or padding not in _PADDINGS:
        raise ValueError(f'{fn}: padding: expected "valid" or "same", got {padding!r}')
    return padding == "same"


def check_params(fn: str, window_size, sigma, k1, k2, data_range, padding=None):
    """The scalar SSIM arguments, checked: ``(window_size, sigma, k1, k2, range, same)`` with
    ``range`` a float or a tensor and ``same`` None when ``padding`` is None (ms_ssim)."""
    ws = check_window_size(fn, window_size)
    sigma, k1, k2 = check_positive(fn, "sigma", sigma), check_positive(fn, "k1", k1), check_positive(fn, "k2", k2)
    rng = check_data_range(fn, data_range)
    same = None if padding is None else check_padding(fn, padding)
    return ws, sigma, k1, k2, rng, same


def check_window_fits(fn: str, x: Tensor, window_size: int, same: bool) -> bool:
    """With "valid" padding the window must fit in the image (``ValueError``); "same" takes any
    size (zero padding). Returns ``same``."""
    H, W = x.shape[-2], x.shape[-1]
    if not same and (window_size > H or window_size > W):
        raise ValueError(
            f"{fn}: window_size: the window ({window_size}) is larger than the image "
            f'(H={H}, W={W}); use a smaller window_size, larger images or padding="same"'
        )
    return same


def check_weights(fn: str, weights) -> tuple[float, ...]:
    """The MS-SSIM level weights: one or more finite numbers >= 0."""
    try:
        w = tuple(float(v) for v in weights)
    except TypeError:
        raise TypeError(f"{fn}: weights: expected a sequence of numbers, got {weights!r}") from None
    if len(w) == 0 or not all(math.isfinite(v) and v >= 0 for v in w):
        raise ValueError(f"{fn}: weights: expected one or more finite numbers >= 0, got {weights!r}")
    return w


def check_gdn(fn: str, x, beta, gamma) -> None:
    """``x`` of shape ``(N, C, *)``, ``beta`` ``(C,)`` and ``gamma`` ``(C, C)`` on x's device, in
    x's dtype or float32 with a half ``x`` (autocast keeps parameters in float32), gamma in
    beta's dtype: the rules of csrc/gdn/gdn.cpp, checked first here."""
    check_tensor(fn, "x", x)
    check_tensor(fn, "beta", beta)
    check_tensor(fn, "gamma", gamma)
    if x.dim() < 2:
        raise ValueError(
            f"{fn}: x: expected a tensor of shape (N, C, *) with at least 2 dims, got shape {tuple(x.shape)}"
        )
    C = x.shape[1]
    if beta.dim() != 1 or beta.shape[0] != C:
        raise ValueError(f"{fn}: beta: expected shape ({C},) for x with {C} channels, got {tuple(beta.shape)}")
    if gamma.dim() != 2 or gamma.shape[0] != C or gamma.shape[1] != C:
        raise ValueError(f"{fn}: gamma: expected shape ({C}, {C}) for x with {C} channels, got {tuple(gamma.shape)}")
    half = x.dtype in HALF
    for name, p in (("beta", beta), ("gamma", gamma)):
        if p.dtype != x.dtype and not (half and p.dtype == torch.float32):
            raise TypeError(
                f"{fn}: {name}: expected dtype {x.dtype} (the dtype of x){' or float32' if half else ''}, got {p.dtype}"
            )
    if gamma.dtype != beta.dtype:
        raise TypeError(f"{fn}: gamma: expected dtype {beta.dtype} (the dtype of beta), got {gamma.dtype}")
    check_device(fn, "beta", beta, x, "x")
    check_device(fn, "gamma", gamma, x, "x")


def check_pair_distances(fn: str, base, others, metric, weight, metrics: tuple[str, ...]) -> None:
    """``base`` ``(N, *)``, ``others`` ``(N, K, *)`` with base's trailing shape and device, in
    base's dtype or autocast's half / float32 mix; ``weight`` None or ``(N,)`` on base's device in
    the dtype of base or of others: the rules of csrc/distance/distance.cpp, checked first here."""
    if not isinstance(metric, str):
        raise TypeError(f"{fn}: metric: expected one of {metrics}, got {type(metric).__name__} {metric!r}")
    if metric not in metrics:
        raise ValueError(f"{fn}: metric: expected one of {metrics}, got {metric!r}")
    check_tensor(fn, "base", base)
    check_tensor(fn, "others", others)
    if base.dim() < 1:
        raise ValueError(f"{fn}: base: expected a tensor of shape (N, *), got a 0-dim tensor")
    if others.dim() != base.dim() + 1:
        raise ValueError(
            f"{fn}: others: expected shape (N, K{', *base.shape[1:]' if base.dim() > 1 else ''}) "
            f"with {base.dim() + 1} dims for base of shape {tuple(base.shape)}, got shape "
            f"{tuple(others.shape)}"
        )
    if others.shape[0] != base.shape[0]:
        raise ValueError(
            f"{fn}: others: expected {base.shape[0]} samples in dim 0 (the N of base), got shape {tuple(others.shape)}"
        )
    if others.shape[2:] != base.shape[1:]:
        raise ValueError(
            f"{fn}: others: expected per-sample shape {tuple(base.shape[1:])} (that of base) in "
            f"dims 2.., got shape {tuple(others.shape)}"
        )
    if not (
        others.dtype == base.dtype
        or (others.dtype in HALF and base.dtype == torch.float32)
        or (others.dtype == torch.float32 and base.dtype in HALF)
    ):
        raise TypeError(
            f"{fn}: others: expected dtype {base.dtype} (the dtype of base), or float32 against a "
            f"float16/bfloat16 base (autocast's mix), got {others.dtype}"
        )
    check_device(fn, "others", others, base, "base")
    if weight is None:
        return
    if metric in ("downward", "upward"):
        raise ValueError(f'{fn}: weight: expected None with metric "{metric}" (its factor a_x is computed from base)')
    check_tensor(fn, "weight", weight)
    if weight.dim() != 1 or weight.shape[0] != base.shape[0]:
        raise ValueError(
            f"{fn}: weight: expected shape ({base.shape[0]},) (one weight per sample of base), got "
            f"{tuple(weight.shape)}"
        )
    if weight.dtype != base.dtype and weight.dtype != others.dtype:
        also = " or that of others" if others.dtype != base.dtype else ""
        raise TypeError(f"{fn}: weight: expected dtype {base.dtype} (the dtype of base){also}, got {weight.dtype}")
    check_device(fn, "weight", weight, base, "base")
