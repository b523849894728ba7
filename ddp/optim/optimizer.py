"""``Optimizer``: the base of every optimizer, with PyTorch's param groups, state and state_dict.

An optimizer keeps a list of parameter groups (dicts holding ``params`` and the options such as
``lr``) and per-parameter state (a dict of tensors per parameter). ``step()`` runs the update of
each parameter that has a gradient; the update formulas are plain functions on the arrays
(``p._data``), computed in place with NumPy/CuPy, outside autograd, into reusable scratch arrays.

Example:
    >>> w = ddp.nn.Parameter(ddp.ones(2))
    >>> opt = ddp.optim.SGD([w], lr=0.5)
    >>> (w * w).sum().backward(); opt.step()        # grad 2w = 2, so w = 1 - 0.5 * 2
    >>> w
    Parameter containing:
    tensor([0., 0.], requires_grad=True)
"""
from __future__ import annotations

import functools
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from copy import deepcopy
from itertools import chain

import numpy as np

from .. import backend
from .._grads import zero_grad as _zero_grad
from ..autograd.grad_mode import enable_grad
from ..autograd.hooks import RemovableHandle
from .._typename import legacy_tensor_typename as _tensor_typename
from .._typename import typename as _typename
from ..tensor import Tensor

__all__ = ["Optimizer", "required", "register_optimizer_step_pre_hook",
           "register_optimizer_step_post_hook"]


