"""Loss functions of ``ddp.nn.functional`` (cross_entropy, mse_loss, ...) with PyTorch's
arguments, reductions (``'none' | 'mean' | 'sum'``) and semantics.

``cross_entropy`` is one fused, numerically stable primitive (log-softmax and the weighted sum
over classes in one node, backward ``sum(t) * softmax(x) - t``); the class-index form, its
class weights, ``ignore_index`` and label smoothing become a dense target distribution ``t``
first, so both target forms share it. ``nll_loss`` uses the same distribution.

Example:
    >>> import ddp.nn.functional as F
    >>> F.cross_entropy(ddp.tensor([[0.0, 0.0]]), ddp.tensor([1]))
    tensor(0.6931)
"""
from __future__ import annotations

import warnings

import numpy as np

from ... import backend, kernels
from ...kernels import softmax as _softmax_kernels
from ...ops.autocast import autocast_op
from ...autograd import graph
from ...autograd.graph import Op
from ...ops.shape import _along_axis_index
from ...tensor import where
from ...ops.reduction import LogSoftmax, _log_softmax_array
from ._activations import Softplus

__all__ = ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div"]


# --------------------------------------------------------------------------- reductions

def _legacy_reduction(size_average, reduce, reduction):
    """``reduction``, or what the deprecated ``size_average``/``reduce`` flags ask for."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn("size_average and reduce args will be deprecated, please use reduction instead.",
                  stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


def _reduce(loss, reduction, mean_denominator=None):
    """Apply ``reduction``; ``'mean'`` divides the sum by ``mean_denominator`` when given."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if mean_denominator is None else loss.sum() / mean_denominator
    raise ValueError(f"{reduction} is not a valid value for reduction")


def _broadcast_pair(name, input, target):
    """``input`` and ``target`` broadcast together (with PyTorch's warning when their sizes
    differ); an error naming the loss and both shapes when they cannot be."""
    if input.shape == target.shape:
        return input, target
    warnings.warn(f"Using a target size ({target.shape}) that is different to the input size "
                  f"({input.shape}). This will likely lead to incorrect results due to "
                  f"broadcasting. Please ensure they have the same size.", stacklevel=3)
    try:
        shape = np.broadcast_shapes(tuple(input.shape), tuple(target.shape))
    except ValueError:
        raise RuntimeError(f"{name}: the size of input {tuple(input.shape)} must match the size of "
                           f"target {tuple(target.shape)} (they cannot be broadcast "
                           f"together)") from None
    return input.expand(shape), target.expand(shape)


def _weighted(name, loss, input, weight, reduction, mean="weights"):
    """``loss * weight`` reduced; ``'mean'`` is ``sum(w * l) / sum(w)`` (``mean='weights'``, as
    PyTorch's mse_loss and l1_loss) or the plain mean (``mean='elements'``, as huber_loss)."""
    if weight is None:
        return _reduce(loss, reduction)
    if weight.shape != input.shape:
        raise ValueError(f"{name}: Weights and input must have the same size (weight "
                         f"{tuple(weight.shape)}, input {tuple(input.shape)}).")
    loss = loss * weight
    return _reduce(loss, reduction, weight.sum() if mean == "weights" else None)


# --------------------------------------------------------------------------- regression losses

@autocast_op("mse_loss")
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Squared error ``(x - y)^2``, reduced.

    Example:
        >>> mse_loss(ddp.tensor([1.0, 2.0]), ddp.tensor([0.0, 0.0]))
        tensor(2.5000)
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, y = _broadcast_pair("mse_loss", input, target)
    d = x - y
    return _weighted("mse_loss", d * d, input, weight, reduction)


@autocast_op("l1_loss")
def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Absolute error ``|x - y|``, reduced.

    Example:
        >>> l1_loss(ddp.tensor([1.0, -2.0]), ddp.tensor([0.0, 0.0]))
        tensor(1.5000)
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    x, y = _broadcast_pair("l1_loss", input, target)
    return _weighted("l1_loss", (x - y).abs(), input, weight, reduction)


def _huber(d, delta):
    """``0.5 d^2`` for ``|d| < delta``, ``delta * (|d| - 0.5 delta)`` beyond."""
    a = d.abs()
    return where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))


