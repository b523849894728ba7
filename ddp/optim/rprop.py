"""Rprop: resilient backpropagation, per-coordinate step sizes driven by the gradient's sign.

Example:
    >>> w = ddp.nn.Parameter(ddp.tensor([1.0]))
    >>> opt = ddp.optim.Rprop([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step()
    >>> round(w.item(), 6)                     # moves by the step size (lr) against the sign
    0.9
"""
from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, advance_step, check_hyperparameters, step_counter, zeros_state

__all__ = ["Rprop", "rprop_update"]


def rprop_update(param, grad, prev, step_size, *, etaminus, etaplus, step_size_min,
                 step_size_max, maximize, scratch=None):
    """One Rprop step on arrays, in place (PyTorch's single-tensor formulas and order)::

        s = sign(±grad * prev) mapped to etaplus (> 0), etaminus (< 0) or 1 (= 0)
        step_size = clamp(step_size * s, step_size_min, step_size_max)
        g = ±grad, zeroed where the sign flipped (s == etaminus)
        param -= sign(g) * step_size;  prev = g

    ``scratch`` is two arrays shaped like ``param``.

    Example:
        >>> p, prev, size = np.ones(2, np.float32), np.ones(2, np.float32), np.ones(2, np.float32)
        >>> rprop_update(p, np.array([1, -1], np.float32), prev, size, etaminus=0.5, etaplus=1.2,
        ...              step_size_min=1e-6, step_size_max=50, maximize=False)
        >>> size, prev                          # grew where the sign held, shrank where it flipped
        (array([1.2, 0.5], dtype=float32), array([1., 0.], dtype=float32))
        >>> p                                   # no step where the sign flipped
        array([-0.20000005,  1.        ], dtype=float32)
    """
    xp = backend.get_array_module(param)
    t1, t2 = scratch if scratch is not None else (xp.empty_like(param), xp.empty_like(param))
    # g = ±grad, in t1 (a copy even when not maximizing: it is zeroed where the sign flipped)
    g = xp.negative(grad, out=t1) if maximize else xp.copyto(t1, grad) or t1
    sign = xp.multiply(g, prev, out=t2)
    xp.sign(sign, out=sign)
    sign[sign > 0] = etaplus
    sign[sign < 0] = etaminus
    sign[sign == 0] = 1
    step_size *= sign
    xp.clip(step_size, step_size_min, step_size_max, out=step_size)
    g[sign == etaminus] = 0
    xp.sign(g, out=t2)
    t2 *= step_size
    param -= t2
    prev[...] = g


class Rprop(Optimizer):
    """Rprop (Riedmiller & Braun), as ``torch.optim.Rprop``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: the initial step size (default 1e-2).
        etas: (etaminus, etaplus), the factors by which a step size shrinks when the gradient's
            sign flips and grows when it holds (default (0.5, 1.2)).
        step_sizes: the smallest and largest step sizes (default (1e-6, 50)).
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable: accepted for compatibility; there is one implementation.
        differentiable: must be False.

    State per parameter: ``step``, ``prev`` (the last gradient used) and ``step_size``.

    Example:
        >>> opt = ddp.optim.Rprop(ddp.nn.Linear(3, 1).parameters(), etas=(0.4, 1.3))
    """

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        check_hyperparameters(lr, etas=etas, differentiable=differentiable)
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults)

    def _options(self, group):
        etaminus, etaplus = group["etas"]
        low, high = group["step_sizes"]
        return dict(lr=float(group["lr"]), etaminus=float(etaminus), etaplus=float(etaplus),
                    step_size_min=float(low), step_size_max=float(high),
                    maximize=bool(group["maximize"]))

    def _update(self, p, options):
        state = self.state[p]
        if not state:
            state["step"] = step_counter()
            state["prev"] = zeros_state(p)
            state["step_size"] = zeros_state(p, options["lr"])  # step sizes start at lr
        advance_step(state["step"])
        rprop_update(p._data, p.grad._data, state["prev"]._data, state["step_size"]._data,
                     etaminus=options["etaminus"], etaplus=options["etaplus"],
                     step_size_min=options["step_size_min"],
                     step_size_max=options["step_size_max"], maximize=options["maximize"],
                     scratch=self._scratch(p, 2))
