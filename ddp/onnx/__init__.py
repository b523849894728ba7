"""``ddp.onnx.export``: a model's forward, traced, written as an ONNX file (``torch.onnx.export``'s
arguments).

The forward runs once on the example ``args`` while every primitive op it executes is recorded
(see ``ddp.onnx._tracer``: the recording hook is swapped in for the export only, so it costs
nothing otherwise); each recorded op becomes ONNX nodes (``ddp.onnx._symbolic``); the model is
checked with ``onnx.checker`` and written. With ``dynamic_axes`` the forward runs a second time
with those input axes one longer, so that shapes the model computes in Python (``x.view(
x.size(0), -1)``) follow the axis in the exported graph instead of being frozen.

Covered: Linear, Conv1d/2d, ConvTranspose2d, max/avg/adaptive pooling, BatchNorm (running
statistics), LayerNorm, GroupNorm, activations, Dropout (eval), Flatten, Embedding, RNN/LSTM/GRU
(one ONNX node per layer), the fused attention op (MultiheadAttention, Transformer layers), and
the elementwise, comparison, reduction, indexing and shape operations used in forward; layers
made of these export through them. An op with no
conversion raises :class:`~ddp.onnx.errors.UnsupportedOperatorError` naming it. Needs the
``onnx`` package (``pip install 'ddp[onnx]'``); running the file needs ``onnxruntime``.

Limits of tracing (as PyTorch's tracer): Python control flow is fixed by the example input; a
tensor computed outside ddp's ops (``.numpy()`` then back, ``nonzero``) is a constant; in-place
changes to tensors that do not require grad inside forward are not seen.

Example:
    >>> import io
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> buffer = io.BytesIO()
    >>> program = ddp.onnx.export(model, (ddp.randn(3, 4),), buffer, input_names=["x"],
    ...                           output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    >>> [node.op_type for node in program.model_proto.graph.node]
    ['Gemm', 'Relu', 'Gemm']
    >>> program.model_proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    'batch'
"""
from __future__ import annotations

import enum
import inspect
import io
import os

import numpy as np

from .. import backend
from .._functions import cat
from .._version import __version__
from ..autograd.grad_mode import enable_grad
from ..creation import from_numpy
from ..tensor import Tensor
from . import errors
from ._builder import GraphBuilder, dims_differ
from ._symbolic import MODULE_CONVERTERS, convert
from ._tracer import Tracer, Value, flatten_tensors, is_tracing, map_tensors
from .errors import OnnxExporterError, UnsupportedOperatorError

__all__ = ["export", "ONNXProgram", "TrainingMode", "OperatorExportTypes", "is_in_onnx_export",
           "errors", "OnnxExporterError", "UnsupportedOperatorError"]

DEFAULT_OPSET = 20   # PyTorch's default (torch.onnx._constants.ONNX_DEFAULT_OPSET)
MIN_OPSET = 17       # LayerNormalization


class TrainingMode(enum.IntEnum):
    """The mode the model is put in while exported (``torch.onnx.TrainingMode``)."""
    EVAL = 0
    PRESERVE = 1
    TRAINING = 2


class OperatorExportTypes(enum.IntEnum):
    """Accepted for compatibility; only ``ONNX`` is supported (as in PyTorch 2.6+)."""
    ONNX = 0


def is_in_onnx_export() -> bool:
    """True while :func:`export` traces a forward (a model may branch on it)."""
    return is_tracing()