@autocast_op("smooth_l1_loss")
def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """``0.5 (x - y)^2 / beta`` where ``|x - y| < beta``, ``|x - y| - 0.5 beta`` beyond
    (``beta=0``: the L1 loss).

    Example:
        >>> smooth_l1_loss(ddp.tensor([0.5, 3.0]), ddp.tensor([0.0, 0.0]))
        tensor(1.3125)
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    x, y = _broadcast_pair("smooth_l1_loss", input, target)
    d = x - y
    loss = d.abs() if beta == 0 else _huber(d, beta) / beta
    return _reduce(loss, reduction)


@autocast_op("huber_loss")
def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """``0.5 (x - y)^2`` where ``|x - y| < delta``, ``delta (|x - y| - 0.5 delta)`` beyond.

    Example:
        >>> huber_loss(ddp.tensor([0.5, 3.0]), ddp.tensor([0.0, 0.0]))
        tensor(1.3125)
    """
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    x, y = _broadcast_pair("huber_loss", input, target)
    return _weighted("huber_loss", _huber(x - y, delta), input, weight, reduction,
                     mean="elements")


# --------------------------------------------------------------------------- binary losses

class BinaryCrossEntropy(Op):
    """Elementwise ``-(t log x + (1 - t) log(1 - x))`` with each log clamped to >= -100 and
    PyTorch's gradient ``(x - t) / max(x (1 - x), 1e-12)``."""

    @staticmethod
    def forward(ctx, x, t):
        xp = backend.get_array_module(x)
        ctx.save_for_backward(x, t)
        return -(t * xp.maximum(xp.log(x), -100) + (1 - t) * xp.maximum(xp.log1p(-x), -100))

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        xp = ctx.xp
        need_x, need_t = ctx.needs_input_grad
        gx = gt = None
        if need_x:
            p = x * (1 - x)
            gx = g * (x - t) / xp.where(p > 1e-12, p, 1e-12)
        if need_t:
            log_x, log_1mx = xp.log(x), xp.log(1 - x)
            gt = g * (xp.where(log_1mx > -100, log_1mx, -100.0)
                      - xp.where(log_x > -100, log_x, -100.0))
        return gx, gt


@autocast_op("binary_cross_entropy")
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """``-w (t log x + (1 - t) log(1 - x))`` for probabilities ``x`` in [0, 1] (logs clamped to
    >= -100, as PyTorch).

    Example:
        >>> binary_cross_entropy(ddp.tensor([0.5]), ddp.tensor([1.0]))
        tensor(0.6931)
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy: Using a target size ({target.shape}) that is "
                         f"different to the input size ({input.shape}) is deprecated. Please "
                         f"ensure they have the same size.")
    x = input._data
    if x.size and backend.validates(x) and not bool(((x >= 0) & (x <= 1)).all()):
        raise RuntimeError("binary_cross_entropy: all elements of input should be between 0 and 1")
    loss = BinaryCrossEntropy.apply(input, target.to(input.dtype))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


@autocast_op("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """Binary cross entropy of ``sigmoid(x)``, computed from the logits without overflow:
    ``(1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)``, times ``weight``.

    Example:
        >>> binary_cross_entropy_with_logits(ddp.tensor([1e4, -1e4]), ddp.tensor([1.0, 0.0]))
        tensor(0.)
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: Target size ({target.shape}) must be "
                         f"the same as input size ({input.shape})")
    softplus_neg = Softplus.apply(-input, threshold=None)  # log(1 + exp(-x)), exact everywhere
    if pos_weight is not None:
        softplus_neg = (1 + (pos_weight - 1) * target) * softplus_neg
    loss = (1 - target) * input + softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


@autocast_op("kl_div")
def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Pointwise KL divergence ``t (log t - x)`` for log-probabilities ``x`` (``log_target``:
    ``t`` given as log-probabilities too); ``'batchmean'`` divides the sum by the batch size.

    Example:
        >>> kl_div(ddp.tensor([0.5, 0.5]).log(), ddp.tensor([0.5, 0.5]), reduction="batchmean")
        tensor(0.)
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce, reduction)
    elif reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the "
                      "support size.'batchmean' divides only by the batch size, and aligns with "
                      "the KL div math definition.'mean' will be changed to behave the same as "
                      "'batchmean' in the next major release.", stacklevel=2)
    if log_target:
        loss = target.exp() * (target - input)
    else:  # xlogy(t, t) - t x: 0 where t == 0
        loss = target * where(target == 0, 1.0, target).log() - target * input
    if reduction == "batchmean":
        return loss.sum() / input.shape[0] if input.ndim else loss.sum()
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------- class losses

