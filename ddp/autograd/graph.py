"""The recorded graph: ``Op`` (a primitive with its forward and backward side by side), ``Node``
(one recorded call of an op, also the ``ctx`` its forward and backward see) and ``apply``.

An op's forward works on raw arrays (NumPy or CuPy). Its backward is written with ``ctx.xp``
(``numpy``/``cupy``, or ``ddp.ops.tnp`` — the same names over Tensors — when the graph of the
backward itself is recorded for higher-order gradients), so one formula serves both.

Example (a primitive):
    >>> class Square(Op):
    ...     @staticmethod
    ...     def forward(ctx, a):
    ...         ctx.save_for_backward(a)
    ...         return a * a
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         a, = ctx.saved_tensors
    ...         return 2 * a * g
    >>> Square.apply(ddp.tensor([3.0], requires_grad=True))
    tensor([9.], grad_fn=<SquareBackward0>)
"""
from __future__ import annotations

import itertools
import threading
import traceback

from .. import backend
from .grad_mode import process as _process
from .grad_mode import state as _mode

_FREED = object()  # node.saved after the graph was freed by a backward without retain_graph


class Node:
    """One recorded operation: edges to the producers of its inputs, saved arrays, hooks.

    ``next_edges[i]`` is ``(producer_node, output_nr, shape, dtype)`` for an input made by an
    op, ``(leaf_tensor, -1, shape, dtype)`` for a leaf that requires grad (the input's shape and
    NumPy dtype, which its gradient must have), or ``None`` when input ``i`` needs no gradient.
    One tuple per edge: Python's collector traverses every object a recorded op leaves, so a
    node keeps few. The same object is the ``ctx`` of the op's forward and backward, so ops may keep
    any attribute on it.
    """
    # the fields every node sets are slots; the rarely set ones (hooks, anomaly trace, several
    # outputs, materialize_grads) are class-level defaults, overridden per node only when used,
    # so that recording an op sets four attributes instead of nine
    __slots__ = ("op", "next_edges", "saved", "_saved_src", "_saved_versions",
                 "needs_input_grad", "xp", "_create_graph", "__dict__",
                 "__weakref__")
    pre_hooks = None            # {output_nr: {id: hook}} from register_hook on a non-leaf output
    _anomaly_trace = None       # the forward's stack under anomaly detection
    non_differentiable = ()     # output positions without a gradient
    materialize_grads = True    # see set_materialize_grads
    n_outputs = 1               # set per node when an op has several
    _sinks = None               # {input index: (array, scale)} offered for one backward call

    def __init__(self, op):
        self.op = op
        self.saved = ()
        self.xp = None
        self._create_graph = False

    # ----------------------------------------------------------------- the ctx API
    def save_for_backward(self, *items):
        """Keep arrays (inputs, the output or intermediates) for backward."""
        self.saved = items

    @property
    def saved_tensors(self):
        """What forward saved: arrays, or Tensors connected to the graph under create_graph."""
        saved = self.saved
        if saved is _FREED:
            raise RuntimeError(_FREED_MESSAGE.format(self.name()))
        v = self._saved_versions  # (counter, version at saving, item, ...): see _bind_saved
        for i in range(0, len(v), 3):  # inline: this runs in every backward
            if v[i][0] != v[i + 1]:
                self._check_versions()  # raises, naming the tensor
        if not self._create_graph:
            return saved
        return self._saved_as_tensors()

    def mark_non_differentiable(self, *outputs):
        """Outputs (by object) that never get a gradient, such as indices."""
        self._non_diff_objects = outputs

    def set_materialize_grads(self, value: bool):
        """Whether backward sees zeros (True, default) or None for outputs that got no gradient."""
        self.materialize_grads = bool(value)

    @property
    def create_graph(self) -> bool:
        """True while this node's backward is itself recorded (``create_graph=True``): saved
        intermediates are then constants, and a formula that differentiates through them must
        rebuild them from the inputs with recorded ops."""
        return self._create_graph

    def gradient_sink(self, i):
        """Where input ``i``'s gradient may be written, as ``(out, scale)``: an array of the
        input's shape and dtype that is to receive ``scale`` times the gradient, returned from
        backward as that gradient (None: return a gradient of your own). Offered only to ops
        with ``writes_grad_sinks``, for a leaf whose ``.grad`` this gradient alone will become:
        DDP's buckets, so a weight's gradient lands there without a copy."""
        sinks = self._sinks
        return None if sinks is None else sinks.get(i)

    @property
    def in_meta(self):
        """``(shape, dtype)`` of each input that needs a gradient (None for the others)."""
        return tuple(None if e is None else e[2:] for e in self.next_edges)

    # ----------------------------------------------------------------- graph API
    def name(self) -> str:
        return f"{self.op.__name__}Backward0"

    @property
    def next_functions(self):
        """``((node_or_AccumulateGrad, output_nr), ...)`` like PyTorch's, for inspection."""
        return tuple((None, 0) if e is None else (AccumulateGrad(e[0]) if e[1] < 0 else e[0],
                                                   max(e[1], 0)) for e in self.next_edges)

    def register_hook(self, hook):
        raise NotImplementedError("register hooks on tensors: Tensor.register_hook")

    def __repr__(self):
        return f"<{self.name()} object at {hex(id(self))}>"

    # ----------------------------------------------------------------- internals
    def _check_versions(self):
        v = self._saved_versions  # (counter, version at saving, item, ...): see _bind_saved
        for i in range(0, len(v), 3):
            counter, version = v[i], v[i + 1]
            if counter[0] != version:
                shape = v[i + 2].shape
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by an "
                    f"inplace operation: a tensor of shape {tuple(shape)} saved by "
                    f"{self.name()} is at version {counter[0]}; expected version "
                    f"{version} instead. Clone it before modifying it in place, or do the in-place "
                    f"change on a copy.")

    def _saved_as_tensors(self):
        out = []
        for item, src in zip(self.saved, self._saved_src):
            if src is None:
                out.append(Tensor._make(item) if _is_array(item) else item)
            elif isinstance(src, tuple):  # an output of this node: rebuild a tensor on the graph
                out.append(Tensor._make(item, True, self, src[0]))
            else:
                out.append(src)  # the input tensor itself
        return tuple(out)

    def _release(self):
        # every reference to the saved arrays goes (the versions' tuple names them too): they
        # are freed now, not when the graph is
        self.saved = _FREED
        self._saved_src = None
        self._saved_versions = ()


