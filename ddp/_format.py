"""How tensors print: ``tensor([1., 2.], requires_grad=True)``, PyTorch's layout and precision."""
from __future__ import annotations

import numpy as np

from . import backend

_DEFAULT_SHOWN = {"float32", "int64", "bool"}  # dtypes that PyTorch leaves out of the repr


def _float_formatter(arr):
    """PyTorch's choice: whole numbers as ``1.``, else 4 decimals, scientific for wide ranges."""
    finite = arr[np.isfinite(arr)].astype(np.float64)
    nonzero = np.abs(finite[finite != 0])
    if finite.size and np.all(finite == np.round(finite)) and (not nonzero.size or nonzero.max() < 1e8):
        def fmt(v):
            return f"{v:.0f}." if np.isfinite(v) else _special(v)
    else:
        sci = nonzero.size and (nonzero.max() >= 1e8 or nonzero.min() < 1e-4
                                or nonzero.max() / nonzero.min() > 1000)

        def fmt(v):
            return (f"{v:.4e}" if sci else f"{v:.4f}") if np.isfinite(v) else _special(v)
    return fmt


def _special(v):
    return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")


def _format_array(arr):
    if backend.bfloat16 is not None and arr.dtype == backend.bfloat16.np:
        arr = arr.astype(np.float32)
    if arr.dtype.kind == "f":
        fmt = _float_formatter(arr)
    elif arr.dtype == np.bool_:
        def fmt(v):
            return "True" if v else "False"
    else:
        def fmt(v):
            return str(int(v))
    flat = arr.reshape(-1)
    sample = flat if flat.size <= 1000 else np.concatenate([flat[:3], flat[-3:]])
    width = max((len(fmt(v)) for v in sample), default=1)
    kind = "float" if arr.dtype.kind == "f" else "bool" if arr.dtype == np.bool_ else "int"
    return np.array2string(arr, separator=", ", prefix="tensor(", threshold=1000, edgeitems=3,
                           max_line_width=80, formatter={kind: lambda v: fmt(v).rjust(width)})


def tensor_repr(t):
    arr = t._host()
    body = _format_array(arr) if arr.size else "[]"
    extras = []
    if t.device.type != "cpu":
        extras.append(f"device='{t.device}'")
    if arr.size == 0 and arr.ndim != 1:
        extras.append(f"size={tuple(arr.shape)}")
    if t.dtype.name not in _DEFAULT_SHOWN:
        extras.append(f"dtype=ddp.{t.dtype.name}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        extras.append("requires_grad=True")
    return "tensor(" + body + "".join(", " + e for e in extras) + ")"
