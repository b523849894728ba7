"""Whether operations record the graph: ``no_grad``, ``enable_grad``, ``set_grad_enabled``,
``inference_mode``, and anomaly detection. The state is per thread, as in PyTorch.

Example:
    >>> x = ddp.ones(2, requires_grad=True)
    >>> with ddp.no_grad():
    ...     y = x * 2
    >>> y.requires_grad
    False
"""
from __future__ import annotations

import functools
import threading


class _State(threading.local):
    grad_enabled = True   # class defaults are what every new thread starts with
    inference = False
    anomaly = False
    anomaly_check_nan = True


state = _State()


class _Process:
    """Process-wide facts, read where a per-thread read (~0.1 µs) would cost too much."""
    # True for good once anomaly detection was turned on in any thread: until then apply, around
    # every op, skips reading the per-thread flag
    anomaly_used = False


process = _Process()


def is_grad_enabled() -> bool:
    """True when operations on tensors that require grad record the graph."""
    return state.grad_enabled


class _GradModeContext:
    """Base of the context managers below; each also works as a decorator."""
    _enable = True

    def __enter__(self):
        self._prev = state.grad_enabled
        state.grad_enabled = self._enable

    def __exit__(self, *exc):
        state.grad_enabled = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradModeContext):
    """Context manager / decorator: no graph is recorded inside.

    Example:
        >>> @ddp.no_grad()
        ... def evaluate(model, x): return model(x)
    """
    _enable = False


class enable_grad(_GradModeContext):
    """Context manager / decorator: record the graph again inside a ``no_grad`` region."""
    _enable = True


class set_grad_enabled(_GradModeContext):
    """Set grad mode on or off; works as a function call, a context manager or a decorator.

    Example:
        >>> with ddp.set_grad_enabled(False):
        ...     pass
    """

    def __init__(self, mode: bool):
        self._prev = state.grad_enabled
        self._enable = bool(mode)
        state.grad_enabled = self._enable

    def __enter__(self):
        pass

    def __call__(self, fn):
        state.grad_enabled = self._prev
        mode = self._enable

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return wrapper


class inference_mode(_GradModeContext):
    """Like ``no_grad``, for inference: no graph, no version bookkeeping needed.

    ``inference_mode(False)`` leaves grad mode as it is. Usable as ``@inference_mode()`` or
    bare ``@inference_mode``.
    """

    def __new__(cls, mode=True):
        if callable(mode):  # used as a bare decorator
            return cls()(mode)
        return super().__new__(cls)

    def __init__(self, mode=True):
        self._mode = bool(mode)

    def __enter__(self):
        self._prev = state.grad_enabled
        self._prev_inference = state.inference
        if self._mode:
            state.grad_enabled = False
            state.inference = True

    def __exit__(self, *exc):
        state.grad_enabled = self._prev
        state.inference = self._prev_inference
        return False

    def __call__(self, fn):
        mode = self._mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with inference_mode(mode):
                return fn(*args, **kwargs)
        return wrapper


def is_inference_mode_enabled() -> bool:
    """True inside ``inference_mode()`` (not merely ``no_grad``), as in PyTorch."""
    return state.inference


class detect_anomaly:
    """Context manager / decorator: every backward op's result is checked for NaN/Inf, and the
    error names the op and shows where its forward ran.

    Example:
        >>> with ddp.autograd.detect_anomaly():
        ...     (ddp.tensor([0.0], requires_grad=True).sqrt() * 0).sum().backward()
        Traceback (most recent call last):
        RuntimeError: Function 'SqrtBackward0' returned nan values in its 0th output.
        Traceback of the forward call that produced it:
        ...
    """

    def __init__(self, check_nan=True):
        self.check_nan = check_nan

    def __enter__(self):
        self._prev = (state.anomaly, state.anomaly_check_nan)
        process.anomaly_used = True
        state.anomaly, state.anomaly_check_nan = True, self.check_nan

    def __exit__(self, *exc):
        state.anomaly, state.anomaly_check_nan = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)
        return wrapper


class set_detect_anomaly(detect_anomaly):
    """Turn anomaly detection on or off (also usable as a context manager)."""

    def __init__(self, mode: bool, check_nan=True):
        super().__init__(check_nan)
        self._prev = (state.anomaly, state.anomaly_check_nan)
        if mode:
            process.anomaly_used = True
        state.anomaly, state.anomaly_check_nan = bool(mode), check_nan

    def __enter__(self):
        pass


def is_anomaly_enabled() -> bool:
    return state.anomaly
