"""``GradScaler``: dynamic loss scaling for float16 training, as ``torch.amp.GradScaler``, and
aware of data-parallel ranks.

The loss is multiplied by a scale (``2**16`` at first) before ``backward`` so that small float16
gradients do not flush to zero; the float32 gradients of the parameters are divided by it again
(``unscale_``) before the optimizer uses them. A step whose gradients hold an inf or NaN is
skipped and the scale shrinks by ``backoff_factor``; after ``growth_interval`` clean steps in a
row it grows by ``growth_factor``.

Across ranks. With ``ddp.distributed`` initialised and more than one rank, the found-inf flag
is reduced with MAX over all ranks inside :meth:`GradScaler.unscale_` (one ``all_reduce`` of a
single float per optimizer per step; the single-optimizer loop therefore communicates once per
step). Every rank then skips or takes the same steps and keeps the same scale and growth tracker,
even when only one rank's gradients overflowed (with DDP the gradients are already averaged, so
all ranks see the overflow anyway; without DDP — local gradients, or gradients accumulated under
``no_sync`` — they would otherwise diverge). Because the reduction happens in ``unscale_``,
gradient clipping between ``unscale_`` and ``step`` runs on ranks that have already agreed
whether the step will be taken. Every rank must call ``unscale_``/``step`` for the same
optimizers in the same order (as for any collective).

Example:
    >>> model = ddp.nn.Linear(4, 1)
    >>> opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    >>> scaler = ddp.amp.GradScaler("cpu")
    >>> loss = model(ddp.randn(8, 4)).pow(2).mean()
    >>> scaler.scale(loss).backward()
    >>> scaler.unscale_(opt)                       # grads are real gradients again
    >>> _ = ddp.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    >>> scaler.step(opt); scaler.update()
    >>> scaler.get_scale()
    65536.0
"""
from __future__ import annotations

import warnings
from collections import abc, defaultdict
from enum import Enum

import numpy as np

from .. import backend

__all__ = ["GradScaler", "OptState"]


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _refresh_per_optimizer_state():
    return {"stage": OptState.READY, "found_inf": None}


def _f32(x):
    """``x`` rounded to float32, as PyTorch keeps the scale in a float32 tensor."""
    return float(np.float32(x))


def _found_inf_on_any_rank(found_inf: float) -> float:
    """MAX of the found-inf flag over all ranks (the flag itself in a single process)."""
    from .. import distributed as dist
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return found_inf
    from ..tensor import Tensor
    flag = Tensor._make(np.array([found_inf], dtype=np.float32))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return float(flag._data[0])


