"""SSIM family: wrappers, argument checks, fake implementations and autograd for
``torch.ops.vaeiso.ssim*``.

One kernel pass serves the whole family: ``ssim_forward`` / ``ssim_backward`` compute, per
(image, channel), the mean of ``1 - SSIM`` (or of ``1 - cs``, MS-SSIM's contrast-structure term)
without cancellation, the mean ``|y - x|`` when asked (the fused SSIM + L1 loss), and the
derivative maps for the backward. :func:`ssim`, :func:`one_minus_ssim` (here) and
``ms_ssim`` / ``ssim_l1_loss`` (``._ms_ssim``) are reductions of its ``(N, C)`` output
(:func:`ssim_pass`); ``ssim_pairs`` shares its staging, ``ssim_metric_gram`` its window filter.

Every SSIM-family entry point (here, in ``._ms_ssim`` and the loss modules of ``vaeiso_ext.nn``)
checks its arguments with the functions of the "argument checks" section (one convention:
``TypeError`` for a wrong type, ``ValueError`` for a wrong value, the message naming the public
function and the argument) and divides the images by their range (:func:`scale_by_range`) so that
the kernels see values of order 1 at any scale.

Sections: public wrappers; argument checks; range and padding; the SSIM pass; fake
implementations; autograd (the metric Gram's composite under transforms last).
"""

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.autograd import forward_ad

from ._modes import HALF, acc_dtype, call_kernel, compiling, dispatch, fused_ok, merge_batch, need_maps
from ._modes import register_no_double_backward, split_batch, with_eager_twin


def ssim(x: Tensor, y: Tensor, *, window_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, data_range=1.0, padding: str = "valid") -> Tensor:
    """Structural similarity per image, fused forward and backward (docs/ops.md).

    Gaussian window of ``window_size`` taps (odd) with std ``sigma``, normalised in float64,
    applied separably; ``C1 = (k1 * data_range)**2``, ``C2 = (k2 * data_range)**2``; windowed
    variances clamped at 0. The value per image is the mean of the SSIM map over channels and
    positions: ``padding="valid"`` uses the positions where the window fits (scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)`` and
    ``pytorch_msssim.ssim(size_average=False)``), ``"same"`` zero-pads by ``window_size // 2``
    and averages all ``H x W`` positions (an image smaller than the window included).

    Args:
        x, y: ``(N, C, H, W)``, same shape and device, or one unbatched ``(C, H, W)`` pair (a 0-d
            result; so in every SSIM-family function); float32, float64, float16 or bfloat16
            (the half types compute in float32); any strides. With ``"valid"`` the window must
            fit in ``H`` and ``W``. Same dtype, or autocast's mix of a half type and float32 (a
            half prediction against a float32 target), which computes in float32.
        data_range: the range of the pixel values: a number > 0, a ``(min, max)`` pair
            (range ``max - min``), or a per-image tensor of shape ``(N,)`` (positive, finite;
            differentiable). The images are divided by it before the kernel (by the nearest
            power of two for a number, which is exact), so the value does not change when
            ``x``, ``y`` and ``data_range`` are scaled together, at any scale the dtype holds.

    Returns:
        ``(N,)`` in the input dtype (float32 for the half/float32 mix). Gradients flow to both
        ``x`` and ``y``, each in its input's dtype.

    Bad arguments raise ``TypeError`` (not a tensor, not a floating dtype) or ``ValueError``
    (a wrong shape or value), naming this function and the argument.

    Every autograd mode works (docs/ops.md, conventions): the fused backward kernel in reverse mode; double
    backward and the ``torch.func`` transforms through the same derivative written with the
    fused window filter and torch ops; forward mode as the fused gradient contracted with the
    tangents; ``vmap`` folds its batch into ``N``. Under ``torch.compile`` the custom op is
    traced as one node (reverse mode and double backward only).
    """
    return _ssim_value("ssim", x, y, window_size, sigma, k1, k2, data_range, padding, loss=False)


def one_minus_ssim(x: Tensor, y: Tensor, *, window_size: int = 11, sigma: float = 1.5,
                   k1: float = 0.01, k2: float = 0.03, data_range=1.0,
                   padding: str = "valid") -> Tensor:
    """``1 - ssim(x, y)`` computed without cancellation (the loss; :class:`nn.SSIMLoss`).

    Same arguments (``data_range`` included), errors and autograd modes as :func:`ssim`;
    dtypes as :func:`ssim`: a half prediction against a float32 target returns float32.
    """
    return _ssim_value("one_minus_ssim", x, y, window_size, sigma, k1, k2, data_range, padding, loss=True)