class ONNXProgram:
    """An exported model: ``model_proto`` (an ``onnx.ModelProto``), ``save(path)`` and
    ``program(*inputs)`` to run it with onnxruntime (returns ddp tensors)."""

    def __init__(self, model_proto):
        self.model_proto = model_proto
        self._session = None

    def save(self, destination):
        """Write the model to a path (atomically) or a binary file object."""
        _write(self.model_proto.SerializeToString(), destination)

    def __call__(self, *args, **kwargs):
        import onnxruntime
        if self._session is None:
            self._session = onnxruntime.InferenceSession(
                self.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
        tensors = flatten_tensors((args, kwargs))
        feeds = {i.name: _host(t) for i, t in zip(self._session.get_inputs(), tensors)}
        return [from_numpy(np.asarray(o)) for o in self._session.run(None, feeds)]

    def __repr__(self):
        graph = self.model_proto.graph
        return (f"ONNXProgram(inputs={[i.name for i in graph.input]}, "
                f"outputs={[o.name for o in graph.output]}, nodes={len(graph.node)})")


def export(model, args=(), f=None, *, kwargs=None, verbose=None, input_names=None,
           output_names=None, opset_version=None, dynamo=True, external_data=True,
           dynamic_shapes=None, custom_translation_table=None, report=False, optimize=True,
           verify=False, profile=False, dump_exported_program=False, artifacts_dir=".",
           export_params=True, keep_initializers_as_inputs=False, dynamic_axes=None,
           training=TrainingMode.EVAL, operator_export_type=OperatorExportTypes.ONNX,
           do_constant_folding=True, custom_opsets=None, export_modules_as_functions=False,
           autograd_inlining=True):
    """Export ``model`` called on ``args`` (a tuple, or one tensor; ``kwargs`` keyword inputs)
    as ONNX, to the path or binary file ``f`` when given; returns an :class:`ONNXProgram`
    (``None`` with ``dynamo=False``, as PyTorch's TorchScript exporter).

    ``input_names``/``output_names`` name the graph's inputs and outputs (default: the
    forward's parameter names, ``output``); ``dynamic_axes`` maps a name to the axes that vary
    (``{"x": {0: "batch"}}`` or ``{"x": [0]}``); ``dynamic_shapes`` may give the same per
    forward argument. ``opset_version`` defaults to 20 (17 and up are supported). The model is
    exported in eval mode unless ``training=TrainingMode.PRESERVE``. ``verify=True`` runs the
    exported model in onnxruntime and compares it with ddp's own forward. Options of PyTorch's
    exporter that concern its internals (``optimize``, ``report``, ``do_constant_folding``, ...)
    are accepted and have no effect.

    Example:
        >>> conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Flatten())
        >>> p = ddp.onnx.export(conv, ddp.randn(2, 1, 8, 8), dynamic_axes={"input": [0]})
        >>> [n.op_type for n in p.model_proto.graph.node]
        ['Conv', 'MaxPool', 'Reshape']
    """
    onnx = _require_onnx()
    opset = DEFAULT_OPSET if opset_version is None else int(opset_version)
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"ddp.onnx.export: opset_version must be between {MIN_OPSET} and "
                         f"{newest} (the installed onnx package's newest), got {opset}")
    if custom_translation_table or custom_opsets:
        raise NotImplementedError("ddp.onnx.export: custom translation tables and custom opsets "
                                  "are not supported")
    if isinstance(args, Tensor):
        args = (args,)
    args = tuple(args)
    if kwargs is None and args and isinstance(args[-1], dict):
        args, kwargs = args[:-1], args[-1]  # the legacy (*args, {kwargs}) form
    kwargs = dict(kwargs or {})
    inputs = flatten_tensors((args, kwargs))
    names = list(input_names or []) + _default_input_names(model, args, kwargs)[
        len(input_names or []):]
    names = names[:len(inputs)]
    if len(set(names)) != len(names):
        raise ValueError(f"ddp.onnx.export: input names must be unique, got {names}")
    axes = _dynamic_axes(dynamic_axes, dynamic_shapes, model, args, names)
    if training == TrainingMode.TRAINING:
        raise OnnxExporterError("ddp.onnx.export: exporting in training mode is not supported "
                                "(dropout would be frozen); use TrainingMode.EVAL or PRESERVE")
    was_training = [(m, m.training) for m in model.modules()]
    if training == TrainingMode.EVAL:
        model.eval()
    try:
        first = _trace(model, args, kwargs, names)
        second = None
        input_axes = {n: a for n, a in axes.items() if n in names}
        if input_axes:
            grown = _grow(args, kwargs, names, input_axes)
            try:
                second = _trace(model, *grown, names)
            except Exception as exc:
                raise OnnxExporterError(
                    f"ddp.onnx.export: the forward failed when the dynamic axes {input_axes} "
                    f"were one longer than in the example input: {exc}") from exc
            _pair(first, second)
        proto = _build(onnx, first, opset, names, list(output_names or []), axes,
                       export_params, keep_initializers_as_inputs)
    finally:
        for m, mode in was_training:
            m.training = mode
    onnx.checker.check_model(proto, full_check=True)
    if verbose:
        print(onnx.helper.printable_graph(proto.graph))
    program = ONNXProgram(proto)
    if verify:
        _verify(program, first[1], args, kwargs)
    if f is not None:
        program.save(f)
    return program if dynamo else None


# --------------------------------------------------------------------------- tracing