class CrossEntropy(Op):
    """``-sum_c t_c log_softmax(x)_c`` along ``dim``: per-sample cross entropy against a target
    distribution ``t`` (an array, or a Tensor that may require grad), fused and stable."""

    @staticmethod
    def forward(ctx, x, t, dim=1):
        logp = _log_softmax_array(x, dim)
        ctx.save_for_backward(x, t, logp)
        ctx.dim = dim
        return -(t * logp).sum(axis=dim)

    @staticmethod
    def backward(ctx, g):
        x, t, logp = ctx.saved_tensors
        if ctx.create_graph:  # the saved logp is a constant: rebuild it on the graph
            logp = LogSoftmax.apply(x, dim=ctx.dim)
        xp = ctx.xp
        g = xp.expand_dims(g, ctx.dim)
        need_x, need_t = ctx.needs_input_grad
        gx = g * (t.sum(axis=ctx.dim, keepdims=True) * xp.exp(logp) - t) if need_x else None
        gt = -g * logp if need_t else None
        return gx, gt


def _class_targets(name, input, target, weight, ignore_index):
    """Check class-index targets. ``input`` is ``(N, C, d1, ...)`` or ``(C,)``; ``target``
    integer ``(N, d1, ...)`` or ``()``. Returns ``(y, valid, w, dim)``: the indices with ignored
    ones set to 0, the mask of those kept, the class weights (ones without ``weight``) in the
    input's dtype, and the class dimension."""
    if target.dtype.is_floating_point or target.dtype.name == "bool":
        hint = "; probability targets must have the input's shape" \
            if name == "cross_entropy" else ""
        raise RuntimeError(f"{name}: expected target dtype to be Long or Byte (class indices), but "
                           f"got {target.dtype.name} target of shape {tuple(target.shape)} for "
                           f"input of shape {tuple(input.shape)}{hint}")
    if input.ndim == 0:
        raise ValueError(f"{name}: input must have at least 1 dimension (got a 0-dim tensor)")
    dim = 0 if input.ndim == 1 else 1
    n_classes = input.shape[dim]
    expected = tuple(input.shape[:dim]) + tuple(input.shape[dim + 1:])
    if tuple(target.shape) != expected:
        if input.ndim >= 2 and (target.ndim == 0 or target.shape[0] != input.shape[0]):
            raise ValueError(f"{name}: Expected input batch_size ({input.shape[0]}) to match "
                             f"target batch_size ({target.shape[0] if target.ndim else 0}) "
                             f"(input {tuple(input.shape)}, target {tuple(target.shape)}).")
        raise RuntimeError(f"{name}: Expected target size {list(expected)}, got "
                           f"{list(target.shape)} (input {tuple(input.shape)}).")
    x = input._data
    xp = backend.get_array_module(x)
    y = backend.to_device(target._data, input.device).astype(np.int64, copy=False)
    valid = y != ignore_index
    bad = valid & ((y < 0) | (y >= n_classes)) if backend.validates(y) else None
    if bad is not None and bool(bad.any()):   # a value check: on a GPU only under --debug
        value = int(y[bad].reshape(-1)[0])
        raise IndexError(f"{name}: Target {value} is out of bounds (expected class indices in "
                         f"[0, {n_classes - 1}] or ignore_index={ignore_index}; input "
                         f"{tuple(input.shape)}, target {tuple(target.shape)}).")
    if weight is not None:
        if weight.ndim != 1 or weight.shape[0] != n_classes:
            raise RuntimeError(f"{name}: weight tensor should be defined either for all "
                               f"{n_classes} classes or no classes but got weight tensor of shape: "
                               f"{list(weight.shape)}")
        w = backend.to_device(weight._data, input.device).astype(x.dtype, copy=False)
    else:
        w = None
    safe = xp.where(valid, y, 0)
    return safe, valid, w, dim


def _class_index(y, dim):
    """``(index, values_shape)``: the index tuple that picks class ``y`` of every sample along
    ``dim``, and the shape per-sample values take to be stored through it."""
    xp = backend.get_array_module(y)
    if y.ndim == 0:
        return (y,), ()
    if y.ndim == 1 and dim == 1:   # (N, C): the common case, without an open grid
        return (xp.arange(y.shape[0]), y), y.shape
    index = xp.expand_dims(y, dim)
    return _along_axis_index(index, dim), index.shape


