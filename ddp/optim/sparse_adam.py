"""SparseAdam: Adam for parameters whose gradients are sparse (``nn.Embedding(sparse=True)``):
only the rows a gradient names have their moments and values updated.

The gradient must be a sparse COO tensor in PyTorch's interface (``is_sparse``, ``coalesce()``,
``_indices()``, ``_values()``); a dense gradient is refused, as in PyTorch. The update itself,
:func:`sparse_adam_update`, works on the indices and values as arrays.
"""
from __future__ import annotations

import math

from .. import backend
from ..autograd.grad_mode import enable_grad
from .optimizer import Optimizer, check_hyperparameters, zeros_state

__all__ = ["SparseAdam", "sparse_adam_update"]


def sparse_adam_update(param, indices, values, exp_avg, exp_avg_sq, step, *, lr, beta1, beta2,
                       eps, maximize):
    """One SparseAdam step on arrays, in place (PyTorch's formulas and order), at the entries a
    coalesced COO gradient names: ``indices`` (sparse_dim, nnz) without repeats, ``values``
    (nnz, *dense_dims). With ``i`` those entries and ``g = ±values``::

        m_new - m = (1 - beta1) (g - m[i]);   v_new - v = (1 - beta2) (g² - v[i])
        param[i] += -lr sqrt(1 - beta2**step) / (1 - beta1**step) * m_new / (sqrt(v_new) + eps)

    ``step`` is the step number after incrementing.

    Example:
        >>> p, m, v = np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32)
        >>> sparse_adam_update(p, np.array([[2]]), np.array([4.0], np.float32), m, v, 1, lr=0.1,
        ...                    beta1=0.9, beta2=0.999, eps=1e-8, maximize=False); p.round(6)
        array([1. , 1. , 0.9], dtype=float32)
    """
    xp = backend.get_array_module(param)
    if values.size == 0:
        return
    g = -values if maximize else values
    at = tuple(indices)
    old_exp_avg = exp_avg[at]
    exp_avg_update = g - old_exp_avg
    exp_avg_update *= 1 - beta1
    exp_avg[at] += exp_avg_update
    old_exp_avg_sq = exp_avg_sq[at]
    exp_avg_sq_update = g * g
    exp_avg_sq_update -= old_exp_avg_sq
    exp_avg_sq_update *= 1 - beta2
    exp_avg_sq[at] += exp_avg_sq_update

    numer = exp_avg_update
    numer += old_exp_avg
    exp_avg_sq_update += old_exp_avg_sq
    denom = xp.sqrt(exp_avg_sq_update, out=exp_avg_sq_update)
    denom += eps
    step_size = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    numer /= denom
    numer *= -step_size
    param[at] += numer


class SparseAdam(Optimizer):
    """A masked Adam for sparse gradients, as ``torch.optim.SparseAdam``: the moments and the
    parameter change only where the gradient has entries.

    Args:
        params: parameters or parameter groups (dense tensors) to optimize.
        lr: learning rate (default 1e-3; must be positive).
        betas: decay rates of the moment averages (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8; must be positive).
        maximize: maximize the objective instead of minimizing it.

    State per parameter: ``step`` (a Python int, as PyTorch keeps it here), ``exp_avg`` and
    ``exp_avg_sq``.

    Example:
        >>> emb = ddp.nn.Parameter(ddp.ones(4, 2))
        >>> opt = ddp.optim.SparseAdam([emb], lr=0.1)
        >>> emb.grad = ddp.ones(4, 2)              # dense: SparseAdam refuses it, as PyTorch does
        >>> opt.step()
        Traceback (most recent call last):
        ...
        RuntimeError: SparseAdam does not support dense gradients, please consider Adam instead
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        check_hyperparameters(lr, strict=True, eps=eps, betas=betas)
        defaults = dict(lr=lr, betas=betas, eps=eps, maximize=maximize)
        super().__init__(params, defaults)
        sparse_params = [[i, j] for i, group in enumerate(self.param_groups)
                         for j, p in enumerate(group["params"]) if getattr(p, "is_sparse", False)]
        if sparse_params:
            raise ValueError(f"Sparse params at indices {sparse_params}: SparseAdam requires "
                             "dense parameter tensors")
        complex_params = [[i, j] for i, group in enumerate(self.param_groups)
                          for j, p in enumerate(group["params"]) if p._data.dtype.kind == "c"]
        if complex_params:
            raise ValueError(f"Complex params at indices {complex_params}: SparseAdam does not "
                             "support complex parameters")

    def step(self, closure=None):
        """Update every parameter that has a (sparse) gradient; returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            options = dict(lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                           eps=float(group["eps"]), maximize=bool(group.get("maximize", False)))
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not getattr(p.grad, "is_sparse", False):
                    raise RuntimeError("SparseAdam does not support dense gradients, please "
                                       "consider Adam instead")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = zeros_state(p)
                    state["exp_avg_sq"] = zeros_state(p)
                state["step"] += 1
                grad = p.grad.coalesce()  # the update is not linear: indices must be unique
                sparse_adam_update(p._data, grad._indices()._data, grad._values()._data,
                                   state["exp_avg"]._data, state["exp_avg_sq"]._data,
                                   state["step"], **options)
                p._vc[0] += 1
        return loss
