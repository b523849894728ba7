"""Embedding lookup (with ``padding_idx`` and ``max_norm``) and ``one_hot``.
"""
from __future__ import annotations

import numpy as np
from ... import backend
from ...autograd.graph import Op
from ...ops.shape import scatter_into_zeros
from ...tensor import Tensor



class Embedding(Op):
    """The lookup op of :func:`embedding`: rows of ``weight`` at ``indices``; the gradient of
    row ``padding_idx`` is zero."""
    fresh_grads = True
    writes_grad_sinks = True   # the weight's gradient scattered straight into DDP's bucket

    @staticmethod
    def forward(ctx, weight, indices=None, padding_idx=None, scale_grad_by_freq=False):
        ctx.indices, ctx.shape, ctx.padding_idx = indices, weight.shape, padding_idx
        ctx.scale = None
        if scale_grad_by_freq:
            xp = backend.get_array_module(indices)
            counts = xp.bincount(indices.reshape(-1), minlength=weight.shape[0])
            ctx.scale = (1.0 / xp.maximum(counts[indices], 1)).astype(weight.dtype)[..., None]
        # take: 81 µs at (128, 32) rows of 128 float32 against 135 µs for weight[indices]
        return backend.get_array_module(weight).take(weight, indices, axis=0)

    @staticmethod
    def backward(ctx, g):
        indices = ctx.indices
        if ctx.padding_idx is not None:
            g = g * (indices != ctx.padding_idx)[..., None]
        if ctx.scale is not None:
            g = g * ctx.scale
        sink = ctx.gradient_sink(0)
        if sink is None or sink[0].dtype != g.dtype:
            return scatter_into_zeros(g, ctx.shape, (indices,))
        # into the sink (DDP's bucket: see Node.gradient_sink), scaled on the smaller side: the
        # looked-up rows (4,096 x 128) or the weight (10,000 x 128)
        out, scale = sink
        scaled = scale != 1 and g.size <= out.size
        if scaled:
            g = g * scale
        out[...] = 0
        backend.index_add_at(out, (indices,), g, into_zeros=True)
        if scale != 1 and not scaled:
            out *= scale
        return out


def _embedding(name, input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
               scale_grad_by_freq=False, sparse=False):
    if sparse:
        raise NotImplementedError(f"{name}: sparse gradients are not supported")
    if input.dtype.is_floating_point or input.dtype.name == "bool":
        raise RuntimeError(f"{name}: expected integer indices (int64 or int32), got "
                           f"{input.dtype.name}")
    num = weight.shape[0]
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise ValueError(f"{name}: padding_idx={padding_idx} must be within the number of "
                             f"embeddings {num}")
        padding_idx %= num
    idx = input._data
    # the bounds check reads values back: on a GPU only under --debug (backend.validates)
    if idx.size and backend.validates(idx) and (int(idx.min()) < 0 or int(idx.max()) >= num):
        raise IndexError(f"{name}: index out of range: indices must be in [0, {num}), got values "
                         f"in [{int(idx.min())}, {int(idx.max())}]")
    if max_norm is not None:
        _renorm_rows(weight, idx, max_norm, norm_type)
    return Embedding.apply(weight, indices=idx, padding_idx=padding_idx,
                             scale_grad_by_freq=scale_grad_by_freq)


def _renorm_rows(weight, idx, max_norm, norm_type):
    """Rescale in place the rows of ``weight`` used by ``idx`` whose norm exceeds ``max_norm``."""
    xp = backend.get_array_module(idx)
    rows = xp.unique(idx.reshape(-1))
    w = weight._data
    norms = xp.linalg.norm(w[rows].astype(np.float64), ord=norm_type, axis=1)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    w[rows] = (w[rows] * scale[:, None]).astype(w.dtype)
    weight._vc[0] += 1


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """Look up rows of ``weight`` (num_embeddings, dim) at the integer ``input``; row
    ``padding_idx`` gets no gradient; with ``max_norm`` the used rows are renormalised in place.

    Example:
        >>> F.embedding(ddp.tensor([[0, 2]]), ddp.eye(3)).shape
        ddp.Size([1, 2, 3])
    """
    return _embedding("embedding", input, weight, padding_idx, max_norm, norm_type,
                      scale_grad_by_freq, sparse)


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding with a new last dimension of ``num_classes`` (max + 1 by default).

    Example:
        >>> F.one_hot(ddp.tensor([0, 2]), 3)
        tensor([[1, 0, 0],
                [0, 0, 1]])
    """
    if tensor.dtype.is_floating_point or tensor.dtype.name == "bool":
        raise RuntimeError("one_hot is only applicable to index tensor (int64 or int32), got "
                           f"{tensor.dtype.name}")
    idx = tensor._data
    xp = backend.get_array_module(idx)
    if idx.size and int(idx.min()) < 0:
        raise RuntimeError("one_hot: class values must be non-negative")
    if num_classes == -1:
        num_classes = int(idx.max()) + 1 if idx.size else 0
    elif idx.size and int(idx.max()) >= num_classes:
        raise RuntimeError(f"one_hot: class values must be smaller than num_classes="
                           f"{num_classes}, got {int(idx.max())}")
    out = (idx[..., None] == xp.arange(num_classes)).astype(np.int64)
    return Tensor._make(out)