_FREED_MESSAGE = ("Trying to backward through the graph a second time (or directly access saved "
                  "tensors after they have already been freed) in {}. Saved intermediate values of "
                  "the graph are freed when you call .backward() or autograd.grad(). Specify "
                  "retain_graph=True if you need to backward through the graph a second time.")


class AccumulateGrad:
    """What ``next_functions`` shows for a leaf: the tensor whose ``.grad`` is filled."""
    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "AccumulateGrad"

    def __repr__(self):
        return f"<AccumulateGrad object at {hex(id(self))}>"


def _is_array(x):
    return backend.is_array(x) or hasattr(x, "__array_interface__")


class _NoRecordContext(threading.local):
    """The ctx that ops see when nothing is recorded: saving is a no-op; attributes that forward
    sets (and may read back) live per thread, so concurrent forwards don't mix them."""
    needs_input_grad = ()
    xp = None

    def save_for_backward(self, *items):
        pass

    def mark_non_differentiable(self, *outputs):
        pass

    def set_materialize_grads(self, value):
        pass


_NO_RECORD = _NoRecordContext()


class Op:
    """A differentiable primitive: ``forward(ctx, *arrays)`` and ``backward(ctx, *grads)``.

    Inputs that are Tensors reach forward as arrays; other arguments pass through unchanged.
    ``backward`` returns one gradient per positional input (None where there is none); shapes
    may be broadcast versions of the inputs' — the engine sums or broadcasts them back, and casts
    them to the inputs' dtypes, in one place. Set ``once_differentiable = True`` when backward
    uses array code that ``ddp.ops.tnp`` cannot record.
    """
    once_differentiable = False
    non_differentiable_outputs = ()   # output positions that never carry a gradient
    # True when backward returns newly made arrays, a distinct one per input (never an incoming
    # gradient, a saved array or a view of one): the engine may then hand them to a leaf's
    # ``.grad`` without a copy. tests/core/test_ops_grad.py checks every op that says so.
    fresh_grads = False
    # True when backward asks ``ctx.gradient_sink(i)`` and writes there what it offers
    writes_grad_sinks = False

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run the op on Tensors (and other arguments); returns Tensors, recorded for backward
        when grad mode is on and an input requires grad."""
        return apply(cls, args, kwargs)

    @classmethod
    def run(cls, *args, **kwargs):
        """The op inside another op's backward formula, in either mode: on arrays (a plain
        backward) it computes and returns arrays; on Tensors (a backward recorded under
        ``create_graph``) it is :meth:`apply`, so the formula is written once."""
        for a in args:
            if isinstance(a, Tensor):
                return apply(cls, args, kwargs)
        token = backend.enter_op(args)
        try:
            return cls.forward(_NO_RECORD, *args, **kwargs)
        finally:
            backend.exit_op(token)


# The seam between the floors: the autograd floor works on arrays, and where it must hand back a
# Tensor (outputs of ops, gradients under create_graph) it uses the class that ``ddp.tensor``
# registers here once, at import, through :func:`bind_tensor` — never an import upward.
Tensor = None      # ddp.tensor.Tensor
tensor_xp = None   # ddp.ops.tnp: NumPy's names over Tensors, the ``xp`` of recorded backwards


def bind_tensor(tensor_cls, tensor_namespace):
    """Register the Tensor class and the Tensor namespace (called once, by ``ddp.tensor``)."""
    global Tensor, tensor_xp
    Tensor, tensor_xp = tensor_cls, tensor_namespace


def apply(op, args, kwargs):
    """Run ``op`` on ``args`` and, when grad mode is on and an input requires grad, record it."""
    if not _mode.grad_enabled:
        Tensor_ = Tensor
        return _unrecorded(op, [a._data if isinstance(a, Tensor_) else a for a in args], kwargs)
    # the arrays of the arguments, and the edges and needs_input_grad of a record (built as we
    # go: recording is the common case under grad mode); one or two arguments (most ops) without
    # lists or a loop, and their forward called without unpacking
    Tensor_ = Tensor
    n = len(args)
    if n == 1 or n == 2:
        a = args[0]
        x0 = a._data if isinstance(a, Tensor_) else a
        e0 = _edge(a, x0) if x0 is not a and a._requires_grad else None  # (a is a Tensor)
        if n == 1:
            arrays = (x0,)
            if e0 is None:
                return _unrecorded(op, arrays, kwargs)
            edges, needs = (e0,), _NEEDS1
        else:
            b = args[1]
            x1 = b._data if isinstance(b, Tensor_) else b
            e1 = _edge(b, x1) if x1 is not b and b._requires_grad else None
            arrays = (x0, x1)
            if e1 is None:
                if e0 is None:
                    return _unrecorded(op, arrays, kwargs)
                needs = _NEEDS_TF
            else:
                needs = _NEEDS_FT if e0 is None else _NEEDS_TT
            edges = (e0, e1)
    else:
        arrays = []
        edges = []
        needs = []
        record = False
        for a in args:
            if isinstance(a, Tensor_):
                arr = a._data
                arrays.append(arr)
                if a._requires_grad:
                    record = True
                    edges.append(_edge(a, arr))
                    needs.append(True)
                    continue
            else:
                arrays.append(a)
            edges.append(None)
            needs.append(False)
        if not record:
            return _unrecorded(op, arrays, kwargs)
        edges = tuple(edges)
        needs = tuple(needs)
        needs = _NEEDS.get(needs, needs)  # a shared tuple: one object less per op

    node = Node(op)
    node.next_edges = edges
    node.needs_input_grad = needs
    fp = backend.inline_fp   # enter_op/exit_op, inline on the CPU
    token = fp.set(backend.FP_SILENT) if fp is not None else backend.enter_op(arrays)
    try:
        if kwargs:
            out = op.forward(node, *arrays, **kwargs)
        elif n == 2:
            out = op.forward(node, x0, x1)
        elif n == 1:
            out = op.forward(node, x0)
        else:
            out = op.forward(node, *arrays)
    finally:
        if fp is not None:
            fp.reset(token)
        else:
            backend.exit_op(token)
    make = Tensor_._make
    if type(out) is not tuple:  # the common case: one output
        result = make(out, True, node, 0) if out.dtype.kind in "fV" else make(out)
        # where the saved arrays came from, and their versions (see _bind_saved): the commonest
        # cases here, without its search — nothing saved (add), the output alone (tanh, exp,
        # sigmoid), or the arrays of the first one or two inputs in order, when those are
        # Tensors (mul, div, matmul, most functions of one input; `s is x is not a`: s is x, the
        # array of a Tensor a): _saved_src is then the argument tuple (or its start)
        saved = node.saved
        k = len(saved)
        if not k:
            node._saved_src = node._saved_versions = ()
        elif saved[0] is out and k == 1:
            node._saved_src = _SAVED_OUTPUT0
            node._saved_versions = (result._vc, 0, out)
        elif k <= 2 and k <= n and saved[0] is arrays[0] is not args[0] and (
                k == 1 or saved[1] is arrays[1] is not args[1]):
            vc = args[0]._vc
            if k == 1:
                node._saved_src = args[:1]
                node._saved_versions = (vc, vc[0], saved[0])
            else:
                node._saved_src = args[:2]  # (args itself when that is all of them)
                vc1 = args[1]._vc
                node._saved_versions = (vc, vc[0], saved[0], vc1, vc1[0], saved[1])
        else:
            _bind_saved(node, args, arrays, (out,), (result,))
        if _process.anomaly_used and _mode.anomaly:
            node._anomaly_trace = "".join(traceback.format_stack()[:-2])
        return result
    outs = out
    node.n_outputs = len(outs)
    node._output_meta = tuple((o.shape, o.dtype) for o in outs)  # for zero grads of unused outputs
    non_diff = op.non_differentiable_outputs
    if "_non_diff_objects" in node.__dict__:
        marked = node.__dict__.pop("_non_diff_objects")
        non_diff = tuple(i for i, o in enumerate(outs) if any(o is x for x in marked))
    node.non_differentiable = non_diff
    # integer and bool outputs (indices, casts to int) never carry a gradient
    results = tuple(make(o) if i in non_diff or o.dtype.kind not in "fV"
                    else make(o, True, node, i) for i, o in enumerate(outs))
    _bind_saved(node, args, arrays, outs, results)
    if _process.anomaly_used and _mode.anomaly:
        node._anomaly_trace = "".join(traceback.format_stack()[:-2])
    return results


# needs_input_grad of up to four inputs, shared by the nodes (see apply)
_NEEDS = {n: n for k in range(1, 5) for n in itertools.product((False, True), repeat=k)}
_NEEDS1 = _NEEDS[True, ]
_NEEDS_TT, _NEEDS_TF, _NEEDS_FT = _NEEDS[True, True], _NEEDS[True, False], _NEEDS[False, True]
# _saved_src's mark for "output j of this node", shared likewise
_OUTPUT_SRC = tuple((j,) for j in range(8))
_SAVED_OUTPUT0 = (_OUTPUT_SRC[0],)  # the _saved_src of a node that saved its output alone


def _edge(t, arr):
    """The edge to Tensor ``t`` (whose array is ``arr``), an input that requires grad."""
    fn = t.grad_fn
    return (t, -1, arr.shape, arr.dtype) if fn is None else (fn, t._output_nr, arr.shape, arr.dtype)


def _unrecorded(op, arrays, kwargs):
    """The op's forward with nothing recorded (grad mode off, or no input requires grad)."""
    fp = backend.inline_fp   # as in apply
    token = fp.set(backend.FP_SILENT) if fp is not None else backend.enter_op(arrays)
    try:
        out = op.forward(_NO_RECORD, *arrays, **kwargs) if kwargs else \
            op.forward(_NO_RECORD, *arrays)
    finally:
        if fp is not None:
            fp.reset(token)
        else:
            backend.exit_op(token)
    make = Tensor._make
    if type(out) is tuple:
        return tuple(make(o) for o in out)
    return make(out)


def _bind_saved(node, args, arrays, outs, results):
    """Record where each saved array came from (for create_graph: the input Tensor, or ``(j,)``
    for output ``j``) and the version of its counter now, with the item for the error message,
    as one flat tuple ``(counter, version, item, counter, ...)`` (fewer objects for the
    collector). Index loops rather than zip/enumerate: this runs for many recorded ops (apply
    takes the commonest cases of one output itself)."""
    saved = node.saved
    srcs = []
    versions = []
    for item in saved:  # the general search
        k = 0
        for arr in arrays:
            if item is arr and args[k] is not arr:  # the array of a Tensor input
                t = args[k]
                srcs.append(t)
                vc = t._vc
                versions += (vc, vc[0], item)
                break
            k += 1
        else:
            j = 0
            for o in outs:
                if item is o:
                    srcs.append(_OUTPUT_SRC[j] if j < 8 else (j,))
                    versions += (results[j]._vc, 0, item)
                    break
                j += 1
            else:
                srcs.append(None)
    node._saved_src = tuple(srcs)
    node._saved_versions = tuple(versions)
