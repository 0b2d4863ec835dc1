"""The composite custom ops ``vaeiso::ssim`` and ``vaeiso::ssim_metric_gram``
(CompositeImplicitAutograd kernels): sequences of other ops, differentiated through theirs.

They are registered here, in Python, because they need ATen ops with Scalar arguments
(``1 - t``, ``clamp(min=0)``, ``t * number``), which a stable-ABI kernel cannot call through the
dispatcher before torch 2.14 (docs/design.md, stable-ABI rules). ``vaeiso::gdn`` needs none and
stays in C++ (csrc/gdn/gdn.cpp). The public wrappers (``vaeiso_ext.ops``) check their arguments
before any op runs; these kernels keep the ops' own RuntimeError checks for direct callers.
"""

import contextlib

import torch

from ._modes import acc_dtype

_LIB = torch.library.Library("vaeiso", "IMPL")


def _same_padding(op: str, padding: str) -> bool:
    if padding not in ("valid", "same"):
        raise RuntimeError(f'{op}: padding: expected "valid" or "same", got "{padding}"')
    return padding == "same"


def _ssim(x, y, *, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0, padding="valid"):
    """1 - the channel mean of ssim_forward's 1 - SSIM (whose autograd is registered in Python),
    with the derivative maps only when a gradient will be asked for."""
    same = _same_padding("ssim", padding)
    need_maps = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    one_minus = torch.ops.vaeiso.ssim_forward(
        x, y, window_size, sigma, k1, k2, data_range, same, False, False, need_maps
    )[0]
    dt = x.dtype if x.dtype == y.dtype else one_minus.dtype
    return (1 - one_minus.mean(1)).to(dt)


@contextlib.contextmanager
def gemm_policy(op: str, operand):
    """The GEMM policy (docs/design.md): float32 GEMMs on CUDA in full float32 whatever torch's
    TF32 setting (set to "ieee" for the scope and restored: process-wide, as torch offers no
    per-thread switch to Python), and deterministic mode's cuBLAS workspace error made clear."""
    fp32_cuda = operand.is_cuda and operand.dtype == torch.float32
    matmul = torch.backends.cuda.matmul
    saved = None
    if fp32_cuda:
        try:
            saved = matmul.fp32_precision
        except RuntimeError:  # a torch that refuses to mix it with the legacy flags set before
            fp32_cuda = False
    if fp32_cuda:
        matmul.fp32_precision = "ieee"
    try:
        yield
    except RuntimeError as e:
        if "CUBLAS_WORKSPACE_CONFIG" not in str(e):
            raise
        raise RuntimeError(
            f"{op}: torch.use_deterministic_algorithms(True) is on and this op's GEMMs run in cuBLAS, which this "
            "torch makes deterministic only with CUBLAS_WORKSPACE_CONFIG=:4096:8 (or :16:8) set in the "
            f"environment before CUDA starts; set it, or leave deterministic mode. torch said: {e}"
        ) from e
    finally:
        if fp32_cuda:
            matmul.fp32_precision = saved


def metric_gram(x, v, diagonal, window_size, sigma, k1, k2, data_range, same, filt):
    """u^T G_x v for all pairs of directions (docs/ops.md, ssim_metric_gram), as two weighted Gram
    products: u^T G v = (1/(C P)) [ sum_p (a_p - b_p) mu_u(p) mu_v(p) + sum_q c_q u_q v_q ],
    a = 1/(2 mu_x^2 + C1), b = 1/(2 s_xx + C2), c = w^T * b. ``filt(t, transpose)`` is the window
    filter (the custom op, or its autograd.Function under transforms)."""
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    acc = acc_dtype(x)
    xf, vf = x.to(acc), v.to(acc)
    N, K, C = x.shape[0], v.shape[1], x.shape[1]
    mu_x = filt(xf, False)
    s_xx = torch.clamp(filt(xf * xf, False) - mu_x * mu_x, min=0)
    a = torch.reciprocal(2 * mu_x * mu_x + c1)
    b = torch.reciprocal(2 * s_xx + c2)
    ab = (a - b).unsqueeze(1)  # (N, 1, C, Ho, Wo)
    c = filt(b, True).unsqueeze(1)  # (N, 1, C, H, W)
    mu_v = filt(vf, False)  # (N, K, C, Ho, Wo)
    P, Q = C * mu_x.shape[2] * mu_x.shape[3], C * x.shape[2] * x.shape[3]
    scale = 1.0 / P
    with gemm_policy("ssim_metric_gram", xf):
        if diagonal:  # sum_p ab mu_v^2 + sum_q c v^2 as matrix-vector products
            out = torch.bmm((mu_v * mu_v).reshape(N, K, P), ab.reshape(N, P, 1)) + torch.bmm(
                (vf * vf).reshape(N, K, Q), c.reshape(N, Q, 1)
            )
            out = out.squeeze(-1) * scale
        else:
            gram = torch.bmm((mu_v * ab).reshape(N, K, P), mu_v.reshape(N, K, P).transpose(1, 2))
            gram = torch.baddbmm(gram, (vf * c).reshape(N, K, Q), vf.reshape(N, K, Q).transpose(1, 2))
            out = (gram + gram.transpose(1, 2)) * (0.5 * scale)
    return out.to(x.dtype)


def _check_gram(op, x, v):
    if x.dim() != 4:
        raise RuntimeError(f"{op}: x: expected a 4-D tensor (N, C, H, W), got shape {list(x.shape)}")
    if v.dim() != 5 or v.shape[0] != x.shape[0] or v.shape[2:] != x.shape[1:]:
        N, C, H, W = x.shape
        raise RuntimeError(
            f"{op}: v: expected shape ({N}, K, {C}, {H}, {W}) for x of shape {list(x.shape)}, got {list(v.shape)}"
        )
    if v.dtype != x.dtype:
        raise RuntimeError(f"{op}: v: expected dtype {x.dtype} (the dtype of x), got {v.dtype}")
    if v.device != x.device:
        raise RuntimeError(f"{op}: v: expected a tensor on {x.device} (the device of x), got {v.device}")


def _ssim_metric_gram(
    x, v, *, diagonal=False, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0, padding="valid"
):
    op = "ssim_metric_gram"
    same = _same_padding(op, padding)
    _check_gram(op, x, v)

    def filt(t, transpose):
        return torch.ops.vaeiso.ssim_filter(t, window_size, sigma, same, transpose)

    # the window, dtype and size checks are the filter's own; the constants are checked here
    for name, val in (("data_range", data_range), ("k1", k1), ("k2", k2)):
        if not (val == val and abs(val) != float("inf") and val > 0):
            raise RuntimeError(f"{op}: {name}: expected a positive number, got {val}")
    return metric_gram(x, v, diagonal, window_size, sigma, k1, k2, data_range, same, filt)


_LIB.impl("ssim", _ssim, "CompositeImplicitAutograd")
_LIB.impl("ssim_metric_gram", _ssim_metric_gram, "CompositeImplicitAutograd")
