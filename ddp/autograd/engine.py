"""The backward engine: walks the recorded graph in reverse without recursion.

1. Count, for every node and leaf reachable from the roots, how many edges lead into it.
2. Seed the roots' gradients; a node runs once all gradients flowing into it have arrived.
3. Each node's backward gives one gradient per input; they are summed or broadcast back to the
   input's shape and cast to its dtype here, in one place, and added to the producer's buffer.
4. A leaf's gradient is final when its count reaches zero: its hooks run, it is accumulated into
   ``.grad``, then its post-accumulate-grad hooks run (the distributed layer launches bucket
   allreduces from these).
5. Callbacks queued during the pass run at its end (the distributed layer waits for its
   buckets there).

In normal mode gradients are raw arrays; with ``create_graph`` they are Tensors and every step
above is itself recorded, which gives higher-order gradients.
"""
from __future__ import annotations

import threading

import numpy as np

from .. import backend
from . import graph
from .grad_mode import state as _mode
from .graph import _FREED, _FREED_MESSAGE


class _PerThread(threading.local):
    def __init__(self):
        # one list of callbacks per backward pass in progress in this thread (passes may nest)
        self.callback_stack: list[list] = []


_local = _PerThread()


def queue_callback(callback):
    """Run ``callback()`` when the backward pass now in progress ends.

    Example (from a hook, as the distributed reducer does):
        >>> def hook(param):
        ...     ddp.autograd.queue_callback(lambda: print("backward done"))
    """
    stack = _local.callback_stack
    if not stack:
        raise RuntimeError("queue_callback: final callbacks can only be installed during a "
                           "backward pass (from a hook)")
    stack[-1].append(callback)


def _fit(g, shape, dtype):
    """A gradient in the input's shape and dtype (Tensors under create_graph, arrays otherwise)."""
    if g.shape != shape:
        g = g.sum_to_size(shape) if isinstance(g, graph.Tensor) else backend.sum_to_shape(g, shape)
    if g.dtype != dtype:
        if isinstance(g, graph.Tensor):
            return g.to(_np_to_dtype(dtype))
        token = backend.enter_op((g,))  # a float32 gradient of a float16 input may overflow: inf
        try:
            g = g.astype(dtype)
        finally:
            backend.exit_op(token)
    return g


def _np_to_dtype(np_dtype):
    return backend.from_numpy_dtype(np_dtype)


def _wrap(g):
    return g if isinstance(g, graph.Tensor) else graph.Tensor._make(g)


def _run_tensor_hooks(hooks, g, create_graph):
    """Call hooks registered with ``Tensor.register_hook``; each may replace the gradient.
    ``retain_grad``'s hook runs last whenever it was registered, so ``.grad`` shows the final
    gradient."""
    retain = None
    for hook in tuple(hooks.values()):  # a hook may remove itself
        if getattr(hook, "_retains_grad", False):
            retain = hook
            continue
        res = hook(_wrap(g))
        if res is not None:
            g = res if create_graph else res._data
    if retain is not None:
        retain(_wrap(g))
    return g


def run_backward(roots, root_grads, retain_graph=False, create_graph=False, inputs=None,
                 accumulate=True):
    """Backpropagate ``root_grads`` from ``roots``.

    With ``inputs`` (a list of tensors), returns the gradient reaching each of them (None where
    none does); with ``accumulate`` the leaves' ``.grad`` are filled as well.
    """
    guard = backend.device_guard(roots[0]._data) if roots else None
    if guard is None:   # the graph's GPU is current (or there is none): the common case
        return _run_backward(roots, root_grads, retain_graph, create_graph, inputs, accumulate)
    with guard:        # the engine's own array work (sums, casts, accumulation) runs there too
        return _run_backward(roots, root_grads, retain_graph, create_graph, inputs, accumulate)


