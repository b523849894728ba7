"""Building the ONNX graph from a trace: node and initializer bookkeeping, operands cast to the
dtype an op computes in, and shapes that follow the dynamic axes.

Dynamic axes are found by tracing twice, the second time with every dynamic input axis one
longer: a dimension that differs between the two traces is dynamic. A shape the model computed
in Python (``x.view(x.size(0), -1)``) reaches the trace as numbers; where those numbers differ
between the traces they are rebuilt in the graph from ``Shape`` of a value that has the same
size in both traces, so the exported model follows the axis instead of freezing it.
"""
from __future__ import annotations

import numpy as np

from .errors import OnnxExporterError, UnsupportedOperatorError
from ._tracer import Value

_INT64_MAX = np.iinfo(np.int64).max


def dims_differ(v):
    """The axes of Value ``v`` whose size differs between the two traces."""
    return {i for i, (a, b) in enumerate(zip(v.shape, v.twin.shape)) if a != b}


class GraphBuilder:
    def __init__(self, onnx, opset, export_params=True):
        self.onnx, self.opset, self.export_params = onnx, opset, export_params
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes, self.initializers, self.param_inputs = [], {}, []
        self.known = []          # Values already available in the graph, in order
        self._emitted = set()    # names of Values whose initializer or node exists
        self._names = set()
        self._count = 0
        self.event = None        # the event being converted (for error messages)

    # ------------------------------------------------------------------ names and nodes
    def fresh(self, hint):
        """A new name; ``onnx::`` keeps it apart from the trace's value names."""
        self._count += 1
        name = f"onnx::{hint.lstrip('/')}_{self._count}"
        self._names.add(name)
        return name

    def node(self, op_type, inputs, outputs=None, n_out=1, **attrs):
        """Add a node; ``outputs`` are names (fresh ones when None). Returns the output name,
        or the list of names when there are several."""
        if outputs is None:
            outputs = [self.fresh(op_type) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.helper.make_node(op_type, list(inputs), list(outputs),
                                                name=f"/{op_type}_{len(self.nodes)}", **attrs))
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def initializer(self, array, hint="const"):
        name = self.fresh(hint)
        self.initializers[name] = self.numpy_helper.from_array(np.asarray(array, order="C"), name)
        return name

    def ints(self, values):
        """A 1-D int64 constant."""
        return self.initializer(np.asarray(list(values), dtype=np.int64), "ints")

    def scalar(self, value, dtype):
        return self.initializer(np.asarray(value, dtype=dtype), "scalar")

    # ------------------------------------------------------------------ operands
    def name(self, v):
        """The graph name of Value ``v`` (its initializer is written on first use)."""
        if v.name in self._emitted or v.kind in ("input", "node"):
            return v.name
        self._emitted.add(v.name)
        self._names.add(v.name)
        if v.shape != v.twin.shape:
            return self._dynamic_constant(v)
        if v.kind == "param" and not self.export_params:
            self.param_inputs.append(v)
        else:
            self.initializers[v.name] = self.numpy_helper.from_array(
                np.asarray(v.array, order="C"), v.name)
        return v.name

    def _dynamic_constant(self, v):
        """A constant whose shape follows a dynamic axis (``x.new_zeros(x.size(0), h)``): a
        ``ConstantOfShape`` when it is filled with one value in both traces."""
        a, b = v.array, v.twin.array
        if a.size and b.size and (a == a.flat[0]).all() and (b == b.flat[0]).all() \
                and a.flat[0] == b.flat[0]:
            shape = self.shape_tensor(v.shape, v.twin.shape, [])
            fill = self.numpy_helper.from_array(np.asarray([a.flat[0]], dtype=a.dtype), "value")
            return self.node("ConstantOfShape", [shape], [v.name], value=fill)
        raise self.unsupported(f"a tensor of shape {v.shape} made in forward from a dynamic axis "
                               f"(not from traced operations, e.g. arange(x.size(1))) cannot "
                               f"follow that axis; make it a buffer or drop the axis from "
                               f"dynamic_axes")

    def operand(self, x, dtype):
        """A name for an operand in ``dtype``: a Value (cast when its dtype differs) or a
        Python/NumPy number (a constant of that dtype)."""
        if isinstance(x, Value):
            name = self.name(x)
            if np.dtype(x.dtype) != np.dtype(dtype):
                return self.cast(name, dtype)
            return name
        return self.scalar(x, dtype)

    def cast(self, name, dtype):
        return self.node("Cast", [name], to=self.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))

    # ------------------------------------------------------------------ static and dynamic
    def static(self, key, what=None):
        """Keyword argument ``key`` of the current event; it must be the same in both traces."""
        ev = self.event
        value, other = ev.kwargs.get(key), ev.twin.kwargs.get(key)
        if not _same(value, other):
            raise self.unsupported(f"its argument {what or key}={_short(value)} changes with the "
                                   f"dynamic axes ({_short(other)} in the second trace); only "
                                   f"shapes passed to reshape/view/expand may follow them")
        return value

    def same_scalar(self, a, b):
        if not isinstance(a, Value) and not _same(a, b):
            raise self.unsupported(f"the number {a!r} it uses changes with the dynamic axes "
                                   f"({b!r} in the second trace)")

    def shape_tensor(self, shape, shape2, refs, reshape_input=None):
        """An int64 shape for Reshape/Expand/ConstantOfShape: sizes equal in both traces are
        constants; one that differs is ``0`` (Reshape: the input's size at that position), a
        size read with ``Shape`` from a Value of ``refs`` (or any earlier one) that has it in
        both traces, or ``-1`` (Reshape: inferred) as a last resort."""
        parts, infer_used = [], -1 in shape
        for i, (a, b) in enumerate(zip(shape, shape2)):
            if a == b:
                parts.append(int(a))
                continue
            src = reshape_input
            if src is not None and i < len(src.shape) and src.shape[i] == a \
                    and src.twin.shape[i] == b:
                parts.append(0)
                continue
            found = self._find_dim(a, b, refs)
            if found is not None:
                parts.append(found)
            elif reshape_input is not None and not infer_used:
                parts.append(-1)
                infer_used = True
            else:
                raise self.unsupported(f"it needs the size {a} (then {b}) of a dynamic axis that "
                                       f"no traced value has")
        if all(isinstance(p, int) for p in parts):
            return self.ints(parts)
        pieces = [self.ints([p]) if isinstance(p, int) else p for p in parts]
        return self.node("Concat", pieces, axis=0)

    def _find_dim(self, a, b, refs):
        for v in list(refs) + self.known:
            if not isinstance(v, Value):
                continue
            for axis, (s, t) in enumerate(zip(v.shape, v.twin.shape)):
                if s == a and t == b and s != t:
                    shape = self.node("Shape", [self.name(v)])
                    return self.node("Gather", [shape, self.ints([axis])], axis=0)
        return None

    # ------------------------------------------------------------------ errors
    def unsupported(self, detail):
        ev = self.event
        name = ev.name if ev is not None else "?"
        return UnsupportedOperatorError(name, self.opset, detail)

    def error(self, detail):
        ev = self.event
        return OnnxExporterError(f"ddp.onnx.export: {ev.name if ev else ''}: {detail}")

    # ------------------------------------------------------------------ opset-dependent forms
    def reduce(self, op_type, x, axes, keepdims, out=None):
        """A Reduce* node over ``axes`` (None: all); axes are an input from opset 18 (ReduceSum:
        13) and an attribute before."""
        keep, outs = int(bool(keepdims)), None if out is None else [out]
        if axes is None:
            return self.node(op_type, [x], outs, keepdims=keep)
        axes = [int(a) for a in axes]
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.node(op_type, [x, self.ints(axes)], outs, keepdims=keep)
        return self.node(op_type, [x], outs, axes=axes, keepdims=keep)

    def unsqueeze(self, x, axes):
        return self.node("Unsqueeze", [x, self.ints(axes)])

    def squeeze(self, x, axes):
        return self.node("Squeeze", [x, self.ints(axes)])


def _same(a, b):
    if isinstance(a, Value) or isinstance(b, Value):
        return True  # values are compared through their shapes, not here
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape \
            and bool((a == b).all())
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, slice) and isinstance(b, slice):
        return (a.start, a.stop, a.step) == (b.start, b.stop, b.step)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable objects are not the same
        return a is b


def _short(x):
    text = repr(x)
    return text if len(text) < 60 else text[:57] + "..."
