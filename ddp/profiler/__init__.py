"""``ddp.profiler``: time every op of a region, PyTorch's ``torch.profiler`` names and tables.

While a :class:`profile` is active, the functions every op passes through —
``autograd.graph.apply`` (forward primitives) and the engine's ``_call_backward`` (one node's
backward) — are swapped for timing versions; on exit the originals come back. Outside a profile
nothing is patched, so the ops cost nothing extra. ``record_function`` marks user regions (a
single check of one global when no profile is active). Forward ops are named ``ddp::<Op>``,
backward nodes ``autograd::<Op>Backward0``.

Example:
    >>> from ddp.profiler import profile, record_function, ProfilerActivity
    >>> model = nn.Linear(8, 4)
    >>> with profile(activities=[ProfilerActivity.CPU]) as prof:
    ...     with record_function("step"):
    ...         model(ddp.randn(2, 8)).sum().backward()
    >>> sorted({e.key for e in prof.key_averages()})[:3]
    ['autograd::LinearOpBackward0', 'autograd::SumBackward0', 'ddp::LinearOp']
    >>> print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=1))
    ... # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    ---...
    Name Self CPU % Self CPU CPU total % CPU total CPU time avg # of Calls
    ---...
    step ... 100.00% ... 1
    ---...
    Self CPU time total: ...
"""
from __future__ import annotations

import enum
import json
import os
import threading
import time
from collections import OrderedDict

from ..autograd import engine as _engine
from ..autograd import graph as _graph

__all__ = ["profile", "record_function", "ProfilerActivity", "ProfilerAction", "schedule",
           "tensorboard_trace_handler", "FunctionEvent", "FunctionEventAvg", "EventList"]


class ProfilerActivity(enum.Enum):
    CPU = 0
    CUDA = 1


class ProfilerAction(enum.Enum):
    NONE = 0
    WARMUP = 1
    RECORD = 2
    RECORD_AND_SAVE = 3


def schedule(*, wait, warmup, active, repeat=0, skip_first=0):
    """Which steps to record (``torch.profiler.schedule``): skip ``skip_first``, then cycles of
    ``wait`` idle, ``warmup`` untimed and ``active`` recorded steps, ``repeat`` times (0: for
    ever); the last active step of a cycle hands the trace to ``on_trace_ready``."""
    def action(step):
        if step < skip_first:
            return ProfilerAction.NONE
        step -= skip_first
        cycle = wait + warmup + active
        if repeat and step >= cycle * repeat:
            return ProfilerAction.NONE
        pos = step % cycle
        if pos < wait:
            return ProfilerAction.NONE
        if pos < wait + warmup:
            return ProfilerAction.WARMUP
        return ProfilerAction.RECORD_AND_SAVE if pos == cycle - 1 else ProfilerAction.RECORD
    return action


class FunctionEvent:
    """One timed call: ``name``, ``start``/``end`` (µs), ``self_cpu_time_total`` (µs, less the
    nested calls), ``input_shapes`` (with ``record_shapes``), ``thread``."""
    __slots__ = ("name", "start", "end", "children_time", "input_shapes", "thread", "depth")

    def __init__(self, name, start, input_shapes, thread, depth):
        self.name, self.start, self.input_shapes, self.thread = name, start, input_shapes, thread
        self.end, self.children_time, self.depth = start, 0.0, depth

    @property
    def key(self):
        return self.name

    @property
    def cpu_time_total(self):
        return self.end - self.start

    @property
    def self_cpu_time_total(self):
        return self.cpu_time_total - self.children_time

    def __repr__(self):
        return f"<FunctionEvent {self.name} {self.cpu_time_total:.1f}us>"


class FunctionEventAvg:
    """The calls of one name (and shapes, when grouped by them): totals and the mean."""

    def __init__(self, key, input_shapes=None):
        self.key, self.input_shapes = key, input_shapes
        self.count, self.cpu_time_total, self.self_cpu_time_total = 0, 0.0, 0.0

    def add(self, event):
        self.count += 1
        self.cpu_time_total += event.cpu_time_total
        self.self_cpu_time_total += event.self_cpu_time_total

    @property
    def cpu_time(self):
        return self.cpu_time_total / max(self.count, 1)

    def __repr__(self):
        return (f"<FunctionEventAvg key={self.key} self_cpu_time={self.self_cpu_time_total:.1f}us "
                f"cpu_time={self.cpu_time_total:.1f}us count={self.count}>")