def _trace(model, args, kwargs, names):
    """Run the forward under a Tracer; returns (tracer, the outputs, their Values)."""
    tracer = Tracer(model, MODULE_CONVERTERS)
    leaves = iter(names)

    def as_input(t):
        leaf = t.detach()
        if leaf.is_floating_point():
            # recorded, in-place writes move the written tensor onto the new node
            leaf.requires_grad_(True)
        tracer.add_input(leaf, next(leaves))
        return leaf

    with tracer, enable_grad():
        traced_args, traced_kwargs = map_tensors(as_input, args), map_tensors(as_input, kwargs)
        out = model(*traced_args, **traced_kwargs)
        values = [tracer.resolve(t) for t in flatten_tensors(out)]
    if not values:
        raise OnnxExporterError("ddp.onnx.export: the forward returned no tensor")
    return tracer, out, values


def _grow(args, kwargs, names, input_axes):
    """The example inputs with every dynamic axis one longer (its first slice repeated)."""
    it = iter(names)

    def grow(t):
        for axis in sorted(input_axes.get(next(it), {})):
            t = cat([t, t.narrow(axis, 0, 1)], axis)
        return t
    return map_tensors(grow, args), map_tensors(grow, kwargs)


def _pair(first, second):
    """Link each event and Value of the first trace to its twin in the second."""
    t1, t2 = first[0], second[0]
    if len(t1.events) != len(t2.events) or len(first[2]) != len(second[2]) or any(
            a.kind != b.kind or (a.target is not b.target and a.target != b.target)
            for a, b in zip(t1.events, t2.events)):
        raise OnnxExporterError("ddp.onnx.export: the forward ran different operations when the "
                                "dynamic axes changed size (control flow that depends on a "
                                "shape cannot be exported with those axes dynamic)")
    for v, w in zip(t1.inputs, t2.inputs):
        v.twin = w
    for a, b in zip(t1.events, t2.events):
        a.twin = b
        _link(a.inputs, b.inputs)
        _link(a.kwargs, b.kwargs)
        _link(a.outputs, b.outputs)
    _link(first[2], second[2])


def _link(a, b):
    if isinstance(a, Value) and isinstance(b, Value):
        if a.twin is a:
            a.twin = b
    elif isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        for x, y in zip(a, b):
            _link(x, y)
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            _link(a[k], b.get(k))


# --------------------------------------------------------------------------- the graph