def _ssim_value(fn, x, y, window_size, sigma, k1, k2, data_range, padding, loss):
    out_dtype = check_pair(fn, x, y, unbatched=True)
    if x.dim() == 3:  # one (C, H, W) pair: a 0-d value, as every SSIM-family function gives
        return _ssim_value(fn, x.unsqueeze(0), y.unsqueeze(0), window_size, sigma, k1, k2, data_range,
                           padding, loss).squeeze(0)
    x, y, ws, sigma, k1, k2, dr, same = _prepare(fn, x, y, window_size, sigma, k1, k2, data_range, padding)
    one_minus, _ = ssim_pass(x, y, ws, sigma, k1, k2, dr, same, cs_only=False, with_l1=False)
    v = one_minus.mean(1)  # the mean over channels of the per-channel 1 - SSIM
    return (v if loss else 1 - v).to(out_dtype)


def ssim_pairs(base: Tensor, others: Tensor, *, window_size: int = 11, sigma: float = 1.5,
               k1: float = 0.01, k2: float = 0.03, data_range=1.0,
               padding: str = "valid") -> Tensor:
    """``1 - SSIM(base[n], others[n, k])`` for K images per base, fused (docs/ops.md).

    The window statistics of ``base`` are computed once per tile and reused for all K, and
    ``1 - SSIM`` is evaluated from ``d = other - base`` without cancellation, so float32 keeps
    about 1e-3 relative accuracy for perturbations as small as 1e-4 (the finite-difference
    ``D'_j`` of the SSIM metric).

    Args:
        base: ``(N, C, H, W)``; float32, float64, float16 or bfloat16 (the half types compute
            in float32).
        others: ``(N, K, C, H, W)``, same dtype and device as ``base``; any strides.
        window_size, sigma, k1, k2, data_range, padding: as in :func:`ssim` (a per-image
            ``data_range`` has shape ``(N,)``).

    Returns:
        ``(N, K)`` in the input dtype. Differentiable in both inputs (the backward recomputes
        the SSIM maps of the K pairs), in every autograd mode as :func:`ssim`.
    """
    fn = "ssim_pairs"
    out_dtype = check_batch(fn, base, others, "base", "others")
    base, others, ws, sigma, k1, k2, dr, same = _prepare(fn, base, others, window_size, sigma, k1, k2,
                                                         data_range, padding)
    padding = "same" if same else "valid"

    def op():
        return torch.ops.vaeiso.ssim_pairs(base, others, window_size=ws, sigma=sigma, k1=k1, k2=k2,
                                           data_range=dr, padding=padding)

    out = dispatch((base, others), op, op,
                   lambda: _SSIMPairsFunction.call(base, others, ws, sigma, k1, k2, dr, padding))
    return out.to(out_dtype)


def ssim_metric_gram(x: Tensor, v: Tensor, *, diagonal: bool = False, window_size: int = 11,
                     sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                     data_range=1.0, padding: str = "valid") -> Tensor:
    """Inner products of directions under the SSIM metric tensor ``G_x`` (docs/ops.md).

    ``G_x = 1/2 Hessian_y (1 - SSIM(x, y))`` at ``y = x``, so that
    ``1 - SSIM(x, x + d) = d^T G_x d + O(|d|^3)``. Per window,
    ``u^T G v = mean of mu_u mu_v / (2 mu_x**2 + C1) + (w*(u v) - mu_u mu_v) / (2 s_xx + C2)``.
    Computed for all pairs at once as two weighted Gram products (GEMMs) after filtering the K
    directions once; never K**2 passes.

    Args:
        x: ``(N, C, H, W)``, the point where the metric is taken; float32, float64, float16 or
            bfloat16 (the half types compute in float32).
        v: ``(N, K, C, H, W)`` directions, same dtype and device as ``x``.
        diagonal: return only ``v[n, k]^T G v[n, k]``.
        window_size, sigma, k1, k2, data_range, padding: as in :func:`ssim` (``u^T G v`` does
            not change when ``x``, ``v`` and ``data_range`` are scaled together).

    Returns:
        ``(N, K, K)`` (symmetric, positive semi-definite up to round-off), or ``(N, K)`` when
        ``diagonal``, in the input dtype. Differentiable in ``x`` and ``v`` in every autograd
        mode: under forward AD or a ``torch.func`` transform the same composite runs in Python
        over the fused window filter (an autograd.Function with jvp and vmap rules).
    """
    fn = "ssim_metric_gram"
    out_dtype = check_batch(fn, x, v, "x", "v")
    x, v, ws, sigma, k1, k2, dr, same = _prepare(fn, x, v, window_size, sigma, k1, k2, data_range, padding)

    def op():
        return torch.ops.vaeiso.ssim_metric_gram(x, v, diagonal=bool(diagonal), window_size=ws, sigma=sigma,
                                                 k1=k1, k2=k2, data_range=dr, padding="same" if same else "valid")

    # The C++ composite differentiates through ATen and ssim_filter's registered autograd; under
    # forward AD or a torch.func transform the same composite runs in Python instead.
    out = dispatch((x, v), op, op,
                   lambda: _metric_gram_composite(x, v, bool(diagonal), ws, sigma, k1, k2, dr, same)
                   if _transformed(x, v) else op())
    return out.to(out_dtype)


