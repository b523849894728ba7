"""How tensors print: ``tensor([1., 2.], requires_grad=True)``.

A port of PyTorch's ``torch/_tensor_str.py`` (default print options) onto host NumPy arrays, so
reprs match PyTorch's character for character: the same fixed/scientific/integer choice, widths,
line wrapping at 80 columns, and summarisation (``...``) above 1000 elements.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend

_LINEWIDTH = 80
_THRESHOLD = 1000   # more elements than this are summarised
_EDGEITEMS = 3      # items shown at each end of a summarised dimension
_PRECISION = 4
_SCI_MODE = None    # None: chosen from the values (PyTorch's rule); True/False: forced

_PROFILES = {"default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
             "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
             "full": dict(precision=4, threshold=math.inf, edgeitems=3, linewidth=80)}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None,
                     profile=None, sci_mode=None):
    """PyTorch's print options: digits after the point, the element count above which a tensor
    is summarised, items kept at each end, line width, a ``profile`` ('default', 'short',
    'full') to start from, and ``sci_mode`` (True/False forces scientific notation on or off;
    None lets the values decide).

    Example:
        >>> ddp.set_printoptions(precision=2); ddp.tensor([1.2345])
        tensor([1.23])
        >>> ddp.set_printoptions(profile="default")
    """
    global _PRECISION, _THRESHOLD, _EDGEITEMS, _LINEWIDTH, _SCI_MODE
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"set_printoptions: profile must be one of {sorted(_PROFILES)}, "
                             f"got {profile!r}")
        p = _PROFILES[profile]
        _PRECISION, _THRESHOLD, _EDGEITEMS, _LINEWIDTH = (p["precision"], p["threshold"],
                                                          p["edgeitems"], p["linewidth"])
    if precision is not None:
        _PRECISION = int(precision)
    if threshold is not None:
        _THRESHOLD = threshold
    if edgeitems is not None:
        _EDGEITEMS = int(edgeitems)
    if linewidth is not None:
        _LINEWIDTH = int(linewidth)
    _SCI_MODE = sci_mode


class _Formatter:
    """Chooses one format and width for every element, from the values shown."""

    def __init__(self, arr):
        self.floating = arr.dtype.kind == "f"
        self.int_mode = True
        self.sci_mode = False
        self.max_width = 1
        flat = arr.reshape(-1)
        if not self.floating:
            self.max_width = max((len(str(v)) for v in flat.tolist()), default=1)
            return
        vals = flat.astype(np.float64)
        vals = vals[np.isfinite(vals) & (vals != 0)]
        if not vals.size:
            return
        absv = np.abs(vals)
        lo, hi = absv.min(), absv.max()
        self.int_mode = bool(np.all(vals == np.ceil(vals)))
        self.sci_mode = bool(hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4) \
            if _SCI_MODE is None else bool(_SCI_MODE)
        if self.sci_mode:
            widths = (len(f"{v:.{_PRECISION}e}") for v in vals.tolist())
        elif self.int_mode:
            widths = (len(f"{v:.0f}") + 1 for v in vals.tolist())  # + 1 for the trailing "."
        else:
            widths = (len(f"{v:.{_PRECISION}f}") for v in vals.tolist())
        self.max_width = max(widths)

    def format(self, value):
        if self.floating:
            if self.sci_mode:
                ret = f"{value:{self.max_width}.{_PRECISION}e}"
            elif self.int_mode:
                ret = f"{value:.0f}"
                if not (math.isinf(value) or math.isnan(value)):
                    ret += "."
            else:
                ret = f"{value:.{_PRECISION}f}"
        else:
            ret = f"{value}"
        return ret.rjust(self.max_width)


def _summarized(arr):
    """The elements that a summarised print shows (edge items of every dimension)."""
    if arr.ndim == 0:
        return arr
    if arr.ndim == 1:
        n = arr.shape[0]
        return np.concatenate([arr[:_EDGEITEMS], arr[-_EDGEITEMS:]]) if n > 2 * _EDGEITEMS else arr
    rows = range(arr.shape[0])
    if arr.shape[0] > 2 * _EDGEITEMS:
        rows = list(rows[:_EDGEITEMS]) + list(rows[-_EDGEITEMS:])
    return np.stack([_summarized(arr[i]) for i in rows])


def _vector_str(arr, indent, summarize, fmt):
    per_line = max(1, (_LINEWIDTH - indent) // (fmt.max_width + 2))
    if summarize and arr.shape[0] > 2 * _EDGEITEMS:
        data = ([fmt.format(v) for v in arr[:_EDGEITEMS].tolist()] + [" ..."]
                + [fmt.format(v) for v in arr[-_EDGEITEMS:].tolist()])
    else:
        data = [fmt.format(v) for v in arr.tolist()]
    lines = [", ".join(data[i:i + per_line]) for i in range(0, len(data), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _tensor_str(arr, indent, summarize, fmt):
    if arr.ndim == 0:
        return fmt.format(arr.item())
    if arr.ndim == 1:
        return _vector_str(arr, indent, summarize, fmt)
    n = arr.shape[0]
    if summarize and n > 2 * _EDGEITEMS:
        slices = ([_tensor_str(arr[i], indent + 1, summarize, fmt) for i in range(_EDGEITEMS)]
                  + ["..."]
                  + [_tensor_str(arr[i], indent + 1, summarize, fmt)
                     for i in range(n - _EDGEITEMS, n)])
    else:
        slices = [_tensor_str(arr[i], indent + 1, summarize, fmt) for i in range(n)]
    return "[" + ("," + "\n" * (arr.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def _add_suffixes(text, suffixes, indent):
    parts = [text]
    last_line_len = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line_len + len(suffix) + 2 > _LINEWIDTH:
            parts.append(",\n" + " " * indent + suffix)
            last_line_len = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last_line_len += len(suffix) + 2
    parts.append(")")
    return "".join(parts)


def format_array(arr, indent=len("tensor(")):
    """The bracketed body of a tensor's repr, for a host array."""
    if backend.bfloat16 is not None and arr.dtype == backend.bfloat16.np:
        arr = arr.astype(np.float32)  # exact; tolist() then gives Python floats
    if arr.size == 0:
        return "[]"
    summarize = arr.size > _THRESHOLD
    fmt = _Formatter(_summarized(arr) if summarize else arr)
    return _tensor_str(arr, indent, summarize, fmt)


def tensor_repr(t):
    arr = t._host()
    prefix = "tensor("
    suffixes = []
    if t.device.type != "cpu":
        suffixes.append(f"device='{t.device}'")
    dt = t.dtype
    default = backend.get_default_dtype()
    if arr.size == 0:
        if arr.ndim != 1:
            suffixes.append(f"size={tuple(arr.shape)}")
        if dt is not default:  # no elements to tell an int tensor from a float one
            suffixes.append(f"dtype=ddp.{dt.name}")
    elif dt not in (default, backend.int64, backend.bool):
        suffixes.append(f"dtype=ddp.{dt.name}")
    body = format_array(arr, len(prefix))
    if t.grad_fn is not None:
        suffixes.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        suffixes.append("requires_grad=True")
    return _add_suffixes(prefix + body, suffixes, len(prefix))
