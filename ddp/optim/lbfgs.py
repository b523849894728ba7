"""L-BFGS: a quasi-Newton method over all parameters as one flat vector, with an optional
strong-Wolfe line search; ``step(closure)`` runs up to ``max_iter`` iterations.

A port of ``torch.optim.LBFGS`` (itself after minFunc) onto arrays: the same iteration, line
search, stopping tests and state. Where PyTorch computes with 0-d tensors (``ys``, ``ro``,
``H_diag``, the line search's ``gtd`` and step ``t``), this computes with 0-d NumPy scalars of the
parameters' dtype, whose arithmetic with Python floats rounds the same way (NumPy 2's weak
scalars), so trajectories match to rounding in float32 and float64.

Example:
    >>> x = ddp.nn.Parameter(ddp.tensor([3.0, -2.0], dtype=ddp.float64))
    >>> opt = ddp.optim.LBFGS([x], line_search_fn="strong_wolfe")
    >>> def closure():
    ...     opt.zero_grad(); loss = ((x - 1) ** 2).sum(); loss.backward(); return loss
    >>> _ = opt.step(closure); x.detach().numpy().round(6)
    array([1., 1.])
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd.grad_mode import enable_grad
from ..tensor import Tensor
from .optimizer import Optimizer, check_hyperparameters

__all__ = ["LBFGS"]


def _host(x):
    """A 0-d result (a NumPy scalar, or a CuPy 0-d array) as a NumPy scalar of its dtype: the
    scalar bookkeeping runs on the host, as PyTorch's ``if`` tests on 0-d tensors do."""
    if isinstance(x, np.generic):
        return x
    return np.asarray(x.get() if hasattr(x, "get") else x)[()]


def _rdiv(number, scalar):
    """``number / scalar`` for a Python number over a 0-d tensor as PyTorch computes it:
    ``reciprocal(scalar) * number`` (two roundings), or a plain division between numbers."""
    if isinstance(scalar, np.generic):
        return np.reciprocal(scalar) * number
    return number / scalar


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through ``(x1, f1, g1)`` and ``(x2, f2, g2)``, clipped to
    ``bounds`` (default: between the two points); their midpoint when the cubic has none."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    # a collapsed bracket divides by zero: PyTorch's tensors give inf/nan silently, and the
    # bounds then decide, so NumPy's scalars must not warn either
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d1 = g1 + g2 - _rdiv(3 * (f1 - f2), x1 - x2)
        d2_square = d1 ** 2 - g1 * g2
        if d2_square >= 0:
            d2 = np.sqrt(d2_square)
            if x1 <= x2:
                min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
            else:
                min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
            return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _dot(a, b):
    return _host(backend.get_array_module(a).dot(a, b))


def _abs_max(a):
    return _host(backend.get_array_module(a).abs(a).max())


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9,
                  max_ls=25):
    """A line search along ``d`` from step ``t`` satisfying the strong Wolfe conditions
    (sufficient decrease ``c1``, curvature ``c2``): bracketing, then zoom by cubic
    interpolation. Returns ``(f_new, g_new, t, function evaluations)``."""
    d_norm = _abs_max(d)
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = _dot(g_new, d)

    # bracket an interval containing a point satisfying the conditions
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        # interpolate (extrapolate, within [t + 0.01 (t - t_prev), 10 t])
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1

    if ls_iter == max_ls:  # reached the maximum number of iterations
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # zoom: refine the bracket until a point satisfies the conditions
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break  # the bracket is too small
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        # Too close to a boundary, or outside: move away from it, unless progress was made
        # last time (More-Thuente's safeguard, as minFunc and PyTorch have it)
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # not enough decrease: the new point becomes the high end
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True  # the Wolfe conditions hold
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # the old high end becomes the low end
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new

    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


# The state entries, in PyTorch's order, and how each is kept: "array" (a flat vector),
# "scalar" (a 0-d tensor, or a number where PyTorch has a number), "list" of either, or a number.
_STATE_KINDS = {"d": "array", "t": "scalar", "old_dirs": "list", "old_stps": "list",
                "ro": "list", "H_diag": "scalar", "prev_flat_grad": "array", "prev_loss": "number"}


def _unwrap(value):
    """A state value as the iteration uses it: arrays, NumPy scalars for 0-d tensors, numbers."""
    if isinstance(value, Tensor):
        return _host(value._data) if value.ndim == 0 else value._data
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _wrap(value):
    """A value of the iteration as PyTorch's state holds it: tensors, numbers, lists."""
    if isinstance(value, np.generic):
        return Tensor._make(np.asarray(value))
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    if value is not None and not isinstance(value, (int, float)):
        return Tensor._make(value)
    return value