def _run_backward(roots, root_grads, retain_graph, create_graph, inputs, accumulate):
    deps: dict = {}
    buffers: dict = {}
    leaf_grads: dict = {}
    owned: dict = {}   # leaf -> its gradient is an array no one else holds (see _accumulate)
    ready: list = []

    # 1. count incoming edges of everything reachable from the roots; a node is first reached
    # when it has no count yet (roots may share a node, outputs of one split: counted once)
    root_nodes = list(dict.fromkeys(t.grad_fn for t in roots if t.grad_fn is not None))
    stack = list(root_nodes)
    roots_set = set(root_nodes)  # walked from the start, whether or not an edge reaches them
    while stack:
        for edge in stack.pop().next_edges:
            if edge is None:
                continue
            target = edge[0]
            n = deps.get(target)
            if n is None:
                deps[target] = 1
                if edge[1] >= 0 and target not in roots_set:
                    stack.append(target)
            else:
                deps[target] = n + 1

    # inputs of autograd.grad: leaves are caught on arrival, non-leaves at their producer
    captures = None
    run = None   # with inputs and no accumulation: the nodes whose backward must run
    if inputs is not None:
        captures = {}
        for k, t in enumerate(inputs):
            key = (t, -1) if t.grad_fn is None else (t.grad_fn, t._output_nr)
            captures.setdefault(key, []).append(k)
        captured = [None] * len(inputs)
        if not accumulate:
            deps, run = _prune(roots, {key[0] for key in captures})

    # 2. seed the roots
    for t, g in zip(roots, root_grads):
        fn = t.grad_fn
        if fn is None:
            if not t.requires_grad:
                raise RuntimeError("element 0 of tensors does not require grad and does not have "
                                   "a grad_fn")
            leaf_grads[t] = g if t not in leaf_grads else leaf_grads[t] + g
            continue
        buf = buffers.get(fn)
        if buf is None:
            buf = buffers[fn] = [None] * fn.n_outputs
        nr = t._output_nr
        buf[nr] = g if buf[nr] is None else buf[nr] + g
    for fn in root_nodes:  # ``ready`` holds (node, its output gradients), last in first out
        if deps.get(fn, 0) == 0:
            ready.append((fn, buffers.pop(fn)))

    callbacks: list = []
    callback_stack = _local.callback_stack
    callback_stack.append(callbacks)
    prev_mode = _mode.grad_enabled
    _mode.grad_enabled = create_graph
    anomaly = _mode.anomaly and _mode.anomaly_check_nan
    # floating-point exceptions silent for the whole pass, set once rather than around every
    # node's backward (~1 us a node, 12 % of a small op's forward + backward); hooks run inside
    # it too, the end-of-backward callbacks after it
    fp = backend.silence_fp()
    try:
        # root leaves (backward called on a leaf itself)
        for t in [t for t in leaf_grads if deps.get(t, 0) == 0]:
            _finish_leaf(t, leaf_grads.pop(t), accumulate, create_graph, captures,
                         captured if captures is not None else None)

        # 3. run nodes as they become ready
        pop, push = ready.pop, ready.append
        while ready:
            node, grads = pop()
            if node.pre_hooks:
                for nr, hooks in node.pre_hooks.items():
                    if grads[nr] is not None:
                        grads[nr] = _run_tensor_hooks(hooks, grads[nr], create_graph)
            if captures is not None:
                for nr, g in enumerate(grads):
                    for k in captures.get((node, nr), ()):
                        captured[k] = g if create_graph or g is None else _wrap(g)
            if run is not None and node not in run:
                continue  # no input of autograd.grad lies beyond it (PyTorch runs only these)
            sinks = None
            if node.op.writes_grad_sinks and accumulate and not create_graph:
                sinks = _offer_sinks(node, deps, leaf_grads, captures)
            results = _call_backward(node, grads, create_graph, retain_graph, anomaly)
            if sinks is not None:
                node._sinks = None
                for i, (out, _) in sinks.items():
                    if results[i] is out:   # written there: .grad adopts it as it is
                        owned[node.next_edges[i][0]] = True
            for edge, g in zip(node.next_edges, results):
                if edge is None:
                    continue
                target, nr, shape, dtype = edge
                if g is not None and (g.shape != shape or g.dtype != dtype):
                    try:
                        g = _fit(g, shape, dtype)
                    except (ValueError, RuntimeError):
                        raise _invalid_grad(node, results, g, shape) from None
                left = deps[target] - 1
                if left:  # (a count that reached zero is never read again)
                    deps[target] = left
                if nr < 0:  # a leaf
                    if g is not None:
                        if create_graph:
                            prev = leaf_grads.get(target)
                            leaf_grads[target] = g if prev is None else prev + g
                        else:
                            _accumulate(leaf_grads, owned, target, g, node, results)
                    if left == 0 and target in leaf_grads:
                        _finish_leaf(target, leaf_grads.pop(target), accumulate, create_graph,
                                     captures, captured if captures is not None else None,
                                     owned.pop(target, False))
                    continue
                # a node's buffer lives in ``buffers`` only while more gradients are to come:
                # in a chain (one edge into each node) it goes straight onto ``ready``
                buf = buffers.get(target) if left else buffers.pop(target, None)
                if buf is None:
                    if target.n_outputs == 1:
                        buf = [g]
                    else:
                        buf = [None] * target.n_outputs
                        buf[nr] = g
                    if left:
                        buffers[target] = buf
                elif g is not None:
                    buf[nr] = g if buf[nr] is None else buf[nr] + g
                if left == 0:
                    push((target, buf))

        backend.restore_fp(fp)
        fp = None
        # the last node's gradients, let go: a callback (DDP's reducer) may hand a .grad that
        # nothing else holds the bucket's memory instead
        results = grads = g = buf = None  # noqa: F841
        # 5. end-of-backward callbacks (they may queue more)
        i = 0
        while i < len(callbacks):
            callbacks[i]()
            i += 1
    finally:
        if fp is not None:
            backend.restore_fp(fp)
        _mode.grad_enabled = prev_mode
        callback_stack.pop()
    if inputs is not None:
        return captured
    return None


