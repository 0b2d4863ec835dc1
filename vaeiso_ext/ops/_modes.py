"""Plumbing shared by the ops' ``torch.autograd.Function``s (docs/ops.md, conventions, "every autograd mode").

Each op is an autograd.Function with a separate ``setup_context`` and ``jvp`` / ``vmap``
staticmethods around its ``torch.ops.vaeiso`` kernel, which is what ``torch.func`` needs. Its
backward calls the fused (non-differentiable) backward kernel only when that is safe, see
:func:`fused_ok`; otherwise it evaluates the same derivative with differentiable torch ops, so
double backward, forward-over-reverse and vmap over the backward give exact values instead of
PyTorch's "warn and drop" fallback.
"""

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.autograd import forward_ad

HALF = (torch.float16, torch.bfloat16)


def acc_dtype(t: Tensor) -> torch.dtype:
    """The dtype the kernels compute in: float32 for the half types."""
    return torch.float32 if t.dtype in HALF else t.dtype


def _is_dual(t: Tensor) -> bool:
    return forward_ad.unpack_dual(t).tangent is not None


def fused_ok(*tensors: Tensor | None) -> bool:
    """Whether a derivative may come from a fused kernel that autograd cannot see through.

    False when grad mode is on (a backward with ``create_graph=True``, or a jvp whose result
    will be differentiated), when a tensor carries a forward-mode tangent, or when a tensor is
    a ``torch.func`` wrapper (vmap/grad/jvp levels): the result must then stay differentiable
    and batchable, so it is computed with torch ops instead.
    """
    ts = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):
        return False
    if any(is_functorch_wrapped_tensor(t) for t in ts):
        return False
    if forward_ad._current_level >= 0 and any(_is_dual(t) for t in ts):
        return False
    return True


def no_derivative(*tensors: Tensor | None) -> bool:
    """Whether no derivative of any kind can flow through a call on these tensors: grad mode
    off or nothing requires grad, no forward-AD level open, no torch.func wrapper. The wrappers
    then call the kernel directly and skip the autograd.Function (its Python cost is tens of
    microseconds, as large as a small kernel)."""
    if forward_ad._current_level >= 0:
        return False
    ts = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):
        return False
    return not any(is_functorch_wrapped_tensor(t) for t in ts)


def need_maps(*tensors: Tensor | None) -> bool:
    """Whether a forward should keep the derivative maps for its backward: some derivative
    (reverse, forward or a ``torch.func`` transform) may be asked for."""
    return not no_derivative(*tensors)


def register_no_double_backward(op: str, message: str) -> None:
    """Registers an autograd formula for the raw backward kernel ``op`` that raises
    ``RuntimeError(message)``: the kernels' own backwards are not differentiable (the ops'
    wrappers differentiate through torch ops instead), so a direct caller gets an error rather
    than a silently dropped second derivative."""

    def setup_context(ctx, inputs, output):
        pass

    def backward(ctx, *grads):
        raise RuntimeError(message)

    torch.library.register_autograd(op, backward, setup_context=setup_context)


def call_kernel(op, *args, **kwargs):
    """``op(*args)`` dispatched below the autograd keys: the Functions' forwards (and the
    no-derivative fast path) reach the device kernel without passing through the custom op's
    own registered autograd, which would only add Python overhead there."""
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args, **kwargs)


def compiling() -> bool:
    """True under torch.compile / torch.export tracing: the wrappers then call the custom op
    itself (opaque to the tracer, with its registered autograd), never the autograd.Function."""
    return torch.compiler.is_compiling()


def dispatch(tensors, traced, direct, function):
    """The triage every op wrapper does, over zero-argument callables: ``traced()`` (the custom
    op, opaque to the tracer, with its registered autograd) under torch.compile / torch.export;
    ``direct()`` (the kernel below autograd) when no derivative can flow through ``tensors``
    (:func:`no_derivative`); else ``function()`` (the op's autograd.Function)."""
    if compiling():
        return traced()
    if no_derivative(*tensors):
        return direct()
    return function()


