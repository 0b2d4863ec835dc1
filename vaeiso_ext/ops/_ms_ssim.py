"""MS-SSIM and the fused SSIM + L1 loss (docs/ops.md): wrappers over the one SSIM pass
(``torch.ops.vaeiso.ssim_forward``, :func:`._ssim.ssim_pass`; its fake implementation is in
``._ssim_fake``, its autograd in ``._ssim_autograd``).

One kernel pass per pyramid level reads both images once (any of the four float dtypes, or
autocast's half / float32 mix, in the kernel) and returns the mean of ``1 - v`` per channel
(``v`` the contrast-structure term ``cs`` or SSIM, computed without cancellation), the mean
``|y - x|`` when asked (the L1 term of :func:`ssim_l1_loss`, read in the same pass), and the
derivative maps for the backward. The average-pooling pyramid is our ``ssim_pool`` kernel
(``avg_pool2d``'s arithmetic; its adjoint in the backward is the same kernel transposed), whose
outputs, like the SSIM pass's, come from the kept cache on the CPU: a pyramid takes no fresh
heap block per call, so a training loop's calls take no page faults. The normalisation and the
product over levels act on ``(levels, N, C)`` numbers only and are plain torch ops, run in
float64.

Argument checks: ``.checks``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ._modes import acc_dtype, call_kernel, dispatch
from ._ssim import pad_small, scale_by_range, ssim_pass
from ._ssim_autograd import PoolFunction
from .checks import check_pair, check_params, check_range_for, check_weight, check_weights, check_window_fits

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_NORMALIZE = ("relu", "simple", None)


def ms_ssim(
    x: Tensor,
    y: Tensor,
    *,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range=1.0,
    normalize: Optional[str] = "relu",
) -> Tensor:
    """Multi-scale SSIM per image (Wang, Simoncelli, Bovik 2003), fused (docs/ops.md).

    As ``pytorch_msssim.ms_ssim(x, y, data_range=..., size_average=False, win_size=...,
    weights=..., K=(k1, k2))`` computes it (the convention of CompressAI and most compression
    papers). With ``m = len(weights)`` levels: at levels ``1 .. m-1`` the contrast-structure term
    per channel ``cs_c = mean over valid positions of (2 s_xy + C2) / (s_xx + s_yy + C2)``, then
    both images go one level down by ``avg_pool2d(kernel_size=2, padding=(H % 2, W % 2))`` (zero
    padding counted in the average); at level ``m`` the SSIM per channel (:func:`ssim`, "valid").
    The value is ``mean over channels c of prod_l v_{l,c} ** w_l``.

    ``normalize``:

    - ``"relu"`` (default, pytorch_msssim): each ``v`` is clamped at 0 first. Where a clamped
      ``v`` is 0 its gradient is 0 (a subgradient), never ``0 * inf``: finite values and
      gradients for any finite input.
    - ``"simple"``: ``(v + 1) / 2`` (torchmetrics' option; smooth, in [0, 1]). It is clamped at 0
      like "relu" against round-off. Note that torchmetrics'
      ``multiscale_structural_similarity_index_measure`` differs in three conventions: it
      averages ``cs`` and SSIM over channels *before* the product over levels (we, like
      pytorch_msssim, take the product per channel, then the mean over channels); it pools with
      ``avg_pool2d(2)`` without padding (odd sizes lose their last row/column); and it takes the
      last level's SSIM over all ``H x W`` positions of the reflect-padded image (its ``cs``
      terms, like ours, over the valid positions). The tests check that these are the only
      differences.
    - ``None``: ``v`` as is. A negative ``v`` to a fractional power gives NaN (and ``v = 0`` an
      infinite gradient): for bit-compatibility studies only, never for training.

    Args:
        x, y: ``(N, C, H, W)``, same shape and device; float32, float64, float16 or bfloat16
            (the half types are computed in float32 and returned in their dtype; a half image
            against a float32 one is computed and returned in float32); any strides. The smaller
            side must exceed ``(window_size - 1) * 2**(m - 1)`` (160 for the defaults).
        weights: the exponents ``w_l``, one per level (any number >= 1, each finite and >= 0);
            one weight gives ``ssim ** w`` per channel.
        window_size (odd), sigma, k1, k2, data_range (a number, a ``(min, max)`` pair or a
            per-image ``(N,)`` tensor; the value does not change when ``x``, ``y`` and
            ``data_range`` are scaled together): as in :func:`ssim`.

    ``x``, ``y`` may also be one unbatched ``(C, H, W)`` pair (a 0-d result), as in every SSIM-family
    function.

    Returns:
        ``(N,)``. Every autograd mode works (docs/ops.md, conventions): the fused backward kernel per level in
        reverse mode; double backward (``create_graph=True``), ``hessian`` and ``vmap`` over a
        backward through the same derivative written with the fused window filter and torch
        ops; forward mode (``forward_ad``, ``jvp``, ``jacfwd``) as the fused per-channel
        gradient contracted with the tangents; ``vmap`` folds its batch into ``N``. Under
        ``torch.compile`` each level's kernel is one custom-op node.
    """
    fn = "ms_ssim"
    out_dtype = check_pair(fn, x, y, unbatched=True)
    if x.dim() == 3:  # one (C, H, W) pair: a 0-d value, as every SSIM-family function gives
        return ms_ssim(
            x.unsqueeze(0),
            y.unsqueeze(0),
            weights=weights,
            window_size=window_size,
            sigma=sigma,
            k1=k1,
            k2=k2,
            data_range=data_range,
            normalize=normalize,
        ).squeeze(0)
    ws, sigma, k1, k2, rng, _ = check_params(fn, window_size, sigma, k1, k2, data_range)
    w = check_weights(fn, weights)
    if normalize not in _NORMALIZE:
        raise ValueError(f'{fn}: normalize: expected "relu", "simple" or None, got {normalize!r}')
    rng = check_range_for(fn, rng, x)
    m = len(w)
    need = (ws - 1) * 2 ** (m - 1)
    H, W = x.shape[2], x.shape[3]
    if min(H, W) <= need:
        raise ValueError(
            f"{fn}: x: the image ({H}x{W}) is too small for {m} levels with window_size={ws}: "
            f"the smaller side must exceed (window_size - 1) * 2**(levels - 1) = {need}"
        )
    (xc, yc), dr, _ = scale_by_range(rng, x, y)
    vals = []
    for level in range(m):
        last = level == m - 1
        om, _ = ssim_pass(xc, yc, ws, sigma, k1, k2, dr, False, cs_only=not last, with_l1=False)
        vals.append(1 - om.double())
        if not last:
            # The lower levels are pooled in the compute dtype (float32 for the half types: the
            # kernel reads level 0 as it is, the pyramid below it loses no digit to rounding).
            xc, yc = pool(xc.to(acc_dtype(xc))), pool(yc.to(acc_dtype(yc)))
    v = torch.stack(vals)  # (m, N, C)
    if normalize == "simple":
        v = (v + 1) / 2
    wt = torch.tensor(w, dtype=v.dtype, device=v.device).view(-1, 1, 1)
    if normalize is None:
        terms = v**wt
    else:
        # v**w where v > 0 (or NaN), else 0**w (1 for w = 0, else 0) with a zero gradient: the inner
        # where keeps pow's gradient (w v**(w-1)) finite where it is masked out.
        pos = ~(v <= 0)  # NaN stays NaN
        terms = torch.where(pos, torch.where(pos, v, torch.ones_like(v)) ** wt, (wt == 0).to(v.dtype))
    return terms.prod(0).mean(1).to(out_dtype)


def pool(t: Tensor) -> Tensor:
    """One pyramid step, ``avg_pool2d(t, kernel_size=2, padding=(H % 2, W % 2))``, in every
    autograd mode (``vaeiso::ssim_pool``; arguments checked by the caller)."""
    h, w = t.shape[-2], t.shape[-1]
    return dispatch(
        (t,),
        lambda: torch.ops.vaeiso.ssim_pool(t, h, w, False),
        lambda: call_kernel(torch.ops.vaeiso.ssim_pool.default, t, h, w, False),
        lambda: PoolFunction.call(t, h, w, False),
    )


def ssim_l1_loss(
    x: Tensor,
    y: Tensor,
    *,
    ssim_weight: float = 0.2,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range=1.0,
    padding: str = "same",
) -> Tensor:
    """``(1 - ssim_weight) * mean|x - y| + ssim_weight * (1 - SSIM(x, y))`` per image, fused
    (docs/ops.md).

    The photometric loss of 3D Gaussian splatting and many image-restoration models (weight 0.2
    there), with 3DGS's and fused-ssim's convention by default: ``padding="same"`` (zero padding
    by ``window_size // 2``, the SSIM map averaged over all ``H x W`` pixels, images smaller
    than the window included) and one unbatched ``(C, H, W)`` image pair accepted. The L1 mean
    is over all channels and pixels and is accumulated in the same pass that reads ``x`` and
    ``y`` for the SSIM statistics; ``1 - SSIM`` is computed without cancellation
    (:func:`one_minus_ssim`). The gradient of ``|d|`` at ``d = 0`` is 0.

    Args:
        x, y: ``(N, C, H, W)``, or one ``(C, H, W)`` pair, dtypes and strides as in
            :func:`ms_ssim`.
        ssim_weight: the weight of ``1 - SSIM``, in [0, 1] (``1 - ssim_weight`` weighs the L1
            term; a weight outside would reward one of the two terms for growing).
        window_size, sigma, k1, k2, data_range, padding ("same", the default, or "valid"): as in
            :func:`ssim`. The SSIM term does not change when ``x``, ``y`` and ``data_range`` are
            scaled together; the L1 term is in the images' units.

    Returns:
        ``(N,)``, or a 0-d tensor for an unbatched pair (3DGS's scalar loss), in every autograd
        mode as :func:`ms_ssim` (one kernel call instead of one per level; the L1 term's second
        derivative is 0 almost everywhere).
    """
    fn = "ssim_l1_loss"
    out_dtype = check_pair(fn, x, y, unbatched=True)
    ws, sigma, k1, k2, rng, same = check_params(fn, window_size, sigma, k1, k2, data_range, padding)
    sw = check_weight(fn, "ssim_weight", ssim_weight)
    unbatched = x.dim() == 3
    if unbatched:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    rng = check_range_for(fn, rng, x)
    same = check_window_fits(fn, x, ws, same)
    (xc, yc), dr, scale = scale_by_range(rng, x, y)
    hw = xc.shape[2] * xc.shape[3]
    (xc, yc), same = pad_small(xc, yc, window_size=ws, same=same)
    om, l1 = ssim_pass(xc, yc, ws, sigma, k1, k2, dr, same, cs_only=False, with_l1=True)
    # the kernel's L1 is of the scaled images (mean over the padded ones for a small image):
    # back to the images' units and to the mean over their own H x W pixels. The channel means
    # and weights as two matrix-vector products: each torch op here costs tens of microseconds
    # (forward and backward) after the kernel has flushed the caches.
    C = om.shape[1]
    k_l1 = (1 - sw) * (xc.shape[2] * xc.shape[3] / hw) / C
    if isinstance(scale, Tensor):
        l1 = l1 * scale.to(l1.dtype).reshape(-1, 1)
    else:
        k_l1 *= scale
    out = torch.addmv(l1.mv(om.new_full((C,), k_l1)), om, om.new_full((C,), sw / C)).to(out_dtype)
    return out.squeeze(0) if unbatched else out
