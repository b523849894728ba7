"""``unfold`` (im2col) and ``fold`` (col2im) as ops that are each other's adjoint.
"""
from __future__ import annotations

from ... import backend
from ...autograd.graph import Op
from ._helpers import _batched, _col2im, _crop_hw, _ntuple, _out_size, _pad_hw, _shape, _windows



def _unfold_array(x, kernel, stride, dilation, pads, out):
    cols = _windows(_pad_hw(x, pads), kernel, stride, dilation, out)
    return cols.reshape(x.shape[0], -1, out[0] * out[1])


def _fold_array(cols, kernel, stride, dilation, pads, out, shape):
    padded = shape[:2] + (shape[2] + sum(pads[0]), shape[3] + sum(pads[1]))
    full = cols.reshape(shape[:2] + tuple(kernel) + tuple(out))
    return backend.get_array_module(cols).ascontiguousarray(
        _crop_hw(_col2im(full, padded, stride, dilation), pads))


class Im2Col(Op):
    """im2col: (N, C, H, W) → (N, C*kh*kw, L); its adjoint is :class:`Col2Im`."""

    @staticmethod
    def forward(ctx, x, kernel=None, stride=None, dilation=None, pads=None, out=None):
        ctx.args = (kernel, stride, dilation, pads, out)
        ctx.shape = x.shape
        return _unfold_array(x, kernel, stride, dilation, pads, out)

    @staticmethod
    def backward(ctx, g):
        kernel, stride, dilation, pads, out = ctx.args
        return Col2Im.run(g, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out,
                          shape=ctx.shape)


class Col2Im(Op):
    """col2im: (N, C*kh*kw, L) summed into (N, C, H, W); its adjoint is :class:`Im2Col`."""

    @staticmethod
    def forward(ctx, cols, kernel=None, stride=None, dilation=None, pads=None, out=None,
                shape=None):
        ctx.args = (kernel, stride, dilation, pads, out)
        return _fold_array(cols, kernel, stride, dilation, pads, out, shape)

    @staticmethod
    def backward(ctx, g):
        kernel, stride, dilation, pads, out = ctx.args
        return Im2Col.run(g, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out)


def _fold_geometry(kernel_size, dilation, padding, stride, size):
    kernel, dilation = _ntuple(kernel_size, 2), _ntuple(dilation, 2, "dilation")
    padding, stride = _ntuple(padding, 2, "padding"), _ntuple(stride, 2, "stride")
    out = tuple(_out_size(size[a], kernel[a], stride[a], dilation[a], 2 * padding[a])
                for a in range(2))
    return kernel, dilation, tuple((p, p) for p in padding), stride, out


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Extract sliding blocks (im2col): (N, C, H, W) → (N, C*kh*kw, L), L = number of windows.

    Example:
        >>> F.unfold(ddp.ones(1, 2, 4, 4), 2, stride=2).shape
        ddp.Size([1, 8, 4])
    """
    x, unbatched = _batched("unfold", input, 4, "H, W")
    kernel, dilation, pads, stride, out = _fold_geometry(kernel_size, dilation, padding, stride,
                                                         x.shape[2:])
    if min(out) < 1:
        raise RuntimeError(f"unfold: input of shape {_shape(input)} is smaller than the kernel")
    y = Im2Col.apply(x, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out)
    return y.squeeze(0) if unbatched else y


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding blocks back into an image (col2im), the adjoint of :func:`unfold`:
    (N, C*kh*kw, L) → (N, C, *output_size).

    Example:
        >>> F.fold(ddp.ones(1, 8, 4), (4, 4), 2, stride=2).shape
        ddp.Size([1, 2, 4, 4])
    """
    x, unbatched = _batched("fold", input, 3, "L")
    size = _ntuple(output_size, 2, "output_size")
    kernel, dilation, pads, stride, out = _fold_geometry(kernel_size, dilation, padding, stride,
                                                         size)
    k = kernel[0] * kernel[1]
    if x.shape[1] % k or x.shape[2] != out[0] * out[1]:
        raise RuntimeError(f"fold: expected input of shape (N, C*{k}, {out[0] * out[1]}) for "
                           f"output_size={size} and kernel_size={kernel}, got {_shape(input)}")
    y = Col2Im.apply(x, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out,
                     shape=(x.shape[0], x.shape[1] // k) + size)
    return y.squeeze(0) if unbatched else y
