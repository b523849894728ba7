"""Recording what one forward executes: every primitive op, comparison and arg-reduction, with
the values it read and made.

The hook is a swap, not a check: while a :class:`Tracer` is active it replaces the few functions
every computation funnels through — ``autograd.graph.apply`` (all differentiable primitives),
``ops.elementwise.compare`` (comparisons and logical ops), ``tensor._arg_reduce`` (argmax/argmin)
and ``Tensor.__invert__``/``Tensor.logical_not`` — and the ``forward`` of each module that
converts as a whole (RNNs: an unrolled time loop would fix the sequence length). On exit the
originals are put back, so outside an export nothing is patched and nothing is checked: the
cost is zero. (``torch.fx`` traces the same way, patching ``Module.__call__``.)

Values are found again by identity: an op's output by its autograd node and output number
(which in-place ops move onto the tensor they write, so ``x += y`` traces as an Add), else by
the identity of its array (views made without an op, ``detach()``, raw arrays handed to ops as
keyword arguments such as a ``where`` condition). An array the trace never saw is a parameter
or buffer of the model (an initializer named by its state_dict key) or a constant.
"""
from __future__ import annotations

import functools
import inspect
import itertools
import sys

import numpy as np

from .. import backend
from ..autograd import graph as _graph
from ..ops import elementwise as _elementwise
from ..tensor import Tensor

_tensor_module = sys.modules[Tensor.__module__]  # ddp.tensor, the module (the name is a function)


class Value:
    """One tensor of the traced program. ``kind`` is 'input', 'node' (made by an event),
    'param' (a parameter or buffer) or 'const'; ``array`` holds the data of params and consts.
    ``twin`` is the same value in the second trace (for dynamic axes), else itself."""
    __slots__ = ("name", "shape", "dtype", "kind", "array", "twin")

    def __init__(self, name, shape, dtype, kind, array=None):
        self.name, self.shape, self.dtype, self.kind, self.array = name, tuple(shape), dtype, \
            kind, array
        self.twin = self

    def __repr__(self):
        return f"Value({self.name!r}, {self.shape}, {self.dtype})"


class Event:
    """One recorded call: ``kind`` 'op' (``target`` an Op class), 'compare' (a ufunc name),
    'argreduce' (``'argmax'``/``'argmin'``), 'invert', 'logical_not' or 'module' (``target`` the
    module). ``inputs`` are positional arguments with tensors replaced by Values; ``kwargs``
    likewise; ``outputs`` the Values made."""
    __slots__ = ("kind", "target", "inputs", "kwargs", "outputs", "twin")

    def __init__(self, kind, target, inputs, kwargs, outputs):
        self.kind, self.target, self.inputs, self.kwargs, self.outputs = kind, target, inputs, \
            kwargs, outputs
        self.twin = self

    @property
    def name(self):
        if self.kind == "op":
            return self.target.__name__
        if self.kind == "module":
            return type(self.target).__name__
        return self.target if isinstance(self.target, str) else self.kind


def flatten_tensors(obj):
    """The tensors of a nested tuple/list/dict, in order."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in flatten_tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in flatten_tensors(item)]
    return []


def map_tensors(fn, obj):
    """``obj`` with every tensor of its nested tuples/lists/dicts replaced by ``fn(tensor)``."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(fn, o) for o in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(fn, o) for k, o in obj.items()}
    return obj


def _is_array(x):
    return isinstance(x, np.ndarray) or backend.is_cuda_array(x)


def _host(arr):
    return backend.to_device(arr, backend.CPU)


@functools.lru_cache(maxsize=None)
def _keyword_defaults(op):
    return {p.name: p.default for p in inspect.signature(op.forward).parameters.values()
            if p.default is not p.empty}


_active = None  # the Tracer recording now, if any