class GradScaler:
    """Scales the loss, unscales the gradients, skips steps with inf/NaN gradients and adapts
    the scale (see the module docstring, also for the behaviour across ranks).

    * ``scaler.scale(loss)`` multiplies a tensor (or nested lists/tuples of tensors) by the scale.
    * ``scaler.unscale_(optimizer)`` divides that optimizer's gradients by the scale in place,
      once per step (optional: ``step`` does it when not done yet).
    * ``scaler.step(optimizer, *args, **kwargs)`` calls ``optimizer.step(*args, **kwargs)``
      unless a gradient is inf/NaN on any rank; returns what it returned (None when skipped).
    * ``scaler.update()`` sets the scale for the next iteration.

    ``device='cuda'`` without a usable GPU warns and disables the scaler, as PyTorch; use
    ``device='cpu'`` for float16 autocast on the CPU. With ``enabled=False`` ``scale``
    returns its input, ``step`` calls ``optimizer.step`` and the other methods do nothing.

    Example:
        >>> model = ddp.nn.Linear(3, 1); opt = ddp.optim.SGD(model.parameters(), lr=0.1)
        >>> scaler = ddp.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
        >>> for _ in range(2):
        ...     opt.zero_grad()
        ...     with ddp.autocast("cpu", dtype=ddp.float16):
        ...         loss = model(ddp.randn(4, 3)).float().pow(2).mean()
        ...     scaler.scale(loss).backward()
        ...     scaler.step(opt)
        ...     scaler.update()
        >>> scaler.get_scale()
        4096.0
    """

    def __init__(self, device="cuda", init_scale=2.0 ** 16, growth_factor=2.0,
                 backoff_factor=0.5, growth_interval=2000, enabled=True):
        self._device = device if isinstance(device, str) else backend.as_device(device).type
        self._enabled = bool(enabled)
        if self._device == "cuda" and self._enabled and not backend.cuda_is_available():
            warnings.warn("ddp.amp.GradScaler is enabled for 'cuda', but CUDA is not available. "
                          "Disabling.", stacklevel=2)
            self._enabled = False
        if self._enabled:
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
            self._init_scale = init_scale
            self._scale = None            # float32 value (a Python float), set on first scale()
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._growth_tracker = None
            self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    # ------------------------------------------------------------------ helpers
    def _check_scale_growth_tracker(self, funcname):
        if self._scale is None:
            raise AssertionError(f"Attempted {funcname} but _scale is None.  This may indicate "
                                 f"your script did not use scaler.scale(loss or outputs) earlier "
                                 f"in the iteration.")

    def _lazy_init_scale_growth_tracker(self):
        self._scale = _f32(self._init_scale)
        self._growth_tracker = self._init_growth_tracker

    def _scale_like(self, t):
        """The scale as a 0-d float32 tensor on ``t``'s device: ``t * scale`` then follows
        PyTorch's promotion (a float16 loss of shape () becomes float32, a float16 tensor with
        dimensions stays float16)."""
        from ..tensor import Tensor
        arr = np.asarray(np.float32(self._scale))
        return Tensor._make(backend.to_device(arr, t.device) if t.is_cuda else arr)

    # ------------------------------------------------------------------ the API
    def scale(self, outputs):
        """``outputs`` (a tensor, or nested lists/tuples of tensors) multiplied by the scale.

        Example:
            >>> ddp.amp.GradScaler("cpu", init_scale=4.0).scale([ddp.tensor(1.0)])
            [tensor(4.)]
        """
        if not self._enabled:
            return outputs
        from ..tensor import Tensor
        if self._scale is None:
            self._lazy_init_scale_growth_tracker()

        def apply(v):
            if isinstance(v, Tensor):
                return v * self._scale_like(v)
            if isinstance(v, (list, tuple)):
                return type(v)(apply(x) for x in v)
            if isinstance(v, abc.Iterable):
                return map(apply, v)
            raise ValueError("outputs must be a Tensor or an iterable of Tensors")
        return apply(outputs)

    def _unscale_grads_(self, optimizer, inv_scale):
        """Multiply every gradient of ``optimizer`` by ``inv_scale`` in place; returns whether
        any was inf/NaN before (1.0 or 0.0, this rank only) and how many gradients there were."""
        found, count = None, 0
        for group in optimizer.param_groups:
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                arr = grad._data
                if arr.dtype == np.float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                xp = backend.get_array_module(arr)
                bad = ~xp.isfinite(arr).all()   # stays on the device: one sync at the end
                found = bad if found is None else (found | bad)
                count += 1
                xp.multiply(arr, inv_scale, out=arr, casting="unsafe")
                grad._vc[0] += 1
        return (0.0 if found is None else float(bool(found))), count

    def unscale_(self, optimizer):
        """Divide ``optimizer``'s gradients by the scale, in place (in their dtype, float32 for
        float32 parameters), and record whether any was inf/NaN — on any rank: the flag is
        MAX-reduced across ranks here when ``ddp.distributed`` is initialised with several
        ranks. Call it once per optimizer per step, after all gradients are accumulated, e.g. to
        clip them; calling it twice before :meth:`update` raises.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(2)); opt = ddp.optim.SGD([w], lr=1.0)
            >>> scaler = ddp.amp.GradScaler("cpu", init_scale=8.0)
            >>> scaler.scale(w.sum()).backward(); w.grad
            tensor([8., 8.])
            >>> scaler.unscale_(opt); w.grad
            tensor([1., 1.])
        """
        if not self._enabled:
            return
        self._check_scale_growth_tracker("unscale_")
        optimizer_state = self._per_optimizer_states[id(optimizer)]
        if optimizer_state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the "
                               "last update().")
        if optimizer_state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = np.float32(np.float64(1.0) / np.float64(self._scale))  # as PyTorch: via fp64
        found_inf, count = self._unscale_grads_(optimizer, inv_scale)
        found_inf = _found_inf_on_any_rank(found_inf)   # every rank takes part, even gradient-less
        # no gradients: nothing was checked (step raises, update ignores it, as in PyTorch)
        optimizer_state["found_inf"] = found_inf if count else None
        optimizer_state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """``unscale_(optimizer)`` if not done yet this step, then ``optimizer.step(*args,
        **kwargs)`` unless an inf/NaN gradient was found (on any rank). Returns the optimizer's
        return value, or None when the step was skipped.

        Example:
            >>> w = ddp.nn.Parameter(ddp.ones(1)); opt = ddp.optim.SGD([w], lr=1.0)
            >>> scaler = ddp.amp.GradScaler("cpu")
            >>> scaler.scale(w.sum() * float("inf")).backward()
            >>> scaler.step(opt); w                      # skipped: w unchanged
            Parameter containing:
            tensor([1.], requires_grad=True)
        """
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is "
                               "enabled.")
        self._check_scale_growth_tracker("step")
        optimizer_state = self._per_optimizer_states[id(optimizer)]
        if optimizer_state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if optimizer_state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if optimizer_state["found_inf"] is None:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        retval = None
        if not optimizer_state["found_inf"]:
            retval = optimizer.step(*args, **kwargs)
        optimizer_state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale=None):
        """Set the scale for the next iteration: times ``backoff_factor`` if any optimizer's
        step was skipped (and the growth tracker restarts), times ``growth_factor`` after
        ``growth_interval`` clean steps in a row; or ``new_scale`` (a float or a 1-element
        tensor) when given. Call it once per iteration, after every ``step``.

        Example:
            >>> scaler = ddp.amp.GradScaler("cpu"); _ = scaler.scale(ddp.tensor(1.0))
            >>> scaler.update(new_scale=128.0); scaler.get_scale()
            128.0
        """
        if not self._enabled:
            return
        self._check_scale_growth_tracker("update")
        if new_scale is not None:
            if not isinstance(new_scale, (float, int)):
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise AssertionError("new_scale should be a float or a 1-element tensor with "
                                         "requires_grad=False.")
                new_scale = new_scale.item()
            self._scale = _f32(new_scale)
        else:
            found_infs = [s["found_inf"] for s in self._per_optimizer_states.values()
                          if s["found_inf"] is not None]
            if not found_infs:
                raise AssertionError("No inf checks were recorded prior to update.")
            if sum(found_infs):
                self._scale = _f32(self._scale * self._backoff_factor)
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = _f32(self._scale * self._growth_factor)
                    if np.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    # ------------------------------------------------------------------ accessors
    def get_scale(self) -> float:
        """The current scale (``init_scale`` before the first ``scale``; 1.0 when disabled)."""
        if not self._enabled:
            return 1.0
        return _f32(self._init_scale) if self._scale is None else self._scale

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = new_interval

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None \
            else self._growth_tracker

    def is_enabled(self) -> bool:
        """Whether the scaler scales (False when created disabled or for an absent GPU)."""
        return self._enabled

    def state_dict(self) -> dict:
        """``{'scale', 'growth_factor', 'backoff_factor', 'growth_interval', '_growth_tracker'}``
        (empty when disabled), as PyTorch's; take it after :meth:`update`.

        Example:
            >>> sorted(ddp.amp.GradScaler("cpu").state_dict())
            ['_growth_tracker', 'backoff_factor', 'growth_factor', 'growth_interval', 'scale']
        """
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned (a no-op when disabled)."""
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale = _f32(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker = int(state_dict["_growth_tracker"])

    def __getstate__(self):
        state = self.__dict__.copy()
        if self._enabled:
            if len(self._per_optimizer_states) != 0:
                raise AssertionError("A GradScaler instance may only be pickled at the beginning "
                                     "of an iteration, or at the end after scaler.update().")
            state["_per_optimizer_states"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._enabled:
            self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)