def _prune(roots, targets):
    """For ``autograd.grad``: the nodes with a path to one of ``targets`` (the producers or
    leaves of its inputs), and the incoming-edge counts over those nodes' edges only. Nodes
    beyond the inputs never run: no wasted work, no hooks fired upstream, and an op's backward
    may call ``autograd.grad`` on a graph it rebuilt from its own inputs (the fused RNN op's
    double backward) without running, or freeing, the graph those inputs came from."""
    needed: dict = {}
    for start in dict.fromkeys(t.grad_fn for t in roots if t.grad_fn is not None):
        if start in needed:
            continue
        needed[start] = False
        stack = [(start, iter(start.next_edges))]
        while stack:  # depth first, a node is settled when all its edges are
            node, edges = stack[-1]
            for edge in edges:
                if edge is None:
                    continue
                target = edge[0]
                if target in targets:
                    needed[node] = True
                if edge[1] >= 0:
                    if target not in needed:
                        needed[target] = False
                        stack.append((target, iter(target.next_edges)))
                        break
                    if needed[target]:
                        needed[node] = True
            else:
                stack.pop()
                if stack and needed[node]:
                    needed[stack[-1][0]] = True
    run = {node for node, yes in needed.items() if yes}
    deps: dict = {}
    for node in run:
        for edge in node.next_edges:
            if edge is not None:
                deps[edge[0]] = deps.get(edge[0], 0) + 1
    return deps, run


def _call_backward(node, grads, create_graph, retain_graph, anomaly):
    """Run one node's backward on its output gradients; returns one gradient per input."""
    if node.saved is _FREED:
        raise RuntimeError(_FREED_MESSAGE.format(node.name()))
    if node.n_outputs == 1:
        g = grads[0]
        if g is None:
            return _no_grads(node, retain_graph)
    else:
        present = [g for g in grads if g is not None]
        if not present:
            return _no_grads(node, retain_graph)
        g = present[0]
        if node.materialize_grads and len(present) < len(grads):
            grads = _materialize(node, grads, g)
    node._create_graph = create_graph
    if create_graph:
        if node.op.once_differentiable:
            raise RuntimeError(f"{node.name()} does not support double backward: its backward is "
                               f"not differentiable (create_graph=True)")
        node.xp = graph.tensor_xp
        results = node.op.backward(node, *[None if g is None else _wrap(g) for g in grads])
    elif g.__class__ is np.ndarray:   # the pass made FP exceptions silent; no GPU to guard
        node.xp = np
        results = node.op.backward(node, g) if node.n_outputs == 1 else \
            node.op.backward(node, *grads)
    else:
        xp = node.xp = backend.get_array_module(g)
        if xp is np:  # a NumPy scalar
            results = node.op.backward(node, *grads)
        else:
            token = backend.enter_op(grads)   # the GPU of this node's arrays
            try:
                results = node.op.backward(node, *grads)
            finally:
                backend.exit_op(token)
    if type(results) is not tuple:
        results = (results,)
    if len(results) != len(node.next_edges):
        raise RuntimeError(f"function {node.name()} returned an incorrect number of gradients "
                           f"(expected {len(node.next_edges)}, got {len(results)})")
    if anomaly:
        _check_anomaly(node, results)
    if not retain_graph:
        node.saved = _FREED   # node._release(), inline: this runs for every node
        node._saved_src = None
        node._saved_versions = ()
    return results


def _invalid_grad(node, results, g, shape):
    i = next(i for i, r in enumerate(results) if r is g)
    return RuntimeError(f"Function {node.name()} returned an invalid gradient at index {i} - got "
                        f"{list(g.shape)} but expected shape compatible with {list(shape)}")


def _no_grads(node, retain_graph):
    if not retain_graph:
        node._release()
    return (None,) * len(node.next_edges)