class ClassCrossEntropy(Op):
    """Cross entropy of logits (``log_softmax=True``) or negative log likelihood of
    log-probabilities against class indices, reduced, in one node:
    ``l = -(1 - eps) w[y] logp[y] - eps / C sum_c w_c logp_c`` for the targets kept, summed
    (``'sum'``), divided by ``sum w[y]`` (``'mean'``) or per sample (``'none'``).

    Inputs: ``x`` and the arrays from :func:`_class_targets` (no gradient). Saved: the
    indices, the per-sample weights and, for cross entropy, ``e = exp(x - max)`` with the
    row totals (``softmax = e / total``; ``e`` the size of the log-probabilities, an extra
    output, so that under ``create_graph`` it is on the graph and backward differentiates
    again) — no dense N x C target, no copy of ``x``. Backward:
    ``gx = p * g W - g (1 - eps) w[y] onehot(y) - g eps / C w`` with
    ``W = (1 - eps) w[y] + eps / C sum w`` (the target distribution's total)."""

    @staticmethod
    def forward(ctx, x, y, valid, w, dim=1, smoothing=0.0, reduction="mean", log_softmax=True):
        xp = backend.get_array_module(x)
        n_classes = x.shape[dim]
        idx, _ = _class_index(y, dim)
        w_y = valid.astype(x.dtype) if w is None else w[y] * valid
        inv_total = None
        rows = log_softmax and _rows(x, dim)
        if rows:   # the same with ddp.kernels' row passes
            p, shift, total = _softmax_kernels.shifted_exp(x)
        elif log_softmax:   # e = exp(x - max) and the picked log-probabilities: four passes
            shift = x.max(axis=dim, keepdims=True)
            p = x - shift
            xp.exp(p, out=p)
            total = p.sum(axis=dim, keepdims=True)
        if log_softmax:
            inv_total = 1 / total          # softmax = e / total, divided in backward's pass
            shift += xp.log(total)         # log sum exp
            loss = (x[idx] - shift[idx[:-1] + (0,)] if dim == x.ndim - 1 and x.ndim > 1 else
                    (x - shift)[idx]).reshape(y.shape) * (-(1 - smoothing) * w_y)
        else:
            p = None
            loss = x[idx].reshape(y.shape) * (-(1 - smoothing) * w_y)
        if smoothing > 0:   # sum_c w_c logp_c
            wx = x.sum(axis=dim) if w is None else \
                (x * w.reshape((n_classes,) + (1,) * (x.ndim - dim - 1))).sum(axis=dim)
            if log_softmax:
                wx = wx - (n_classes if w is None else w.sum()) * shift.reshape(wx.shape)
            loss -= (smoothing / n_classes) * wx * valid
        denominator = None
        if reduction == "mean":
            denominator = w_y.sum()
            loss = loss.sum() / denominator
        elif reduction == "sum":
            loss = loss.sum()
        if loss.dtype != x.dtype:
            loss = loss.astype(x.dtype)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(p)
        ctx.y, ctx.valid, ctx.w, ctx.w_y, ctx.denominator = y, valid, w, w_y, denominator
        ctx.dim, ctx.smoothing, ctx.reduction, ctx.log_softmax = dim, smoothing, reduction, \
            log_softmax
        ctx.x_meta = (x.shape, x.dtype)
        ctx.inv_total = inv_total
        return (loss, p) if log_softmax else loss   # p: e, unnormalised

    @staticmethod
    def backward(ctx, g, g_e=None):
        e, = ctx.saved_tensors
        xp = ctx.xp
        dim, eps = ctx.dim, ctx.smoothing
        shape, dtype = ctx.x_meta
        n_classes = shape[dim]
        arrays = xp is not graph.tensor_xp
        gx = None
        fused = arrays and ctx.log_softmax and _rows(e, dim)   # (see cross_entropy_grad)
        if g is not None:
            if ctx.reduction == "mean":
                g = g / ctx.denominator
            gs = g * ctx.w_y if arrays else g * graph.Tensor._make(ctx.w_y)  # per sample
            w = ctx.w
            if ctx.log_softmax:
                total = (1 - eps) * ctx.w_y
                if eps > 0:
                    total = total + (eps / n_classes) * (n_classes if w is None else w.sum()) \
                        * ctx.valid
                gt = g * total if arrays else g * graph.Tensor._make(total)
                if fused:   # and the picked classes' part, in one pass
                    gx = _softmax_kernels.cross_entropy_grad(
                        e, gt * ctx.inv_total.reshape(-1), ctx.y, (1 - eps) * gs)
                elif arrays:   # softmax * g W in one pass over e
                    gx = e * (xp.expand_dims(gt, dim) * ctx.inv_total)
                else:        # softmax recorded from e, which is on the graph (output 1)
                    gx = e / e.sum(axis=dim, keepdims=True) * xp.expand_dims(gt, dim)
            elif arrays:
                gx = backend.get_array_module(ctx.y).zeros(shape, dtype)
            if not fused:   # (else the picked classes' part was in cross_entropy_grad)
                idx, at = _class_index(ctx.y, dim)
                if arrays:
                    gx[idx] -= ((1 - eps) * gs).reshape(at)
                else:   # under create_graph: the one-hot part as a dense constant times g
                    onehot = backend.get_array_module(ctx.y).zeros(shape, dtype)
                    onehot[idx] = 1 - eps
                    part = xp.expand_dims(gs, dim) * graph.Tensor._make(onehot)
                    gx = -part if gx is None else gx - part
            if eps > 0:
                ws = 1 if w is None else w.reshape((n_classes,) + (1,) * (len(shape) - dim - 1))
                if not arrays and w is not None:
                    ws = graph.Tensor._make(ws)
                valid = ctx.valid if arrays else graph.Tensor._make(ctx.valid.astype(dtype))
                gx = gx - xp.expand_dims(g * valid, dim) * ((eps / n_classes) * ws)
        if g_e is not None:   # through e = exp(x - max) (double backward); the max's own
            part = g_e * e    # term cancels: e enters the gradient only as e / sum(e)
            gx = part if gx is None else gx + part
        return gx, None, None, None


