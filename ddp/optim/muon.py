"""Muon: momentum SGD whose update for each 2-D parameter is orthogonalized by Newton-Schulz
iterations (MomentUm Orthogonalized by Newton-schulz, after Keller Jordan), as
``torch.optim.Muon``.

PyTorch runs the iterations in bfloat16; here they run on float32 arrays rounded to bfloat16
after each operation (round to nearest even, by bit arithmetic, the same on NumPy and CuPy),
which gives PyTorch's values up to the summation order inside the matrix products.

Example:
    >>> w = ddp.nn.Parameter(ddp.ones(2, 3))
    >>> opt = ddp.optim.Muon([w], lr=0.01)
    >>> (w * w).sum().backward(); opt.step()
    >>> list(opt.state[w])
    ['momentum_buffer']
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import Tensor
from .optimizer import Optimizer, lerp_, zeros_state

__all__ = ["Muon", "zeropower_via_newtonschulz"]

EPS = 1e-7
DEFAULT_A, DEFAULT_B, DEFAULT_C = 3.4445, -4.7750, 2.0315   # from Keller Jordan's Muon post
DEFAULT_NS_STEPS = 5


def _bf16(x):
    """Round a float32 array to the nearest bfloat16 value (ties to even), kept as float32."""
    xp = backend.get_array_module(x)
    bits = xp.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bits = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (bits & np.uint32(0xFFFF0000)).view(np.float32)


def zeropower_via_newtonschulz(grad, ns_coefficients, ns_steps, eps):
    """An approximately orthogonal matrix with ``grad``'s singular vectors (``U V^T`` of its
    SVD, singular values pushed towards 1) by ``ns_steps`` quintic Newton-Schulz iterations
    ``X = a X + (b G + c G²) X`` with ``G = X X^T``, in bfloat16 arithmetic as PyTorch's.

    Example:
        >>> q = zeropower_via_newtonschulz(np.diag([3.0, 0.5]).astype(np.float32),
        ...                                (3.4445, -4.7750, 2.0315), 5, 1e-7)
        >>> bool(np.all((0.6 < np.diag(q)) & (np.diag(q) < 1.2)))
        True
    """
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if grad.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    xp = backend.get_array_module(grad)
    a, b, c = (np.float32(v) for v in ns_coefficients)
    x = _bf16(grad.astype(np.float32))
    tall = grad.shape[0] > grad.shape[1]
    if tall:
        x = xp.ascontiguousarray(x.T)
    norm = _bf16(xp.sqrt(xp.sum(x * x, dtype=np.float32)).reshape(1))
    norm = xp.maximum(norm, _bf16(xp.full(1, eps, np.float32)))
    x = _bf16(x / norm)   # spectral norm at most 1
    for _ in range(ns_steps):
        gram = _bf16(x @ x.T)
        gram_update = _bf16(b * gram + c * (gram @ gram))
        x = _bf16(a * x + gram_update @ x)
    return x.T if tall else x


def _adjust_lr(lr, adjust_lr_fn, shape):
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


class Muon(Optimizer):
    """Muon (Jordan et al.), as ``torch.optim.Muon``: for 2-D parameters only (use another
    optimizer for biases, norms and embeddings).

    Args:
        params: parameters or parameter groups (2-D) to optimize.
        lr: learning rate (default 1e-3).
        weight_decay: decoupled weight decay (default 0.1).
        momentum: momentum factor (default 0.95).
        nesterov: Nesterov momentum (default True).
        ns_coefficients: the quintic's (a, b, c) (default (3.4445, -4.775, 2.0315)).
        eps: the floor of the update's norm before the iterations (default 1e-7).
        ns_steps: Newton-Schulz iterations (default 5).
        adjust_lr_fn: ``None``/``"original"`` (``lr * sqrt(max(1, rows / cols))``) or
            ``"match_rms_adamw"`` (``lr * 0.2 * sqrt(max(rows, cols))``).

    State per parameter: ``momentum_buffer``.

    Example:
        >>> opt = ddp.optim.Muon([ddp.nn.Linear(4, 3).weight], lr=0.02, momentum=0.9)
    """

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(DEFAULT_A, DEFAULT_B, DEFAULT_C), eps=EPS,
                 ns_steps=DEFAULT_NS_STEPS, adjust_lr_fn=None):
        # Muon's own messages (PyTorch words them unlike the older optimizers')
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 <= momentum:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                        adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError("Muon only supports 2D parameters whereas we found a "
                                     f"parameter with size: {p.size()}")

    def _options(self, group):
        return group  # read per parameter below

    def _update(self, p, group):
        grad = p.grad._data
        if grad.ndim != 2:
            raise ValueError("Param gradient must be a 2D matrix")
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = zeros_state(p)
        buf = state["momentum_buffer"]._data
        xp = backend.get_array_module(buf)
        lr, momentum = float(group["lr"]), float(group["momentum"])
        lerp_(buf, grad, 1 - momentum, xp.empty_like(buf))
        if group["nesterov"]:
            update = grad.copy()
            lerp_(update, buf, momentum, xp.empty_like(buf))
        else:
            update = buf
        update = zeropower_via_newtonschulz(update, group["ns_coefficients"], group["ns_steps"],
                                            group["eps"])
        p._data *= 1 - lr * float(group["weight_decay"])
        p._data += update.astype(p._data.dtype) * -_adjust_lr(lr, group["adjust_lr_fn"], p.shape)