class LBFGS(Optimizer):
    """L-BFGS (Liu & Nocedal), as ``torch.optim.LBFGS``; one ``step(closure)`` runs up to
    ``max_iter`` iterations, each re-evaluating ``closure`` (which must zero the gradients,
    compute the loss, call ``backward`` and return the loss).

    Args:
        params: the parameters (one group only; they are treated as one flat vector).
        lr: learning rate (default 1).
        max_iter: iterations per ``step`` (default 20).
        max_eval: function evaluations per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad: stop when the largest gradient entry is at most this (default 1e-7).
        tolerance_change: stop when the loss or the parameters change less (default 1e-9).
        history_size: the number of curvature pairs kept (default 100).
        line_search_fn: ``None`` (fixed step ``lr``) or ``"strong_wolfe"``.

    State (on the first parameter, as PyTorch keeps it): ``func_evals``, ``n_iter``, ``d``,
    ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``,
    ``al``. Memory: ``2 * history_size + 3`` copies of the parameters.

    Example:
        >>> model = ddp.nn.Linear(3, 1)
        >>> opt = ddp.optim.LBFGS(model.parameters(), history_size=10, max_iter=4)
        >>> x, y = ddp.randn(16, 3), ddp.randn(16, 1)
        >>> def closure():
        ...     opt.zero_grad(); loss = ((model(x) - y) ** 2).mean(); loss.backward()
        ...     return loss
        >>> first = opt.step(closure).item(); closure().item() < first
        True
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        check_hyperparameters(lr)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]

    def __setstate__(self, state):
        super().__setstate__(state)
        self._params = self.param_groups[0]["params"]

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._params = self.param_groups[0]["params"]

    # ------------------------------------------------------------------ the flat vector
    def _gather_flat_grad(self):
        arrays = []
        for p in self._params:
            if p.grad is None:
                xp = backend.get_array_module(p._data)
                arrays.append(xp.zeros(p._data.size, p._data.dtype))
            else:
                arrays.append(p.grad._data.reshape(-1))
        xp = backend.get_array_module(arrays[0])
        return xp.concatenate(arrays)

    def _add_grad(self, step_size, update):
        """``params += step_size * update`` (``update`` flat)."""
        offset = 0
        for p in self._params:
            n = p._data.size
            p._data += update[offset:offset + n].reshape(p._data.shape) * step_size
            p._vc[0] += 1  # changed in place: autograd must see a new version
            offset += n

    def _clone_param(self):
        return [p._data.copy() for p in self._params]

    def _set_param(self, saved):
        for p, data in zip(self._params, saved):
            p._data[...] = data
            p._vc[0] += 1

    def _directional_evaluate(self, closure, x, t, d):
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    # ------------------------------------------------------------------ the step
    def step(self, closure):
        """Run up to ``max_iter`` L-BFGS iterations; returns the loss ``closure()`` gave at the
        start.

        Example:
            >>> w = ddp.nn.Parameter(ddp.tensor([2.0], dtype=ddp.float64))
            >>> opt = ddp.optim.LBFGS([w])
            >>> def closure():
            ...     opt.zero_grad(); loss = (w ** 2).sum(); loss.backward(); return loss
            >>> opt.step(closure).item(), abs(w.item()) < 1e-6
            (4.0, True)
        """
        group = self.param_groups[0]
        lr = float(group["lr"])
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]

        def evaluate():
            with enable_grad():
                return closure()

        # the state lives on the first parameter (PyTorch's choice, so state_dicts agree)
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = evaluate()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1

        flat_grad = self._gather_flat_grad()
        opt_cond = _abs_max(flat_grad) <= tolerance_grad
        if opt_cond:  # already optimal
            return orig_loss

        d, t, old_dirs, old_stps, ro, H_diag, prev_flat_grad, prev_loss = (
            _unwrap(state.get(key)) for key in _STATE_KINDS)
        xp = backend.get_array_module(flat_grad)

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # the direction: -H g, by the two-loop recursion over the stored pairs
            if state["n_iter"] == 1:
                d = xp.negative(flat_grad)
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = _dot(y, s)
                if ys > 1e-10:  # keep the pair only where the curvature is positive
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(_rdiv(1.0, ys))
                    H_diag = ys / _dot(y, y)  # the initial Hessian's scale

                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = _unwrap(state["al"])

                q = xp.negative(flat_grad)
                for i in range(num_old - 1, -1, -1):
                    al[i] = _dot(old_stps[i], q) * ro[i]
                    q += old_dirs[i] * -al[i]
                d = r = q * H_diag
                for i in range(num_old):
                    be_i = _dot(old_dirs[i], r) * ro[i]
                    r += old_stps[i] * (al[i] - be_i)
                state["al"] = _wrap(al)

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss

            # the step length: first iteration scaled by the gradient's size
            if state["n_iter"] == 1:
                t = min(1.0, _rdiv(1.0, _host(xp.abs(flat_grad).sum()))) * lr
            else:
                t = lr

            gtd = _dot(flat_grad, d)  # the directional derivative
            if gtd > -tolerance_change:
                break  # not a descent direction

            ls_func_evals = 0
            if line_search_fn is not None:
                if line_search_fn != "strong_wolfe":
                    raise RuntimeError("only 'strong_wolfe' is supported")
                x_init = self._clone_param()

                def obj_func(x, t, d):
                    return self._directional_evaluate(evaluate, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, x_init, t, d, loss, flat_grad, gtd,
                    max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = _abs_max(flat_grad) <= tolerance_grad
            else:
                self._add_grad(t, d)  # a fixed step
                if n_iter != max_iter:
                    # re-evaluate, except after the last iteration (the caller evaluates)
                    loss = float(evaluate())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = _abs_max(flat_grad) <= tolerance_grad
                    ls_func_evals = 1

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # stopping tests
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if _abs_max(d * t) <= tolerance_change:
                break  # the parameters hardly change
            if abs(loss - prev_loss) < tolerance_change:
                break  # the loss hardly changes

        for key, value in zip(_STATE_KINDS, (d, t, old_dirs, old_stps, ro, H_diag,
                                             prev_flat_grad, prev_loss)):
            state[key] = _wrap(value)
        return orig_loss