class _RequiredParameter:
    """Marks a default that every param group must give (``SGD(lr=required)`` in old PyTorch)."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()

_global_step_pre_hooks: OrderedDict = OrderedDict()
_global_step_post_hooks: OrderedDict = OrderedDict()


def register_optimizer_step_pre_hook(hook):
    """Run ``hook(optimizer, args, kwargs)`` before the ``step()`` of every optimizer; it may
    return new ``(args, kwargs)``. Returns a handle whose ``remove()`` unregisters it.

    Example:
        >>> h = ddp.optim.optimizer.register_optimizer_step_pre_hook(lambda o, a, k: None)
        >>> h.remove()
    """
    return _register(_global_step_pre_hooks, hook)


def register_optimizer_step_post_hook(hook):
    """Run ``hook(optimizer, args, kwargs)`` after the ``step()`` of every optimizer.

    Example:
        >>> h = ddp.optim.optimizer.register_optimizer_step_post_hook(lambda o, a, k: None)
        >>> h.remove()
    """
    return _register(_global_step_post_hooks, hook)


def _register(hooks, hook, prepend=False):
    """Store ``hook`` in the OrderedDict ``hooks`` (first, with ``prepend``); return its handle."""
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


def _with_step_hooks(step):
    """Wrap a ``step`` method so that the pre/post step hooks run around it.

    Every ``step`` defined by an Optimizer subclass is wrapped (see ``__init_subclass__``), so user
    optimizers that override ``step`` get the hooks as in PyTorch. A ``step`` that calls
    ``super().step()`` runs the hooks once: the inner call sees the flag and skips them.
    As in PyTorch, the hooks see ``args`` with the optimizer first (``(optimizer,)`` for a plain
    ``step()``), and a pre hook that returns ``(args, kwargs)`` must keep it there.
    """
    @functools.wraps(step)
    def wrapper(*args, **kwargs):
        self = args[0]
        if self.__dict__.get("_in_step"):
            return step(*args, **kwargs)
        self._in_step = True
        try:
            for hook in chain(_global_step_pre_hooks.values(),
                              self._optimizer_step_pre_hooks.values()):
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(f"{step} must return None or a tuple of (new_args, "
                                           f"new_kwargs), but got {result}.")
                    args, kwargs = result
            out = step(*args, **kwargs)
            for hook in chain(self._optimizer_step_post_hooks.values(),
                              _global_step_post_hooks.values()):
                hook(self, args, kwargs)
            return out
        finally:
            self._in_step = False
    wrapper._step_hooks = True
    return wrapper


def _scalar_dtype():
    """The dtype of the ``step`` counters: float32, or float64 under a float64 default (PyTorch)."""
    return np.float64 if backend.get_default_dtype() == backend.float64 else np.float32


def step_counter(value=0.0):
    """A new ``step`` state entry: a 0-d float tensor on the CPU, as PyTorch keeps it."""
    return Tensor._make(np.array(value, dtype=_scalar_dtype()))


def advance_step(step_tensor):
    """Add one to a ``step`` state tensor in place and return the new count as a Python float."""
    step_tensor._data += 1
    return float(step_tensor._data)


def zeros_state(p, fill=0.0):
    """A state tensor shaped like parameter ``p`` (same dtype and device), filled with ``fill``."""
    xp = backend.get_array_module(p._data)
    return Tensor._make(xp.full_like(p._data, fill))


class Optimizer:
    """Base class of all optimizers.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts that each define
            a parameter group (``{"params": [...], "lr": 0.1}``).
        defaults: the options (``lr``, ...) of groups that do not give their own.

    A subclass sets its defaults and implements ``_update(p, options)``: the update of one
    parameter that has a gradient, with ``options`` the group's hyperparameters as returned by
    ``_options(group)``. Subclasses that define their own ``step`` (as PyTorch code does) work too.

    Example:
        >>> class PlainSGD(ddp.optim.Optimizer):
        ...     def __init__(self, params, lr): super().__init__(params, {"lr": lr})
        ...     @ddp.no_grad()
        ...     def step(self, closure=None):
        ...         for group in self.param_groups:
        ...             for p in group["params"]:
        ...                 p.add_(p.grad, alpha=-group["lr"])
        >>> w = ddp.nn.Parameter(ddp.ones(1)); w.grad = ddp.ones(1)
        >>> PlainSGD([w], lr=0.25).step(); w.item()
        0.75
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_step_hooks", False):
            cls.step = _with_step_hooks(step)

    def __init__(self, params, defaults):
        self.defaults = defaults
        self._init_transient()
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got " + _tensor_typename(params))
        self.state = defaultdict(dict)
        self.param_groups = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    def _init_transient(self):
        """Hooks and scratch buffers: per instance, not part of the pickled state (as PyTorch)."""
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._workspace = {}  # scratch arrays per (device, dtype): see _scratch

    # ------------------------------------------------------------------ pickling and printing
    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_transient()
        self.defaults.setdefault("differentiable", False)

    def __repr__(self):
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {key}: {group[key]}" for key in sorted(group) if key != "params")
        return "\n".join(lines) + "\n)"

    # ------------------------------------------------------------------ param groups
    def add_param_group(self, param_group):
        """Add a group of parameters (a dict with ``params`` and optional options); options it
        leaves out take the optimizer's defaults. Useful to unfreeze layers while training.

        Example:
            >>> a, b = ddp.nn.Parameter(ddp.ones(1)), ddp.nn.Parameter(ddp.ones(1))
            >>> opt = ddp.optim.SGD([a], lr=0.1)
            >>> opt.add_param_group({"params": [b], "lr": 0.01})
            >>> [g["lr"] for g in opt.param_groups]
            [0.1, 0.01]
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                            "the ordering of tensors in sets will change between runs. Please use "
                            "a list instead.")
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]  # from named_parameters()
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        param_group["params"] = params
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param "
                                 "names are missing")
            param_group["param_names"] = names

        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                + _typename(p))
            if not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")

        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError("parameter group didn't specify a value of required optimization "
                                 f"parameter {name}")
            param_group.setdefault(name, default)

        ids = [id(p) for p in params]
        if len(ids) != len(set(ids)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "in future, this will cause an error; see "
                          "github.com/pytorch/pytorch/issues/40967 for more information",
                          stacklevel=3)
        seen = set()
        for group in self.param_groups:
            seen.update(id(p) for p in group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                which = "with names" if "param_names" in param_group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {which} to the optimizer")
        if not seen.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    # ------------------------------------------------------------------ gradients
    def zero_grad(self, set_to_none=True):
        """Reset the gradients of all parameters: to ``None`` (the default, which also makes
        ``step()`` skip parameters that get no new gradient) or to zeros in place.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(2)); w.grad = ddp.ones(2)
            >>> opt = ddp.optim.SGD([w], lr=0.1)
            >>> opt.zero_grad(set_to_none=False); w.grad
            tensor([0., 0.])
            >>> opt.zero_grad(); w.grad is None
            True
        """
        _zero_grad(chain.from_iterable(g["params"] for g in self.param_groups), set_to_none)

    # ------------------------------------------------------------------ the step
    @_with_step_hooks
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns ``closure()``'s loss, if given.

        ``closure`` re-evaluates the model and returns the loss (with gradients enabled, also
        when ``step`` is called under ``no_grad``).

        Example:
            >>> w = ddp.nn.Parameter(ddp.tensor([2.0]))
            >>> opt = ddp.optim.SGD([w], lr=0.25)
            >>> def closure():
            ...     opt.zero_grad(); loss = (w * w).sum(); loss.backward(); return loss
            >>> opt.step(closure).item(), w.item()
            (4.0, 1.0)
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            options = self._options(group)
            for p in group["params"]:
                if p.grad is not None:
                    guard = backend.device_guard(p._data)   # a parameter on another GPU
                    if guard is None:
                        self._update(p, options)
                    else:
                        with guard:
                            self._update(p, options)
                    p._vc[0] += 1  # p changed in place: autograd must see a new version
        return loss

    def _options(self, group):
        """The hyperparameters that ``_update`` passes to the update function, as Python scalars
        (so that NumPy keeps float32 arrays float32 and a 1-element tensor ``lr`` works)."""
        raise NotImplementedError

    def _update(self, p, options):
        """Update parameter ``p`` (whose ``grad`` is set) in place; creates its state if empty."""
        raise NotImplementedError

    def _scratch(self, p, count):
        """``count`` scratch arrays shaped like ``p``: views into buffers cached per device and
        dtype (sized to the largest parameter), so a step allocates nothing. Their contents are
        garbage on entry and may be overwritten by the next parameter's update."""
        arr = p._data
        key = (backend.device_of(arr), arr.dtype)
        flats = self._workspace.get(key, ())
        if len(flats) < count or flats[0].size < arr.size:
            xp = backend.get_array_module(arr)
            size = max([arr.size] + [f.size for f in flats])
            flats = self._workspace[key] = [xp.empty(size, arr.dtype)
                                            for _ in range(max(count, len(flats)))]
        n, shape = arr.size, arr.shape
        return tuple(f[:n].reshape(shape) for f in flats[:count])

    # ------------------------------------------------------------------ hooks
    def register_step_pre_hook(self, hook):
        """Run ``hook(optimizer, args, kwargs)`` before each ``step()``; it may return new
        ``(args, kwargs)``. Returns a handle whose ``remove()`` unregisters it.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(1)); opt = ddp.optim.SGD([w], lr=0.1)
            >>> h = opt.register_step_pre_hook(lambda o, args, kwargs: print("stepping"))
            >>> opt.step()
            stepping
            >>> h.remove()
        """
        return _register(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook):
        """Run ``hook(optimizer, args, kwargs)`` after each ``step()``. Returns a handle.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(1)); opt = ddp.optim.SGD([w], lr=0.1)
            >>> h = opt.register_step_post_hook(lambda o, args, kwargs: print("stepped"))
            >>> opt.step()
            stepped
        """
        return _register(self._optimizer_step_post_hooks, hook)

    def register_state_dict_pre_hook(self, hook, prepend=False):
        """Run ``hook(optimizer)`` before :meth:`state_dict` builds the dict (before the hooks
        already registered, with ``prepend=True``). Returns a handle.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(1)); opt = ddp.optim.SGD([w], lr=0.1)
            >>> h = opt.register_state_dict_pre_hook(lambda o: print("saving"))
            >>> _ = opt.state_dict()
            saving
        """
        return _register(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook, prepend=False):
        """Run ``hook(optimizer, state_dict)`` on the dict :meth:`state_dict` built; it may edit
        it in place or return a new one. Returns a handle.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(1)); opt = ddp.optim.SGD([w], lr=0.1)
            >>> h = opt.register_state_dict_post_hook(lambda o, sd: {**sd, "epoch": 3})
            >>> opt.state_dict()["epoch"]
            3
        """
        return _register(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook, prepend=False):
        """Run ``hook(optimizer, state_dict)`` on a shallow copy of the dict given to
        :meth:`load_state_dict`, before it is loaded; it may return a replacement. Returns a
        handle.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(1)); opt = ddp.optim.SGD([w], lr=0.1)
            >>> def drop_epoch(o, sd):
            ...     sd.pop("epoch", None)
            >>> h = opt.register_load_state_dict_pre_hook(drop_epoch)
            >>> opt.load_state_dict({**opt.state_dict(), "epoch": 3})
        """
        return _register(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook, prepend=False):
        """Run ``hook(optimizer)`` after :meth:`load_state_dict` has loaded. Returns a handle.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(1)); opt = ddp.optim.SGD([w], lr=0.1)
            >>> h = opt.register_load_state_dict_post_hook(lambda o: print("loaded"))
            >>> opt.load_state_dict(opt.state_dict())
            loaded
        """
        return _register(self._optimizer_load_state_dict_post_hooks, hook, prepend)

    # ------------------------------------------------------------------ state dict
    def state_dict(self):
        """The optimizer's state as a dict, with parameters replaced by their position, exactly as
        PyTorch lays it out::

            {'state': {0: {'step': tensor(3.), 'exp_avg': tensor(...), ...}, ...},
             'param_groups': [{'lr': 0.001, ..., 'params': [0, 1]}]}

        The state tensors are the live ones (not copies), as in PyTorch: save or deep-copy the
        dict before stepping on.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(1)); opt = ddp.optim.SGD([w], lr=0.1)
            >>> opt.state_dict()["param_groups"][0]["params"]
            [0]
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        index = {}
        packed_groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            packed_groups.append(packed)
        packed_state = {(index[id(k)] if isinstance(k, Tensor) else k): v
                        for k, v in self.state.items()}
        state_dict = {"state": packed_state, "param_groups": packed_groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict):
        """Load a state from :meth:`state_dict` (this optimizer's, or PyTorch's with its tensors
        converted to ddp tensors). Groups and their sizes must match. State tensors are cast to
        their parameter's dtype and device (``step`` counters are kept as they are).

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(1)); w.grad = ddp.ones(1)
            >>> opt = ddp.optim.Adam([w]); opt.step()
            >>> fresh = ddp.optim.Adam([w]); fresh.load_state_dict(opt.state_dict())
            >>> fresh.state[w]["step"]
            tensor(1.)
        """
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
        id_map = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))

        state = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                param = id_map[k]
                state[param] = _cast_state(param, v)
            else:
                state[k] = v

        for group, saved in zip(groups, saved_groups):
            saved["params"] = group["params"]
            for k, v in self.defaults.items():  # options missing from older checkpoints
                saved.setdefault(k, v)
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
        self.state = state
        self.param_groups = saved_groups
        self.defaults.setdefault("differentiable", False)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)


def _cast_state(param, value, key=None):
    """A loaded state value for ``param``: tensors moved to its device, floating ones (other than
    the ``step`` counter) cast to its dtype; containers rebuilt with their contents cast."""
    if isinstance(value, Tensor):
        if key == "step":
            return value
        if param.is_floating_point():
            return value.to(dtype=param.dtype, device=param.device)
        return value.to(device=param.device)
    if isinstance(value, dict):
        out = {k: _cast_state(param, v, k) for k, v in value.items()}
        if key is None and isinstance(out.get("step"), (int, float)):
            out["step"] = step_counter(out["step"])  # old checkpoints stored plain numbers
        return out
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return type(value)(_cast_state(param, v) for v in value)
    return value


# ---------------------------------------------------------------------- shared update pieces

# Each checked hyperparameter: (accepts the value, the word PyTorch's message uses for it).
_RULES = {
    "eps": (lambda v: 0.0 <= v, "epsilon"),
    "weight_decay": (lambda v: 0.0 <= v, "weight_decay"),
    "momentum": (lambda v: 0.0 <= v, "momentum"),
    "alpha": (lambda v: 0.0 <= v, "alpha"),
    "rho": (lambda v: 0.0 <= v <= 1.0, "rho"),
    "lr_decay": (lambda v: 0.0 <= v, "lr_decay"),
    "initial_accumulator_value": (lambda v: 0.0 <= v, "initial_accumulator_value"),
    "momentum_decay": (lambda v: 0.0 <= v, "momentum_decay"),
}


def check_hyperparameters(lr, *, differentiable=False, strict=False, **values):
    """PyTorch's checks of an optimizer's arguments, with its messages, written once: ``lr``
    (non-negative; a tensor ``lr`` has one element), then each keyword in the order given
    (``eps``, ``betas``, ``weight_decay``, ``momentum``, ``etas``, ...), then
    ``differentiable``. ``strict``: ``lr`` and ``eps`` must be positive (SparseAdam).

    Example:
        >>> check_hyperparameters(0.1, eps=1e-8, betas=(0.9, 0.999), weight_decay=0)
        >>> check_hyperparameters(0.1, betas=(0.9, 1.0))
        Traceback (most recent call last):
        ...
        ValueError: Invalid beta parameter at index 1: 1.0
    """
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not (0.0 < lr if strict else 0.0 <= lr):
        raise ValueError(f"Invalid learning rate: {lr}")
    for name, value in values.items():
        if name == "betas":
            for i, beta in enumerate(value[:2]):
                if not 0.0 <= beta < 1.0:
                    raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        elif name == "etas":
            if not 0.0 < value[0] < 1.0 < value[1]:
                raise ValueError(f"Invalid eta values: {value[0]}, {value[1]}")
        elif name == "eps" and strict:
            if not 0.0 < value:
                raise ValueError(f"Invalid epsilon value: {value}")
        else:
            accepts, word = _RULES[name]
            if not accepts(value):
                raise ValueError(f"Invalid {word} value: {value}")
    if differentiable:
        # ddp optimizers update the arrays in place, outside autograd
        raise NotImplementedError("differentiable=True is not supported: ddp optimizers update "
                                  "the parameter arrays in place, outside autograd")


def grad_for_update(param, grad, weight_decay, maximize, out):
    """The gradient an update uses: ``grad``, negated when maximizing, plus the L2 penalty
    ``weight_decay * param``. Returns ``grad`` itself when neither applies, else ``out`` (an
    array shaped like ``param``) holding the result; ``grad`` is never modified.

    Example:
        >>> p, g = np.ones(2, np.float32), np.full(2, 3, np.float32)
        >>> grad_for_update(p, g, 0.5, True, np.empty(2, np.float32))
        array([-2.5, -2.5], dtype=float32)
    """
    xp = backend.get_array_module(param)
    if weight_decay != 0:
        xp.multiply(param, weight_decay, out=out)
        (xp.subtract if maximize else xp.add)(out, grad, out=out)
        return out
    if maximize:
        return xp.negative(grad, out=out)
    return grad


def lerp_(start, end, weight, tmp):
    """``start += weight * (end - start)`` in place, by PyTorch's ``lerp_`` formula (from ``end``
    when ``weight >= 0.5``, for accuracy). ``tmp`` is a scratch array shaped like ``start``.

    Example:
        >>> a, b = np.zeros(2, np.float32), np.ones(2, np.float32)
        >>> lerp_(a, b, 0.25, np.empty(2, np.float32)); a
        array([0.25, 0.25], dtype=float32)
    """
    xp = backend.get_array_module(start)
    xp.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        tmp *= weight
        start += tmp
    else:
        # end + (w - 1) * (end - start), with w - 1 taken in the array's precision as PyTorch does
        tmp *= start.dtype.type(weight) - start.dtype.type(1)
        xp.add(end, tmp, out=start)