class Tracer:
    """Records one forward of ``model``; use as a context manager around the call."""

    def __init__(self, model, module_converters):
        self.events = []
        self.inputs = []
        self._by_node = {}    # (id(grad_fn), output_nr) -> Value
        self._by_array = {}   # id(array) -> Value
        self._keep = []       # what the ids above refer to, kept alive so ids stay unique
        self._params = {}     # id(array) -> state_dict name
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t is not None:
                self._params.setdefault(id(t._data), name)
        self._counter = itertools.count()
        self._paused = 0
        self._module_converters = module_converters
        self._model = model
        self._saved = []

    # ------------------------------------------------------------------ values
    def _fresh(self, hint):
        return f"{hint}_{next(self._counter)}"

    def add_input(self, t, name):
        v = Value(name, t._data.shape, np.dtype(t._data.dtype), "input")
        self._register(t, v)
        self.inputs.append(v)
        return v

    def _register(self, t, v):
        self._keep.append(t)
        self._by_array[id(t._data)] = v
        if t.grad_fn is not None:
            self._by_node[(id(t.grad_fn), t._output_nr)] = v

    def resolve(self, obj):
        """A Value for a Tensor or array (made on first sight for parameters and constants);
        tuples and lists are resolved item by item; anything else passes unchanged."""
        if isinstance(obj, Tensor):
            if obj.grad_fn is not None:
                v = self._by_node.get((id(obj.grad_fn), obj._output_nr))
                if v is not None:
                    return v
            return self._resolve_array(obj._data)
        if _is_array(obj):
            return self._resolve_array(obj)
        if isinstance(obj, (tuple, list)):
            return type(obj)(self.resolve(o) for o in obj)
        if isinstance(obj, dict):
            return {k: self.resolve(o) for k, o in obj.items()}
        return obj

    def _resolve_array(self, arr):
        v = self._by_array.get(id(arr))
        if v is not None:
            return v
        name = self._params.get(id(arr))
        if name is None and getattr(arr, "base", None) is not None:
            base = self._params.get(id(arr.base))  # a view of a buffer (batch_norm's statistics)
            name = None if base is None else self._fresh(base)
        kind = "param" if name is not None else "const"
        # constants are copied now: a later in-place change must not reach the exported value
        data = _host(arr) if kind == "param" else np.array(_host(arr), copy=True)
        v = Value(name or self._fresh("const"), data.shape, data.dtype, kind, data)
        self._keep.append(arr)
        self._by_array[id(arr)] = v
        return v

    def _outputs(self, hint, out):
        values = []
        for t in flatten_tensors(out):
            v = Value(self._fresh(hint), t._data.shape, np.dtype(t._data.dtype), "node")
            self._register(t, v)
            values.append(v)
        return values

    def record(self, kind, target, args, kwargs, run):
        """Resolve the inputs, run ``run()`` untraced, record its outputs."""
        inputs = [self.resolve(a) for a in args]
        if kind == "op":  # converters read every keyword, so fill in forward's defaults
            kwargs = {**_keyword_defaults(target), **kwargs}
        kw = {k: self.resolve(v) for k, v in kwargs.items()}
        self._paused += 1
        try:
            out = run()
        finally:
            self._paused -= 1
        ev = Event(kind, target, inputs, kw, [])
        ev.outputs = self._outputs(ev.name.lower(), out)
        self.events.append(ev)
        return out

    # ------------------------------------------------------------------ the patches
    def __enter__(self):
        global _active
        if _active is not None:
            raise RuntimeError("ddp.onnx.export: an export is already in progress")
        _active = self
        saved = self._saved
        saved.append((_graph, "apply", _graph.apply))
        saved.append((_elementwise, "compare", _elementwise.compare))
        saved.append((_tensor_module, "_arg_reduce", _tensor_module._arg_reduce))
        saved.append((Tensor, "__invert__", Tensor.__invert__))
        saved.append((Tensor, "logical_not", Tensor.logical_not))
        apply, compare, arg_reduce = _graph.apply, _elementwise.compare, _tensor_module._arg_reduce
        invert, logical_not = Tensor.__invert__, Tensor.logical_not
        _graph.apply = lambda op, args, kwargs: self._traced(
            "op", op, args, kwargs, lambda: apply(op, args, kwargs))
        _elementwise.compare = lambda ufunc, name, a, b: self._traced(
            "compare", ufunc, (a, b), {}, lambda: compare(ufunc, name, a, b))
        _tensor_module._arg_reduce = lambda t, fn, dim, keepdim: self._traced(
            "argreduce", fn, (t,), {"dim": dim, "keepdim": keepdim},
            lambda: arg_reduce(t, fn, dim, keepdim))
        Tensor.__invert__ = lambda t: self._traced("invert", "invert", (t,), {},
                                                   lambda: invert(t))
        Tensor.logical_not = lambda t: self._traced("logical_not", "logical_not", (t,), {},
                                                    lambda: logical_not(t))
        for module in self._model.modules():
            if type(module) in self._module_converters:
                forward = type(module).forward.__get__(module)
                module.__dict__["forward"] = self._module_forward(module, forward)
                saved.append((module, None, None))
        return self

    def _traced(self, kind, target, args, kwargs, run):
        if self._paused:
            return run()
        return self.record(kind, target, args, kwargs, run)

    def _module_forward(self, module, forward):
        def traced_forward(*args, **kwargs):
            if self._paused:
                return forward(*args, **kwargs)
            return self.record("module", module, (args, kwargs), {},
                               lambda: forward(*args, **kwargs))
        return traced_forward

    def __exit__(self, *exc):
        global _active
        for owner, attr, original in reversed(self._saved):
            if attr is None:
                owner.__dict__.pop("forward", None)
            else:
                setattr(owner, attr, original)
        self._saved.clear()
        _active = None
        return False


def is_tracing() -> bool:
    return _active is not None