def _build(onnx, trace, opset, input_names, output_names, axes, export_params,
           keep_initializers_as_inputs):
    tracer, _, outputs = trace
    helper = onnx.helper
    g = GraphBuilder(onnx, opset, export_params)
    g.known.extend(tracer.inputs)
    g._names.update(v.name for v in tracer.inputs)
    names = output_names + [("output" if len(outputs) == 1 else f"output_{i}")
                            for i in range(len(output_names), len(outputs))]
    names = names[:len(outputs)]
    if len(set(names)) != len(names) or set(names) & set(input_names):
        raise ValueError(f"ddp.onnx.export: output names must be unique and differ from the "
                         f"input names, got {names}")
    aliases = []  # outputs that are not a node's own result: an Identity gives them their name
    claimed = set()
    for v, name in zip(outputs, names):
        if v.kind == "node" and id(v) not in claimed:
            v.name = name
            claimed.add(id(v))
        else:
            aliases.append((v, name))
    g._names.update(names)
    for ev in tracer.events:
        convert(g, ev)
        g.known.extend(ev.outputs)
    g.event = None
    for v, name in aliases:
        g.node("Identity", [g.name(v)], [name])
    _prune(g, names)
    _check_outputs_depend_on_inputs(g, names, [v.name for v in tracer.inputs])

    dim_names = {}
    for v in tracer.inputs:
        for axis, dim in axes.get(v.name, {}).items():
            dim_names[(v.shape[axis], v.twin.shape[axis])] = dim

    def info(name, v, named):
        dims = []
        for axis, size in enumerate(v.shape):
            dynamic = axis in named or axis in dims_differ(v)
            dim = named.get(axis) or dim_names.get((size, v.twin.shape[axis])) \
                or f"{name}_dynamic_axes_{axis + 1}"
            dims.append(dim if dynamic else int(size))
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), dims)

    graph_inputs = [info(v.name, v, axes.get(v.name, {})) for v in tracer.inputs]
    graph_inputs += [helper.make_tensor_value_info(v.name, helper.np_dtype_to_tensor_dtype(
        v.array.dtype), list(v.shape)) for v in g.param_inputs]
    if keep_initializers_as_inputs:
        graph_inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                         for t in g.initializers.values()]
    graph_outputs = [info(name, v, axes.get(name, {})) for v, name in zip(outputs, names)]
    graph = helper.make_graph([n for n in g.nodes], "main_graph", graph_inputs, graph_outputs,
                              initializer=list(g.initializers.values()))
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ddp",
                              producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def _prune(g, outputs):
    """Drop nodes and initializers no output depends on (ops traced but unused)."""
    needed = set(outputs)
    kept = []
    for node in reversed(g.nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    g.nodes = kept[::-1]
    g.initializers = {k: v for k, v in g.initializers.items() if k in needed}
    g.param_inputs = [v for v in g.param_inputs if v.name in needed]


def _check_outputs_depend_on_inputs(g, outputs, inputs):
    """Refuse a graph output that no input reaches: the forward made it outside ddp's ops (a
    tensor rebuilt from NumPy, a custom kernel), and exporting it would freeze its value."""
    if not inputs:
        return
    reached = set(inputs)
    for node in g.nodes:
        if any(i in reached for i in node.input):
            reached.update(node.output)
    for name in outputs:
        if name not in reached:
            raise OnnxExporterError(
                f"ddp.onnx.export: output {name!r} does not depend on the inputs: the forward "
                f"computed it (or a value it depends on) outside ddp's traced operations, e.g. "
                f"through .numpy() or a raw array, so its example value would be frozen")


# --------------------------------------------------------------------------- arguments

def _default_input_names(model, args, kwargs):
    """The forward's parameter names for the input tensors (``x``, ``x_0``... for nested)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i, arg in enumerate(args):
        p = params[i] if i < len(params) and params[i].kind in (
            params[i].POSITIONAL_ONLY, params[i].POSITIONAL_OR_KEYWORD) else None
        base = p.name if p is not None else f"input_{i}"
        n = len(flatten_tensors(arg))
        names += [base] if n == 1 and isinstance(arg, Tensor) else [f"{base}_{j}" for j in
                                                                   range(n)]
    for key, value in kwargs.items():
        n = len(flatten_tensors(value))
        names += [key] if n == 1 and isinstance(value, Tensor) else [f"{key}_{j}" for j in
                                                                    range(n)]
    return names


def _dynamic_axes(dynamic_axes, dynamic_shapes, model, args, names):
    """``{name: {axis: dim_name}}`` from ``dynamic_axes`` (dicts or lists of axes) or
    ``dynamic_shapes`` (per forward argument: a dict or tuple of them)."""
    out = {}
    if dynamic_shapes is not None:
        specs = dynamic_shapes
        if isinstance(specs, dict):
            arg_names = _default_input_names(model, args, {})
            specs = [specs.get(n) for n in arg_names]
        for name, spec in zip(names, specs):
            if spec:
                out[name] = spec
    for name, spec in (dynamic_axes or {}).items():
        out[name] = spec
    result = {}
    for name, spec in out.items():
        if isinstance(spec, dict):
            result[name] = {int(a): (d if isinstance(d, str) else f"{name}_dynamic_axes_{k + 1}")
                            for k, (a, d) in enumerate(sorted(spec.items()))}
        else:
            result[name] = {int(a): f"{name}_dynamic_axes_{k + 1}"
                            for k, a in enumerate(spec)}
    return result


# --------------------------------------------------------------------------- helpers

def _require_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("ddp.onnx.export needs the onnx package: pip install 'ddp[onnx]' "
                          "(onnx, and onnxruntime to run the exported model)") from exc
    return onnx


def _host(t):
    return np.ascontiguousarray(backend.to_device(t._data, backend.CPU))


def _write(data, destination):
    if isinstance(destination, (str, bytes, os.PathLike)):
        from ..serialization import atomic_write
        with atomic_write(destination) as fh:
            fh.write(data)
    elif isinstance(destination, io.IOBase) or hasattr(destination, "write"):
        destination.write(data)
    else:
        raise TypeError(f"ddp.onnx.export: f must be a path or a binary file object, got "
                        f"{type(destination).__name__}")


def _verify(program, expected, args, kwargs):
    got = program(*args, **kwargs)
    want = flatten_tensors(expected)
    for i, (a, b) in enumerate(zip(got, want)):
        b = _host(b)
        if a.shape != tuple(b.shape) or not np.allclose(a.numpy(), b, rtol=1e-4, atol=1e-5):
            raise OnnxExporterError(f"ddp.onnx.export(verify=True): output {i} of the exported "
                                    f"model differs from ddp's forward (max abs difference "
                                    f"{np.max(np.abs(a.numpy() - b)) if a.shape == b.shape else 'shape'})")