# ------------------------------------------------------------------------------- vmap helpers


def merge_batch(t: Tensor | None, bdim: int | None, B: int) -> Tensor | None:
    """``t`` with the vmap batch dim folded into its leading dim: ``(B * N, ...)``.

    An unbatched ``t`` (bdim None) is expanded to B copies first."""
    if t is None:
        return None
    t = t.unsqueeze(0).expand((B,) + tuple(t.shape)) if bdim is None else t.movedim(bdim, 0)
    return t.reshape((-1,) + tuple(t.shape[2:]))


def split_batch(t: Tensor, B: int) -> Tensor:
    """Inverse of :func:`merge_batch` for an output: ``(B * N, ...)`` to ``(B, N, ...)``."""
    return t.reshape((B, -1) + tuple(t.shape[1:]))


def vmap_by_loop(fn, info, in_dims, args):
    """vmap rule of last resort: call ``fn`` once per batch entry and stack (out_dims 0).

    Used only where batched arguments cannot be folded into one fused call (for example a
    batch of different GDN parameters)."""
    outs = []
    for i in range(info.batch_size):
        sl = [a.select(d, i) if d is not None and isinstance(a, Tensor) else a for a, d in zip(args, in_dims)]
        outs.append(fn(*sl))
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(o) for o in zip(*outs)), (0,) * len(outs[0])
    return torch.stack(outs), 0


# ------------------------------------------------------------------- Function construction


def with_eager_twin(func_cls):
    """Class decorator: adds ``func_cls.call(*args)`` (all positional), which runs the
    Function's rules from ``func_cls`` under the torch.func transforms and from an eager twin
    otherwise.

    ``torch.func`` accepts only Functions with a separate ``setup_context``, for which torch
    binds the default arguments with ``inspect.signature`` on every call (about 35 us here, as
    long as a small kernel). The twin runs the same forward, setup_context, backward and jvp in
    the combined ``forward(ctx, ...)`` style (about 5 us): autograd, double backward and
    ``forward_ad`` treat both alike.
    """
    forward, setup_context = func_cls.forward, func_cls.setup_context

    def eager_forward(ctx, *args):
        out = forward(*args)
        setup_context(ctx, args, out)
        return out

    eager_cls = type(
        func_cls.__name__ + "Eager",
        (torch.autograd.Function,),
        dict(
            forward=staticmethod(eager_forward),
            backward=staticmethod(func_cls.backward),
            jvp=staticmethod(func_cls.jvp),
        ),
    )
    # Dynamo refuses Functions with a custom jvp (and drops nothing silently: compiled code
    # rejects forward-AD inputs anyway), so tracing gets a twin without one.
    traced_cls = type(
        func_cls.__name__ + "Traced",
        (torch.autograd.Function,),
        dict(forward=staticmethod(eager_forward), backward=staticmethod(func_cls.backward)),
    )
    transforms_active = torch._C._are_functorch_transforms_active
    func_apply, eager_apply, traced_apply = func_cls.apply, eager_cls.apply, traced_cls.apply

    def call(*args):
        if transforms_active():
            return func_apply(*args)
        return traced_apply(*args) if compiling() else eager_apply(*args)

    func_cls.call = staticmethod(call)
    func_cls.eager_class = eager_cls
    return func_cls


def autograd_function(name: str, forward, setup_context, backward, jvp, vmap=None, generate_vmap_rule=False):
    """The Function (and eager twin, :func:`with_eager_twin`) made of these staticmethods;
    returns its ``call``."""
    attrs = dict(
        forward=staticmethod(forward),
        setup_context=staticmethod(setup_context),
        backward=staticmethod(backward),
        jvp=staticmethod(jvp),
    )
    if generate_vmap_rule:
        attrs["generate_vmap_rule"] = True
    else:
        attrs["vmap"] = staticmethod(vmap)
    return with_eager_twin(type(name, (torch.autograd.Function,), attrs)).call