# ------------------------------------------------------------------------ argument checks

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_PADDINGS = ("valid", "same")


def check_tensor(fn: str, name: str, t) -> None:
    """``t`` is a tensor of a dtype the kernels compute in (``TypeError`` otherwise)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: {name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{fn}: {name}: expected float32, float64, float16 or bfloat16, got {t.dtype}")


def _check_device(fn: str, name: str, t: Tensor, ref: Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{fn}: {name}: expected a tensor on {ref.device} (the device of {ref_name}), "
                         f"got {t.device}")


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
    _check_device(fn, "y", y, x, "x")
    if x.dtype == y.dtype:
        return x.dtype
    if (x.dtype in HALF and y.dtype == torch.float32) or (x.dtype == torch.float32 and y.dtype in HALF):
        return torch.float32
    raise TypeError(f"{fn}: y: expected dtype {x.dtype} (the dtype of x), or float32 against a "
                    f"float16/bfloat16 x (autocast's mix), got {y.dtype}")


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
        raise ValueError(f"{fn}: {v_name}: expected shape ({N}, K, {C}, {H}, {W}) (N, K, C, H, W) matching "
                         f"{x_name} {tuple(x.shape)}, got {tuple(v.shape)}")
    _check_device(fn, v_name, v, x, x_name)
    if v.dtype != x.dtype:
        raise TypeError(f"{fn}: {v_name}: expected dtype {x.dtype} (the dtype of {x_name}), got {v.dtype}")
    return x.dtype


def _is_number(v) -> bool:
    # the exact-type test first: the ABC check costs a microsecond per argument on every call
    return type(v) is float or type(v) is int or (isinstance(v, numbers.Real) and not isinstance(v, bool))


def check_positive(fn: str, name: str, value) -> float:
    """A finite number > 0 (``TypeError`` for a non-number, ``ValueError`` otherwise)."""
    if not _is_number(value):
        raise TypeError(f"{fn}: {name}: expected a positive number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{fn}: {name}: expected a positive number, got {value!r}")
    return value


def check_finite(fn: str, name: str, value) -> float:
    """A finite number (``TypeError`` for a non-number, ``ValueError`` otherwise)."""
    if not _is_number(value):
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
    if type(window_size) is not int and (isinstance(window_size, bool)
                                         or not isinstance(window_size, numbers.Integral)):
        raise TypeError(f"{fn}: window_size: expected an odd positive integer, got "
                        f"{type(window_size).__name__} {window_size!r}")
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
            raise ValueError(f"{fn}: data_range: expected a tensor of shape (N,), got shape "
                             f"{tuple(data_range.shape)}")
        return data_range
    if isinstance(data_range, (tuple, list)):
        if len(data_range) != 2 or not all(_is_number(v) for v in data_range):
            raise (ValueError if all(_is_number(v) for v in data_range) else TypeError)(
                f"{fn}: data_range: expected a number, a (min, max) pair of numbers or a tensor of shape (N,), "
                f"got {data_range!r}")
        lo, hi = float(data_range[0]), float(data_range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and hi - lo > 0):
            raise ValueError(f"{fn}: data_range: expected a (min, max) pair with max > min, got {data_range!r}")
        return hi - lo
    if not _is_number(data_range):
        raise TypeError(f"{fn}: data_range: expected a number, a (min, max) pair or a tensor of shape (N,), "
                        f"got {type(data_range).__name__}")
    return check_positive(fn, "data_range", data_range)


def check_range_for(fn: str, rng, x: Tensor):
    """A tensor range against the images ``x`` (first dim N): shape ``(N,)`` or ``()``, same
    device, positive and finite (the value check is skipped while tracing or under a
    ``torch.func`` transform, where values cannot be read). A float passes unchanged."""
    if not isinstance(rng, Tensor):
        return rng
    if rng.dim() == 1 and rng.shape[0] != x.shape[0]:
        raise ValueError(f"{fn}: data_range: expected a tensor of shape ({x.shape[0]},) (one range per image), "
                         f"got shape {tuple(rng.shape)}")
    _check_device(fn, "data_range", rng, x, "x")
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
        raise ValueError(f"{fn}: window_size: the window ({window_size}) is larger than the image "
                         f"(H={H}, W={W}); use a smaller window_size, larger images or padding=\"same\"")
    return same


# --------------------------------------------------------------------- range and padding


def scale_by_range(rng, *ts: Tensor):
    """``(ts divided by the range's scale, the kernel's data_range, the scale)``.

    SSIM is unchanged when the images and the range are scaled together, but the kernels'
    intermediates (products of four moments, ``C1 = (k1 * range)**2``) overflow or underflow
    in float32 far from range 1. A number range is divided by its nearest lower power of two
    ``s`` (exact in binary floating point, so no digit is lost, and ``ssim_pairs`` keeps its
    cancellation-free accuracy) and the kernel sees ``range / s`` in ``[1, 2)``; a range
    already in ``[1, 2)`` (the usual 1.0) costs no pass. A per-image tensor range divides
    each image by its range (computed in float32 for the half types) and the kernel sees 1;
    the division is ordinary torch ops, so every autograd mode reaches ``data_range`` too.
    """
    if isinstance(rng, Tensor):
        out = []
        for t in ts:
            acc = acc_dtype(t)
            d = rng.to(acc).reshape((-1,) + (1,) * (t.dim() - 1)) if rng.dim() == 1 else rng.to(acc)
            out.append(t.to(acc) / d)
        return tuple(out), 1.0, rng
    _, e = math.frexp(rng)
    if e == 1:  # range in [1, 2)
        return ts, rng, 1.0
    s = math.ldexp(1.0, e - 1)
    return tuple(t / s for t in ts), rng / s, s


def _prepare(fn, x, y, window_size, sigma, k1, k2, data_range, padding):
    """The SSIM arguments checked and the pair ``(x, y)`` (images first) made ready for the
    kernel: scaled by the range and padded when small. Returns ``(x, y, window_size, sigma, k1,
    k2, kernel data_range, same)``."""
    ws, sigma, k1, k2, rng, same = check_params(fn, window_size, sigma, k1, k2, data_range, padding)
    rng = check_range_for(fn, rng, x)
    same = check_window_fits(fn, x, ws, same)
    (x, y), dr, _ = scale_by_range(rng, x, y)
    (x, y), same = pad_small(x, y, window_size=ws, same=same)
    return x, y, ws, sigma, k1, k2, dr, same


def pad_small(*ts: Tensor, window_size: int, same: bool):
    """``(ts, same)``, with images smaller than the window under "same" padding zero-padded by
    ``window_size // 2`` in torch and evaluated "valid": the ``H x W`` positions and their
    windowed statistics are those of "same" padding (the kernels require the window to fit)."""
    H, W = ts[0].shape[-2], ts[0].shape[-1]
    if not same or (window_size <= H and window_size <= W):
        return ts, same
    p = window_size // 2
    return tuple(F.pad(t, (p, p, p, p)) for t in ts), False


# ------------------------------------------------------------------------------ the SSIM pass


def ssim_pass(x, y, window_size, sigma, k1, k2, data_range, same, *, cs_only, with_l1):
    """The one SSIM kernel pass on checked, range-scaled images: ``(one_minus, l1)``.

    ``one_minus`` ``(N, C)``: the mean over positions of ``1 - v``, ``v`` = SSIM or (``cs_only``)
    the contrast-structure term; ``l1`` ``(N, C)`` (``with_l1``, else empty): the mean
    ``|y - x|``. Both in the accumulation dtype (float32 for the half types and autocast's mix).
    Differentiable in every autograd mode (:class:`_SSIMFunction`)."""
    args = (window_size, sigma, k1, k2, data_range, same, cs_only, with_l1)
    one_minus, l1, _ = dispatch((x, y),
                                lambda: torch.ops.vaeiso.ssim_forward(x, y, *args, need_maps(x, y)),
                                lambda: call_kernel(_FORWARD, x, y, *args, False),
                                lambda: _SSIMFunction.call(x, y, *args, need_maps(x, y)))
    return one_minus, l1


# ------------------------------------------------------------------ shape rules (fake impls)


# The fakes mirror the kernels' own checks (RuntimeError, as the kernels raise to direct callers of
# torch.ops.vaeiso); the public wrappers have checked their arguments before any op is reached.


def _fake_pair_dtype(op: str, x: Tensor, y: Tensor) -> torch.dtype:
    # Mirrors loss_pair_dtype in csrc/common.h: the same dtype, or autocast's half / float32 mix
    # (computed in float32).
    if x.dtype == y.dtype:
        return x.dtype
    torch._check((x.dtype in HALF and y.dtype == torch.float32) or (x.dtype == torch.float32 and y.dtype in HALF),
                 lambda: f"{op}: y: expected dtype {x.dtype} (the dtype of x), or float32 against a "
                         f"float16/bfloat16 x (autocast's mix), got {y.dtype}")
    return torch.float32


def _fake_check_image(op: str, x: Tensor, name: str, window_size: int) -> None:
    torch._check(x.dim() == 4, lambda: f"{op}: {name}: expected a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    torch._check(window_size >= 1 and window_size % 2 == 1,
                 lambda: f"{op}: window_size: expected an odd positive integer, got {window_size}")
    torch._check(window_size <= x.shape[2] and window_size <= x.shape[3],
                 lambda: f"{op}: window_size: the window ({window_size}) is larger than the image "
                         f"(H={x.shape[2]}, W={x.shape[3]})")


def _fake_check_device(op: str, ref: Tensor, ref_name: str, **others: Tensor) -> None:
    for name, t in others.items():
        torch._check(t.device == ref.device, lambda: f"{op}: {name}: expected a tensor on {ref.device} "
                     f"(the device of {ref_name}), got {t.device}")


def _out_hw(h, w, window_size: int, same: bool):
    pad = window_size // 2 if same else 0
    return h + 2 * pad - window_size + 1, w + 2 * pad - window_size + 1


@torch.library.register_fake("vaeiso::ssim_forward")
def _ssim_forward_fake(x, y, window_size, sigma, k1, k2, data_range, same_padding, cs_only, with_l1, need_maps):
    op = "ssim_forward"
    _fake_check_image(op, x, "x", window_size)
    torch._check(y.shape == x.shape,
                 lambda: f"{op}: y: expected shape {tuple(x.shape)} (the shape of x), got {tuple(y.shape)}")
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
def _ssim_pairs_fake(base, others, *, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0,
                     padding="valid"):
    torch._check(padding in ("valid", "same"),
                 lambda: f'ssim_pairs: padding: expected "valid" or "same", got {padding!r}')
    _fake_check_image("ssim_pairs", base, "base", window_size)
    torch._check(others.dim() == 5 and others.shape[0] == base.shape[0] and others.shape[2:] == base.shape[1:],
                 lambda: f"ssim_pairs: others: expected shape (N, K, C, H, W) matching base {tuple(base.shape)}, "
                         f"got {tuple(others.shape)}")
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


# ------------------------------------------------------------------------------- autograd

_FORWARD = torch.ops.vaeiso.ssim_forward.default
_BACKWARD = torch.ops.vaeiso.ssim_backward.default

# Reverse mode runs the fused ssim_backward kernel. When the gradient must itself be
# differentiable or batchable (create_graph, forward AD, torch.func wrappers: _modes.fused_ok),
# the same derivative is evaluated by channel_grads_torch from the window filter (an
# autograd.Function with every rule) and torch ops. Forward mode contracts the fused
# per-channel gradient with the tangents: each output depends on one image plane (pair).


def _transformed(*ts: Tensor) -> bool:
    """Under forward AD or a torch.func transform (the C++ composites cannot follow there)."""
    return forward_ad._current_level >= 0 or any(is_functorch_wrapped_tensor(t) for t in ts)


@with_eager_twin
class _FilterFunction(torch.autograd.Function):
    """``ssim_filter`` in every mode: it is linear, so its derivative is itself (jvp) or its
    adjoint (backward, the same op with ``transpose`` flipped: differentiable to any order)."""

    @staticmethod
    def forward(t, window_size, sigma, same, transpose):
        return call_kernel(torch.ops.vaeiso.ssim_filter.default, t, window_size, sigma, same, transpose)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.args = inputs[1:]

    @staticmethod
    def backward(ctx, grad):
        ws, sigma, same, transpose = ctx.args
        return _FilterFunction.call(grad, ws, sigma, same, not transpose), None, None, None, None

    @staticmethod
    def jvp(ctx, tt, *_):
        return _FilterFunction.call(tt, *ctx.args)

    @staticmethod
    def vmap(info, in_dims, t, window_size, sigma, same, transpose):
        # the filter takes any leading dims: the batch is one more
        return _FilterFunction.call(t.movedim(in_dims[0], 0), window_size, sigma, same, transpose), 0


def channel_grads_torch(g_om, g_l1, x, y, window_size, sigma, k1, k2, data_range, same, cs_only):
    """d(sum_{n,c} g_om[n,c] one_minus[n,c] + g_l1[n,c] l1[n,c]) / dx, /dy with differentiable
    torch ops over the fused window filter: the path for double backward, forward-over-reverse
    and vmap over the backward, of the SSIM family's per-(image, channel) values.

    one_minus = mean over positions of 1 - v, v = A1 A2 / (B1 B2) (SSIM) or A2 / B2 (the
    contrast-structure term cs when ``cs_only``). With raw moments m_x = w*x, e_xx = w*(x x),
    e_xy = w*(x y) per position, the partials are chained back to the pixels with the adjoint
    filter. ``g_l1`` (or None) weighs l1 = mean |y - x| per channel, whose derivative is
    sign(y - x) / (H W) (0 at 0) and whose own derivative is 0 a.e."""
    acc = acc_dtype(x)
    xa, ya = x.to(acc), y.to(acc)

    def f(t, transpose=False):
        return _FilterFunction.call(t, window_size, sigma, same, transpose)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = f(xa), f(ya)
    vx, vy = f(xa * xa) - mx * mx, f(ya * ya) - my * my
    sxx, syy = torch.clamp(vx, min=0), torch.clamp(vy, min=0)  # as the kernels (docs/ops.md, conventions)
    sxy = f(xa * ya) - mx * my
    a2, b2 = 2 * sxy + c2, sxx + syy + c2
    n, c, ho, wo = mx.shape
    scale = g_om.to(acc).reshape(n, c, 1, 1) * (-1.0 / (ho * wo))  # of the mean of 1 - v
    if cs_only:
        v = a2 / b2
        d_mx = d_my = None
    else:
        a1, b1 = 2 * mx * my + c1, mx * mx + my * my + c1
        v = (a1 * a2) / (b1 * b2)
        d_a1, d_b1 = scale * v / a1, -scale * v / b1
        d_mx, d_my = 2 * my * d_a1 + 2 * mx * d_b1, 2 * mx * d_a1 + 2 * my * d_b1
    d_a2, d_b2 = scale * v / a2, -scale * v / b2
    d_sxx, d_syy = d_b2 * (vx > 0), d_b2 * (vy > 0)
    d_sxy = 2 * d_a2
    # the moments' partials: s_xx = e_xx - mx^2, s_xy = e_xy - mx my
    m_x = -2 * mx * d_sxx - my * d_sxy + (0 if d_mx is None else d_mx)
    m_y = -2 * my * d_syy - mx * d_sxy + (0 if d_my is None else d_my)
    e_xy = f(d_sxy, True)
    gx = f(m_x, True) + 2 * xa * f(d_sxx, True) + ya * e_xy
    gy = f(m_y, True) + 2 * ya * f(d_syy, True) + xa * e_xy
    if g_l1 is not None:
        t = g_l1.to(acc).reshape(n, c, 1, 1) * torch.sign(ya - xa) / (x.shape[2] * x.shape[3])
        gx, gy = gx - t, gy + t
    return gx.to(x.dtype), gy.to(y.dtype)


def _grads(g_om, g_l1, x, y, maps, args):
    """Gradients of ``sum g_om * one_minus + g_l1 * l1``: the fused backward kernel when nothing
    differentiates through it, else channel_grads_torch. g_om or g_l1 may be None (no gradient
    for that output); ``args`` as :func:`ssim_pass` takes them."""
    window_size, sigma, k1, k2, data_range, same, cs_only, with_l1 = args
    if not with_l1:
        g_l1 = None
    if g_om is None:
        g_om = torch.zeros(x.shape[:2], dtype=acc_dtype(x) if x.dtype == y.dtype else torch.float32,
                           device=x.device)
    if not fused_ok(g_om, g_l1, x, y):
        return channel_grads_torch(g_om, g_l1, x, y, window_size, sigma, k1, k2, data_range, same, cs_only)
    if maps.numel() == 0 and x.shape[0] > 0:
        # The forward ran without maps (no gradient was expected then): recompute them.
        _, _, maps = call_kernel(_FORWARD, x, y, window_size, sigma, k1, k2, data_range, same, cs_only, False, True)
    gl1 = g_l1.contiguous() if g_l1 is not None else g_om.new_empty((0,))
    return call_kernel(_BACKWARD, g_om.contiguous(), gl1, x, y, maps, window_size, sigma, same)


def _forward_setup(ctx, inputs, output):
    x, y, window_size, sigma, k1, k2, data_range, same, cs_only, with_l1, _need_maps = inputs
    _om, _l1, maps = output
    ctx.save_for_backward(x, y, maps)
    ctx.args = (window_size, sigma, k1, k2, data_range, same, cs_only, with_l1)
    ctx.mark_non_differentiable(maps)
    # No zero-filled gradient for maps (or for an unused output): the backward takes None.
    ctx.set_materialize_grads(False)


def _forward_backward(ctx, grad_om, grad_l1, _grad_maps=None):
    x, y, maps = ctx.saved_tensors
    none = (None,) * 9
    if not any(ctx.needs_input_grad[:2]) or (grad_om is None and grad_l1 is None):
        return (None, None) + none
    gx, gy = _grads(grad_om, grad_l1, x, y, maps, ctx.args)
    return (gx if ctx.needs_input_grad[0] else None, gy if ctx.needs_input_grad[1] else None) + none


def _plane_dot(a: Tensor, b: Tensor) -> Tensor:
    """Inner products per (image, channel) plane: ``(N, C, H, W)`` pairs to ``(N, C)``."""
    return (a * b).sum(dim=(-2, -1))


def _image_dot(a: Tensor, b: Tensor) -> Tensor:
    """Inner products per image: ``(.., C, H, W)`` pairs to ``(..)``."""
    return (a * b).sum(dim=(-3, -2, -1))


@with_eager_twin
class _SSIMFunction(torch.autograd.Function):
    """``ssim_forward`` in every autograd mode: the fused backward kernel in reverse mode,
    channel_grads_torch where the derivative is itself differentiated or batched, forward mode
    as the per-channel gradient contracted with the tangents, vmap folded into N."""

    @staticmethod
    def forward(x, y, window_size, sigma, k1, k2, data_range, same, cs_only, with_l1, need_maps):
        return call_kernel(_FORWARD, x, y, window_size, sigma, k1, k2, data_range, same, cs_only, with_l1,
                           need_maps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _forward_setup(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1], output[2])

    backward = staticmethod(_forward_backward)

    @staticmethod
    def jvp(ctx, tx, ty, *_):
        x, y, maps = ctx.saved_tensors
        acc = acc_dtype(x) if x.dtype == y.dtype else torch.float32
        # Each (image, channel) value depends on its own plane only, so the backward with unit
        # weights gives every row of the Jacobian at once.
        ones = torch.ones(x.shape[:2], dtype=acc, device=x.device)
        gx, gy = _grads(ones, None, x, y, maps, ctx.args[:7] + (False,))
        d_om = None
        for gr, t in ((gx, tx), (gy, ty)):
            if t is not None:
                d = _plane_dot(gr.to(acc), t.to(acc))
                d_om = d if d_om is None else d_om + d
        # no l1 asked for: a tangent for its empty output all the same (None there trips an
        # internal assert of forward AD in torch 2.14)
        d_l1 = x.new_zeros((0,), dtype=acc)
        if ctx.args[7]:
            dt = (ty.to(acc) if ty is not None else 0) - (tx.to(acc) if tx is not None else 0)
            d_l1 = _plane_dot(torch.sign(y.to(acc) - x.to(acc)), dt) / (x.shape[2] * x.shape[3])
        return d_om, d_l1, None

    @staticmethod
    def vmap(info, in_dims, x, y, *args):
        # the vmapped batch joins N (an unbatched image is expanded): one fused call
        B = info.batch_size
        outs = _SSIMFunction.call(merge_batch(x, in_dims[0], B), merge_batch(y, in_dims[1], B), *args)
        res, dims = [], []
        for t in outs:
            if t.dim() == 1:  # an output not asked for: one empty (0,) tensor, unbatched
                res.append(t)
                dims.append(None)
            else:
                res.append(split_batch(t, B))
                dims.append(0)
        return tuple(res), tuple(dims)


# The custom op keeps its own autograd (torch.compile and direct torch.ops callers), with the
# same differentiable backward.
torch.library.register_autograd("vaeiso::ssim_forward", _forward_backward, setup_context=_forward_setup)


def _pairs_args(ctx_kw):
    window_size, sigma, k1, k2, data_range, padding = ctx_kw
    return (window_size, sigma, k1, k2, data_range, padding == "same", False, False)


def _pairs_grads(g, base, others, args):
    """Gradients of ``sum g[n, k] (1 - SSIM(base[n], others[n, k]))``: (N, ...) and (N, K, ...)."""
    gb, go = _pairs_grads_unsummed(g, base, others, args)
    return gb.sum(1), go


@with_eager_twin
class _SSIMPairsFunction(torch.autograd.Function):
    """``ssim_pairs`` for eager mode and ``torch.func``."""

    @staticmethod
    def forward(base, others, window_size, sigma, k1, k2, data_range, padding):
        return call_kernel(torch.ops.vaeiso.ssim_pairs.default, base, others, window_size=window_size,
                           sigma=sigma, k1=k1, k2=k2, data_range=data_range, padding=padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        base, others = inputs[:2]
        ctx.save_for_backward(base, others)
        ctx.save_for_forward(base, others)
        ctx.args = _pairs_args(inputs[2:])

    @staticmethod
    def backward(ctx, grad):
        base, others = ctx.saved_tensors
        if not any(ctx.needs_input_grad[:2]):
            return (None,) * 8
        gb, go = _pairs_grads(grad, base, others, ctx.args)
        return (gb if ctx.needs_input_grad[0] else None, go if ctx.needs_input_grad[1] else None) + (None,) * 6

    @staticmethod
    def jvp(ctx, tb, to, *_):
        base, others = ctx.saved_tensors
        ones = torch.ones(others.shape[:2], dtype=base.dtype, device=base.device)
        gb_pairs, go = _pairs_grads_unsummed(ones, base, others, ctx.args)
        out = None
        if tb is not None:
            out = _image_dot(gb_pairs, tb.unsqueeze(1))
        if to is not None:
            out = _image_dot(go, to) if out is None else out + _image_dot(go, to)
        return out

    @staticmethod
    def vmap(info, in_dims, base, others, *args):
        B = info.batch_size
        out = _SSIMPairsFunction.call(merge_batch(base, in_dims[0], B), merge_batch(others, in_dims[1], B), *args)
        return split_batch(out, B), 0


def _pairs_grads_unsummed(g, base, others, args):
    # 1 - SSIM of a pair is the channel mean of the SSIM pass's (N, C) output: its gradient is
    # the pass's backward with g / C per channel, over the K pairs as N * K images.
    N, K, C = others.shape[:3]
    xb = base.unsqueeze(1).expand(others.shape).reshape((N * K,) + tuple(base.shape[1:]))
    g_om = (g.to(acc_dtype(base)).reshape(N * K, 1) / C).expand(N * K, C)
    gx, gy = _grads(g_om, None, xb, others.reshape(xb.shape), base.new_empty((0,)), args)
    return gx.reshape(others.shape), gy.reshape(others.shape)


def _pairs_setup(ctx, inputs, keyword_only_inputs, output):
    base, others = inputs
    ctx.save_for_backward(base, others)
    kw = keyword_only_inputs
    ctx.args = _pairs_args((kw["window_size"], kw["sigma"], kw["k1"], kw["k2"], kw["data_range"], kw["padding"]))


def _pairs_backward(ctx, grad):
    base, others = ctx.saved_tensors
    if not any(ctx.needs_input_grad[:2]):
        return None, None
    gb, go = _pairs_grads(grad, base, others, ctx.args)
    return (gb if ctx.needs_input_grad[0] else None, go if ctx.needs_input_grad[1] else None)


# The keyword-only arguments reach setup_context as their own dict.
torch.library.register_autograd("vaeiso::ssim_pairs", _pairs_backward, setup_context=_pairs_setup)


def _filter_setup(ctx, inputs, output):
    t, window_size, sigma, same, transpose = inputs
    ctx.args = (window_size, sigma, same, not transpose)


def _filter_backward(ctx, grad):
    # The filter is linear: its adjoint is the same op with `transpose` flipped.
    return (torch.ops.vaeiso.ssim_filter(grad, *ctx.args), None, None, None, None)


torch.library.register_autograd("vaeiso::ssim_filter", _filter_backward, setup_context=_filter_setup)


register_no_double_backward(
    "vaeiso::ssim_backward",
    "vaeiso::ssim_backward: the raw backward kernel has no derivative of its own (it is not "
    "differentiable); differentiate vaeiso_ext.ops.ssim, ms_ssim or ssim_l1_loss (or torch.ops.vaeiso.ssim) "
    "instead, whose backward is differentiable")


# ------------------------------------------------------------ metric Gram under transforms


def _metric_gram_composite(x, v, diagonal, window_size, sigma, k1, k2, data_range, same):
    """The C++ composite ``ssim_metric_gram`` (csrc/ssim/ssim.cpp) step for step, over
    :class:`_FilterFunction`, for forward AD and the torch.func transforms (arguments checked
    by the wrapper)."""

    def f(t, transpose=False):
        return _FilterFunction.call(t, window_size, sigma, same, transpose)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    acc = acc_dtype(x)
    xf, vf = x.to(acc), v.to(acc)
    N, K, C = x.shape[0], v.shape[1], x.shape[1]
    mu_x = f(xf)
    s_xx = torch.clamp(f(xf * xf) - mu_x * mu_x, min=0)
    a = torch.reciprocal(2 * mu_x * mu_x + c1)
    b = torch.reciprocal(2 * s_xx + c2)
    ab = (a - b).unsqueeze(1)
    c = f(b, True).unsqueeze(1)
    mu_v = f(vf)
    P, Q = C * mu_x.shape[2] * mu_x.shape[3], C * x.shape[2] * x.shape[3]
    scale = 1.0 / P
    if diagonal:
        out = (torch.bmm((mu_v * mu_v).reshape(N, K, P), ab.reshape(N, P, 1))
               + torch.bmm((vf * vf).reshape(N, K, Q), c.reshape(N, Q, 1)))
        out = out.squeeze(-1) * scale
    else:
        gram = torch.bmm((mu_v * ab).reshape(N, K, P), mu_v.reshape(N, K, P).transpose(1, 2))
        gram = torch.baddbmm(gram, (vf * c).reshape(N, K, Q), vf.reshape(N, K, Q).transpose(1, 2))
        out = (gram + gram.transpose(1, 2)) * (0.5 * scale)
    return out.to(x.dtype)