class EventList(list):
    """A list of events with ``table()`` and ``total_average()``."""

    def table(self, sort_by=None, row_limit=100, max_name_column_width=55, header=None,
              top_level_events_only=False):
        """PyTorch's profiler table: name, self CPU time and %, total CPU time and %, mean,
        calls; sorted by ``sort_by`` (``'cpu_time_total'``, ``'self_cpu_time_total'``,
        ``'count'``, ``'cpu_time'``), at most ``row_limit`` rows."""
        rows = list(self)
        if top_level_events_only:
            rows = [r for r in rows if getattr(r, "depth", 0) == 0]
        if sort_by is not None:
            key = sort_by.replace("cpu_time_avg", "cpu_time")
            if not hasattr(rows[0] if rows else FunctionEventAvg(""), key):
                raise AttributeError(f"table: cannot sort by {sort_by!r}")
            rows.sort(key=lambda r: getattr(r, key), reverse=True)
        rows = rows[:row_limit] if row_limit and row_limit > 0 else rows
        self_total = sum(e.self_cpu_time_total for e in self) or 1.0
        width = min(max([len(r.key) for r in rows] + [4]) + 2, max_name_column_width)
        cols = ["Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg",
                "# of Calls"]
        shapes = any(getattr(r, "input_shapes", None) for r in rows)
        line = "-" * width + ("  " + "-" * 12) * len(cols) + ("  " + "-" * 30 if shapes else "")
        out = [] if header is None else [header]
        out += [line, f"{'Name':>{width}}" + "".join(f"  {c:>12}" for c in cols)
                + (f"  {'Input Shapes':>30}" if shapes else ""), line]
        for r in rows:
            name = r.key if len(r.key) <= width else r.key[:width - 3] + "..."
            out.append(f"{name:>{width}}  {100 * r.self_cpu_time_total / self_total:>11.2f}%  "
                       f"{_us(r.self_cpu_time_total):>12}  "
                       f"{100 * r.cpu_time_total / self_total:>11.2f}%  "
                       f"{_us(r.cpu_time_total):>12}  {_us(r.cpu_time):>12}  {r.count:>12}"
                       + (f"  {str(r.input_shapes or ''):>30}" if shapes else ""))
        out += [line, f"Self CPU time total: {_us(self_total)}"]
        return "\n".join(out)

    def total_average(self):
        total = FunctionEventAvg("Total")
        for e in self:
            total.count += getattr(e, "count", 1)
            total.cpu_time_total += e.cpu_time_total
            total.self_cpu_time_total += e.self_cpu_time_total
        return total


def _us(t):
    if t >= 1e6:
        return f"{t / 1e6:.3f}s"
    if t >= 1e3:
        return f"{t / 1e3:.3f}ms"
    return f"{t:.3f}us"


_active = None  # the profile recording now


