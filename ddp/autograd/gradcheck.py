"""Check analytical gradients against central finite differences (use float64 inputs).

Example:
    >>> x = ddp.randn(3, dtype=ddp.float64, requires_grad=True)
    >>> ddp.autograd.gradcheck(lambda t: (t.sin() * t).sum(), (x,))
    True
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import backend
from . import graph
from .gradients import grad


class GradcheckError(RuntimeError):
    """Raised by gradcheck when the analytical and numerical Jacobians differ."""


def _tensors(x):
    if isinstance(x, graph.Tensor):
        return (x,)
    return tuple(x)


def _outputs(fn, inputs):
    Tensor = graph.Tensor
    out = fn(*inputs)
    outs = (out,) if isinstance(out, Tensor) else tuple(o for o in out if isinstance(o, Tensor))
    return outs


def _numerical_jacobian(fn, inputs, wrt, eps):
    """J[k][i][o]: d output o / d element i of input k, by central differences.

    ``fn`` runs with grad mode on: gradgradcheck's ``fn`` itself calls ``autograd.grad``."""
    base = [o._host().astype(np.float64).ravel().copy() for o in _outputs(fn, inputs)]
    jac = []
    for k in wrt:
        data = inputs[k]._data
        rows = []
        for idx in np.ndindex(data.shape):  # C order, in place (also for non-contiguous inputs)
            orig = data[idx].item()
            data[idx] = orig + eps
            plus = [o._host().astype(np.float64).ravel().copy() for o in _outputs(fn, inputs)]
            data[idx] = orig - eps
            minus = [o._host().astype(np.float64).ravel().copy() for o in _outputs(fn, inputs)]
            data[idx] = orig
            rows.append(np.concatenate([(p - m) / (2 * eps) for p, m in zip(plus, minus)])
                        if plus else np.zeros(0))
        jac.append(np.array(rows).reshape(data.size, sum(b.size for b in base)))
    return jac


def _analytical_jacobian(fn, inputs, wrt):
    outs = _outputs(fn, inputs)
    n_out = sum(o.numel() for o in outs)
    jac = [np.zeros((inputs[k].numel(), n_out)) for k in wrt]
    col = 0
    for j, o in enumerate(outs):
        for e in range(o.numel()):
            if not o.requires_grad:
                col += 1
                continue
            grads_out = []
            for jj, oo in enumerate(outs):
                xp = backend.get_array_module(oo._data)
                g = graph.Tensor._make(xp.zeros(oo._data.shape, oo._data.dtype))
                if jj == j:
                    g._data.reshape(-1)[e] = 1
                grads_out.append(g)
            diff = [oo for oo in outs if oo.requires_grad]
            gouts = [g for g, oo in zip(grads_out, outs) if oo.requires_grad]
            gs = grad(diff, [inputs[k] for k in wrt], gouts, retain_graph=True, allow_unused=True)
            for r, g in enumerate(gs):
                if g is not None:
                    jac[r][:, col] = g._host().astype(np.float64).ravel()
            col += 1
    return jac


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              nondet_tol=0.0, check_undefined_grad=True, fast_mode=False):
    """True when the gradients of ``func`` at ``inputs`` match finite differences.

    Only inputs that require grad are checked; they should be float64.
    """
    Tensor = graph.Tensor
    inputs = _tensors(inputs)
    wrt = [k for k, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError("gradcheck expects at least one input tensor to require gradient")
    for k in wrt:
        if inputs[k].dtype.name != "float64":
            warnings.warn(f"gradcheck: input {k} is {inputs[k].dtype.name}, not float64; the "
                          f"check is likely to fail from rounding", stacklevel=2)
    numerical = _numerical_jacobian(func, inputs, wrt, eps)
    analytical = _analytical_jacobian(func, inputs, wrt)
    for k, num, ana in zip(wrt, numerical, analytical):
        if not np.allclose(ana, num, rtol=rtol, atol=atol):
            worst = np.unravel_index(np.argmax(np.abs(ana - num)), ana.shape)
            msg = (f"Jacobian mismatch for output 0 with respect to input {k} (shape "
                   f"{tuple(inputs[k].shape)}): largest difference at (input element {worst[0]}, "
                   f"output element {worst[1]}): analytical {ana[worst]:.6g} vs numerical "
                   f"{num[worst]:.6g}\nnumerical:\n{num}\nanalytical:\n{ana}")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  gen_non_contig_grad_outputs=False, raise_exception=True, seed=0):
    """True when second derivatives of ``func`` (through create_graph) match finite differences
    of its first derivatives."""
    Tensor = graph.Tensor
    inputs = _tensors(inputs)
    wrt = [k for k, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    outs = _outputs(func, inputs)
    rng = np.random.default_rng(seed)
    if grad_outputs is None:
        grad_outputs = [Tensor._make(backend.to_device(rng.standard_normal(tuple(o.shape)).astype(
            o._data.dtype), o.device), requires_grad=True) for o in outs]
    else:
        grad_outputs = list(_tensors(grad_outputs))
    n_in = len(inputs)

    def first_derivative(*args):
        ins, gouts = args[:n_in], args[n_in:]
        outs = _outputs(func, ins)
        gs = grad(outs, [ins[k] for k in wrt], gouts, create_graph=True, allow_unused=True)
        return tuple(g for g in gs if g is not None)

    return gradcheck(first_derivative, tuple(inputs) + tuple(grad_outputs), eps=eps, atol=atol,
                     rtol=rtol, raise_exception=raise_exception)