def _rows(x, dim):
    """Whether cross entropy's passes over ``x`` go to ddp.kernels: (N, C) logits, classes
    along dim 1, that :func:`kernels.fits` takes."""
    return x is not None and x.ndim == 2 and dim == 1 and kernels.fits(x)


def _class_loss(name, input, target, weight, ignore_index, label_smoothing, reduction,
                log_softmax):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    y, valid, w, dim = _class_targets(name, input, target, weight, ignore_index)
    out = ClassCrossEntropy.apply(input, y, valid, w, dim=dim, smoothing=label_smoothing,
                          reduction=reduction, log_softmax=log_softmax)
    return out[0] if log_softmax else out


@autocast_op("nll_loss")
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log likelihood ``-w[y] * input[y]`` for log-probabilities ``input`` ``(N, C)``,
    ``(C,)`` or ``(N, C, d1, ...)`` and class indices ``target``; ``'mean'`` divides by the
    summed weights of the targets not equal to ``ignore_index``.

    Example:
        >>> nll_loss(ddp.tensor([[-1.0, -2.0]]), ddp.tensor([1]))
        tensor(2.)
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return _class_loss("nll_loss", input, target, weight, ignore_index, 0.0, reduction, False)


@autocast_op("cross_entropy")
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross entropy of the logits ``input`` (``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``)
    against class indices (with class ``weight``, ``ignore_index``; ``'mean'`` divides by the
    summed weights of the targets kept) or against class probabilities of the input's shape
    (``'mean'`` divides by the number of samples); ``label_smoothing`` mixes the target with
    the uniform distribution.

    Example:
        >>> cross_entropy(ddp.tensor([[1e4, 0.0]]), ddp.tensor([0]))
        tensor(0.)
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: "
                         f"{label_smoothing}")
    if target.shape != input.shape:
        return _class_loss("cross_entropy", input, target, weight, ignore_index, label_smoothing,
                           reduction, True)
    # class probabilities
    if not target.dtype.is_floating_point:
        raise RuntimeError(f"cross_entropy: Expected floating point type for target with class "
                           f"probabilities, got {target.dtype.name} (target of the input's shape "
                           f"{tuple(input.shape)})")
    dim = 0 if input.ndim == 1 else 1
    n_classes = input.shape[dim]
    dist = target.to(input.dtype)
    if label_smoothing > 0:
        dist = dist * (1 - label_smoothing) + label_smoothing / n_classes
    if weight is not None:
        if weight.ndim != 1 or weight.shape[0] != n_classes:
            raise RuntimeError(f"cross_entropy: weight tensor should be defined either for all "
                               f"{n_classes} classes or no classes but got weight tensor of shape: "
                               f"{list(weight.shape)}")
        dist = dist * weight.to(input.dtype).reshape((n_classes,) + (1,) * (input.ndim - dim - 1))
    loss = CrossEntropy.apply(input, dist, dim=dim)
    samples = input.numel() // n_classes if n_classes else 0
    return _reduce(loss, reduction, samples if samples else float("nan"))