class profile:
    """Record the time of every op (and ``record_function`` region) in the ``with`` block;
    ``key_averages().table()`` summarizes, ``export_chrome_trace(path)`` writes a trace for
    chrome://tracing or Perfetto. With ``schedule``, call ``prof.step()`` once per step.
    ``activities``, ``profile_memory``, ``with_stack`` and the other options of PyTorch's
    profiler are accepted; only CPU time is recorded (CUDA kernels are not timed)."""

    def __init__(self, *, activities=None, schedule=None, on_trace_ready=None,
                 record_shapes=False, profile_memory=False, with_stack=False, with_flops=False,
                 with_modules=False, experimental_config=None, execution_trace_observer=None,
                 acc_events=False, use_cuda=None):
        self.activities = set(activities or [ProfilerActivity.CPU])
        self.schedule = schedule
        self.on_trace_ready = on_trace_ready
        self.record_shapes = record_shapes
        self.step_num = 0
        self._events = []
        self._stack = threading.local()
        self._recording = schedule is None
        self._saved = None
        self._handed_over = 0   # events already given to on_trace_ready

    # ------------------------------------------------------------------ lifetime
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        global _active
        if _active is not None:
            raise RuntimeError("ddp.profiler: a profile is already active")
        _active = self
        apply, call_backward = _graph.apply, _engine._call_backward
        self._saved = (apply, call_backward)

        def timed_apply(op, args, kwargs):
            if not self._recording:
                return apply(op, args, kwargs)
            with self._timed(f"ddp::{op.__name__}", args):
                return apply(op, args, kwargs)

        def timed_backward(node, grads, *rest):
            if not self._recording:
                return call_backward(node, grads, *rest)
            with self._timed(f"autograd::{node.name()}", ()):
                return call_backward(node, grads, *rest)

        _graph.apply, _engine._call_backward = timed_apply, timed_backward
        if self.schedule is not None:
            self._recording = self.schedule(0) in (ProfilerAction.RECORD,
                                                   ProfilerAction.RECORD_AND_SAVE)

    def stop(self):
        global _active
        if self._saved is not None:
            _graph.apply, _engine._call_backward = self._saved
            self._saved = None
        _active = None
        if self.on_trace_ready is not None and len(self._events) > self._handed_over:
            self._hand_over()

    def step(self):
        """Mark the end of a training step (drives ``schedule``)."""
        if self.schedule is None:
            self.step_num += 1
            return
        action = self.schedule(self.step_num)
        self.step_num += 1
        if action is ProfilerAction.RECORD_AND_SAVE and self.on_trace_ready is not None:
            self._hand_over()
        self._recording = self.schedule(self.step_num) in (ProfilerAction.RECORD,
                                                           ProfilerAction.RECORD_AND_SAVE)

    def _hand_over(self):
        self._handed_over = len(self._events)
        self.on_trace_ready(self)

    # ------------------------------------------------------------------ recording
    def _timed(self, name, args):
        shapes = [list(a.shape) if hasattr(a, "shape") else [] for a in args] \
            if self.record_shapes else None
        return _Span(self, name, shapes)

    def _open(self, name, shapes):
        stack = getattr(self._stack, "open", None)
        if stack is None:
            stack = self._stack.open = []
        event = FunctionEvent(name, time.perf_counter_ns() / 1e3, shapes, threading.get_ident(),
                              len(stack))
        stack.append(event)
        return event

    def _close(self, event):
        event.end = time.perf_counter_ns() / 1e3
        stack = self._stack.open
        stack.pop()
        if stack:
            stack[-1].children_time += event.cpu_time_total
        self._events.append(event)

    # ------------------------------------------------------------------ results
    def events(self):
        return EventList(sorted(self._events, key=lambda e: e.start))

    def key_averages(self, group_by_input_shape=False, group_by_stack_n=0):
        """One row per op name (and input shapes with ``group_by_input_shape``)."""
        groups = OrderedDict()
        for e in self.events():
            shapes = str(e.input_shapes) if group_by_input_shape else None
            avg = groups.get((e.name, shapes))
            if avg is None:
                avg = groups[(e.name, shapes)] = FunctionEventAvg(
                    e.name, e.input_shapes if group_by_input_shape else None)
            avg.add(e)
        return EventList(groups.values())

    def export_chrome_trace(self, path):
        """Write the events in the Chrome trace format (JSON)."""
        pid = os.getpid()
        trace = {"traceEvents": [
            {"name": e.name, "ph": "X", "ts": e.start, "dur": e.cpu_time_total, "pid": pid,
             "tid": e.thread, "cat": "cpu_op" if "::" in e.name else "user_annotation",
             **({"args": {"Input Dims": e.input_shapes}} if e.input_shapes else {})}
            for e in self.events()]}
        with open(path, "w") as fh:
            json.dump(trace, fh)


class _Span:
    __slots__ = ("prof", "name", "shapes", "event")

    def __init__(self, prof, name, shapes):
        self.prof, self.name, self.shapes = prof, name, shapes

    def __enter__(self):
        self.event = self.prof._open(self.name, self.shapes)
        return self

    def __exit__(self, *exc):
        self.prof._close(self.event)
        return False


class record_function:
    """A named region in the profile (a context manager or decorator); free when no profile is
    active.

    Example:
        >>> with record_function("data loading"):
        ...     batch = ddp.randn(4, 3)
    """

    def __init__(self, name, args=None):
        self.name = name
        self._span = None

    def __enter__(self):
        prof = _active
        if prof is not None and prof._recording:
            self._span = _Span(prof, self.name, None).__enter__()
        return self

    def __exit__(self, *exc):
        if self._span is not None:
            self._span.__exit__(*exc)
            self._span = None
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with record_function(self.name):
                return fn(*args, **kwargs)
        return wrapper


def tensorboard_trace_handler(dir_name, worker_name=None, use_gzip=False):
    """An ``on_trace_ready`` that writes a Chrome trace per call into ``dir_name``."""
    def handler(prof):
        os.makedirs(dir_name, exist_ok=True)
        name = worker_name or f"{os.uname().nodename}_{os.getpid()}"
        prof.export_chrome_trace(os.path.join(
            dir_name, f"{name}.{time.time_ns()}.pt.trace.json"))
    return handler
