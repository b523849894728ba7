"""``linear``: one fused node for ``x @ w.T + b``.
"""
from __future__ import annotations

from ...ops.autocast import autocast_op
from ...autograd.graph import Op



@autocast_op("linear")
def linear(input, weight, bias=None):
    """``input @ weight.T + bias``; ``weight`` is (out_features, in_features).

    Example:
        >>> F.linear(ddp.ones(2, 3), ddp.ones(4, 3)).shape
        ddp.Size([2, 4])
    """
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise RuntimeError(f"linear: expected input, weight and bias of one dtype, got input "
                           f"{input.dtype.name}, weight {weight.dtype.name}"
                           + (f", bias {bias.dtype.name}" if bias is not None else ""))
    if input.ndim == 0 or input.shape[-1] != weight.shape[-1]:
        raise RuntimeError(f"linear: input of shape {tuple(input.shape)} does not fit weight of "
                           f"shape {tuple(weight.shape)} (in_features={weight.shape[-1]})")
    return LinearOp.apply(input, weight, bias)


class LinearOp(Op):
    """``x @ w.T + b`` as one node. The weight's gradient is computed as ``g.T @ x``, directly in
    the weight's (out, in) layout: through ``matmul(x, w.t())`` it would arrive transposed and
    cost a strided copy of the whole weight every step (6 ms of a 20 ms MLP step)."""
    fresh_grads = True
    writes_grad_sinks = True   # the weight's and bias's gradients straight into DDP's buckets

    @staticmethod
    def forward(ctx, x, w, b=None):
        ctx.save_for_backward(x, w)
        if x.ndim > 2:  # one 2-D product over all rows: NumPy runs a 3-D operand as one small
            # product per leading index (1.3x slower at (32, 128, 256) @ (256, 2048))
            out = (x.reshape((-1, x.shape[-1])) @ w.T).reshape(x.shape[:-1] + (w.shape[0],))
        else:
            out = x @ w.T
        if out.dtype != x.dtype:  # bfloat16 products come back as float32: round them
            out = out.astype(x.dtype)
        if b is not None:
            out += b
        return out

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        xp = ctx.xp
        need_x, need_w, need_b = ctx.needs_input_grad
        rows = g.reshape((-1, g.shape[-1]))
        gx = xp.matmul(rows, w).reshape(x.shape) if need_x else None
        gw = gb = None
        if need_w:
            sink = _sink(ctx, 1, rows)
            if sink is None:
                gw = xp.matmul(xp.swapaxes(rows, 0, 1), x.reshape((-1, x.shape[-1])))
            else:   # the scale on the smaller operand: a batch of rows against the weight
                gw, scale = sink
                scaled = scale != 1 and rows.size <= gw.size
                xp.matmul(xp.swapaxes(rows * scale if scaled else rows, 0, 1),
                          x.reshape((-1, x.shape[-1])), out=gw)
                if scale != 1 and not scaled:
                    gw *= scale
        if need_b:
            sink = _sink(ctx, 2, rows)
            if sink is None:
                gb = rows.sum(axis=0)
            else:
                gb, scale = sink
                rows.sum(axis=0, out=gb)
                if scale != 1:
                    gb *= scale
        return gx, gw, gb


def _sink(ctx, i, rows):
    """Input ``i``'s gradient sink ``(out, scale)`` (DDP's bucket: see ``Node.gradient_sink``),
    where the product can be written: the gradient's own dtype (bfloat16 products come back as
    float32)."""
    sink = ctx.gradient_sink(i)
    if sink is None or sink[0].dtype != rows.dtype or rows.dtype.char not in "efd":
        return None
    return sink