def _materialize(node, grads, ref):
    """Zeros for outputs that got no gradient, shaped like the outputs (kept by the node)."""
    shapes = node.__dict__.get("_output_meta")
    out = list(grads)
    for i, g in enumerate(out):
        if g is None and shapes is not None and shapes[i] is not None:
            shape, dtype = shapes[i]
            if isinstance(ref, graph.Tensor):
                out[i] = graph.Tensor._make(backend.get_array_module(ref._data).zeros(shape, dtype))
            else:
                out[i] = backend.get_array_module(ref).zeros(shape, dtype)
    return out


def _check_anomaly(node, results):
    for i, g in enumerate(results):
        if g is None:
            continue
        arr = getattr(g, "_data", g)
        if arr.dtype.kind in "fc" or arr.dtype.itemsize == 2 and arr.dtype.kind == "V":
            xp = backend.get_array_module(arr)
            if not bool(xp.isfinite(arr).all()):
                what = "nan" if bool(xp.isnan(arr).any()) else "inf"
                trace = node._anomaly_trace or "(no forward trace: enable detect_anomaly before " \
                                               "the forward pass to see it)\n"
                raise RuntimeError(f"Function '{node.name()}' returned {what} values in its {i}th "
                                   f"output.\nTraceback of the forward call that produced it:\n"
                                   f"{trace}")


def _offer_sinks(node, deps, leaf_grads, captures):
    """The gradient sinks (see ``Node.gradient_sink``) of ``node``'s leaf inputs: for a leaf
    with a sink (DDP's bucket view) whose gradient this edge alone makes (one incoming edge,
    nothing gathered yet) and becomes its ``.grad`` unchanged (none yet, no tensor hook, not
    captured by ``autograd.grad``). Returns ``{input index: (array, scale)}`` or None."""
    sinks = None
    for i, edge in enumerate(node.next_edges):
        if edge is None or edge[1] >= 0:
            continue
        leaf = edge[0]
        provider = leaf._grad_sink
        if (provider is None or deps[leaf] != 1 or leaf.grad is not None or leaf._hooks
                or leaf in leaf_grads or captures is not None and (leaf, -1) in captures):
            continue
        sink = provider()
        if sink is not None and sink[0].shape == edge[2] and sink[0].dtype == edge[3]:
            if sinks is None:
                sinks = {}
            sinks[i] = sink
    node._sinks = sinks
    return sinks


def _accumulate(leaf_grads, owned, leaf, g, node, results):
    """Add ``g`` to the gradient gathered so far for ``leaf``, tracking whether the total is an
    array that nothing else holds — which ``.grad`` may then adopt without a copy. It is when
    the op that made ``g`` declares ``fresh_grads`` (its backward returns new arrays, one per
    input) and ``g`` is neither a view nor returned twice, or when the total is a sum this pass
    made; later contributions are then added into it in place."""
    prev = leaf_grads.get(leaf)
    if prev is None:
        leaf_grads[leaf] = g
        if g.base is None and not isinstance(g, np.generic):  # a NumPy scalar can't be added into
            returned = sum(r is g for r in results)  # 0: _fit made it (a sum or a cast)
            if returned == 0 or returned == 1 and node.op.fresh_grads:
                owned[leaf] = True
    elif owned.get(leaf):
        prev += g
    else:
        total = leaf_grads[leaf] = prev + g
        if not isinstance(total, np.generic):
            owned[leaf] = True


def _finish_leaf(t, g, accumulate, create_graph, captures, captured, fresh=False):
    """A leaf's gradient is complete: hooks, capture, accumulation, post-accumulate hooks.
    ``fresh``: nothing else holds ``g`` (see :func:`_accumulate`), so ``.grad`` may adopt it —
    unless a hook or ``autograd.grad`` has been handed it, and may keep it."""
    if t._hooks:
        fresh = False
        g = _run_tensor_hooks(t._hooks, g, create_graph)
    if captures is not None:
        for k in captures.get((t, -1), ()):
            fresh = False
            captured[k] = g if create_graph else _wrap(g)
    if not accumulate:
        return
    if t.grad is None:  # a copy: the same gradient may reach several leaves (add gives g, g)
        t.grad = g.clone() if create_graph else graph.Tensor._make(g if fresh else g.copy())
    elif create_graph or t.grad.requires_grad:
        t.grad = t.grad + _wrap(g)
    else:
        t.grad._data += g
    if t._post_acc_hooks:
        for hook in tuple(t._post_acc_hooks.values()):
            hook(t)
