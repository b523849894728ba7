"""Recurrent layers: ``RNN``, ``LSTM``, ``GRU`` and their one-step cells, with PyTorch's
arguments, parameter names, weight layout and gate order (LSTM: i, f, g, o; GRU: r, z, n), so
state_dicts interchange with ``torch.nn``.

Each layer and direction runs as one op over the whole sequence, with a hand-written backward
through time (``ddp.nn.functional._rnn``: the input projection of all steps in one matrix
product, the gates of a step in one product); the cells, autocast, projections and double
backward use the same recurrence composed of tensor operations.

Example:
    >>> lstm = ddp.nn.LSTM(input_size=3, hidden_size=5, num_layers=2)
    >>> out, (h_n, c_n) = lstm(ddp.randn(7, 4, 3))     # (seq, batch, feature)
    >>> out.shape, h_n.shape
    (ddp.Size([7, 4, 5]), ddp.Size([2, 4, 5]))
"""
from __future__ import annotations

import math
import numbers
import warnings

from .. import creation
from .._functions import cat, stack
from ..tensor import Tensor
from . import init
from .functional._dropout import dropout as _dropout
from .functional._rnn import hidden_projection as _hidden_projection
from .functional._rnn import input_gates as _input_gates
from .functional._rnn import recur, rnn_layer
from .functional._rnn import step as _step
from .module import Module
from .parameter import Parameter

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _unbind(t):
    """The slices ``t[0], t[1], ...`` (one graph node)."""
    return t.unbind(0)


def _run_direction(mode, x, state, weights, reverse):
    """One layer in one direction over ``x`` (L, N, I): returns (outputs (L, N, H), last state)."""
    res = rnn_layer(mode, x, state if mode == "LSTM" else (state,), weights, reverse)
    return res[0], (res[1], res[2]) if mode == "LSTM" else res[1]


def _as_states(name, hx, lstm):
    """``hx`` as a tuple of state tensors (``(h,)``, or ``(h, c)`` for LSTM), None if None."""
    if hx is None:
        return None
    states = tuple(hx) if lstm and isinstance(hx, (tuple, list)) else (hx,)
    if len(states) != (2 if lstm else 1) or not all(isinstance(s, Tensor) for s in states):
        raise TypeError(f"{name}: hx must be " + ("a tuple (h_0, c_0) of tensors" if lstm
                                                  else "a tensor") + f", got {type(hx).__name__}")
    return states


def _reset_uniform(module):
    """PyTorch's RNN init: every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    bound = 1.0 / math.sqrt(module.hidden_size) if module.hidden_size > 0 else 0
    for weight in module.parameters():
        init.uniform_(weight, -bound, bound)


# --------------------------------------------------------------------------- multi-layer modules

class RNNBase(Module):
    """The shared multi-layer, optionally bidirectional recurrent layer (``mode`` one of
    ``'RNN_TANH'``, ``'RNN_RELU'``, ``'LSTM'``, ``'GRU'``).

    Parameters are ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``
    (and ``weight_hr_l{k}`` for an LSTM with ``proj_size``), with ``_reverse`` for the backward
    direction, in PyTorch's order and layout.

    Example:
        >>> gru = ddp.nn.GRU(4, 8, batch_first=True, bidirectional=True)
        >>> out, h_n = gru(ddp.randn(2, 5, 4))
        >>> out.shape, h_n.shape
        (ddp.Size([2, 5, 16]), ddp.Size([2, 2, 8]))
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        if mode not in _GATES:
            raise ValueError(f"Unrecognized RNN mode: {mode}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout should be a number in range [0, 1] representing "
                             f"the probability of an element being zeroed (got {dropout!r})")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
        for what, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name}: {what} should be of type int, got: "
                                f"{type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name}: {what} must be greater than zero (got {value})")
        if proj_size < 0:
            raise ValueError(f"{name}: proj_size should be a positive integer or zero to disable "
                             f"projections (got {proj_size})")
        if proj_size and (mode != "LSTM" or proj_size >= hidden_size):
            raise ValueError(f"{name}: proj_size ({proj_size}) is only supported for LSTM and "
                             f"has to be smaller than hidden_size ({hidden_size})")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size

        gate_size = _GATES[mode] * hidden_size
        out_size = proj_size or hidden_size
        directions = 2 if bidirectional else 1
        self._flat_weights_names = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * directions
            for direction in range(directions):
                shapes = [("weight_ih", (gate_size, layer_input)),
                          ("weight_hh", (gate_size, out_size))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                suffix = "_reverse" if direction else ""
                for pname, shape in shapes:
                    full = f"{pname}_l{layer}{suffix}"
                    setattr(self, full, Parameter(creation.empty(*shape, device=device,
                                                                 dtype=dtype)))
                    self._flat_weights_names.append(full)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def flatten_parameters(self):
        """A no-op kept for compatibility (cuDNN's weight packing does not apply here)."""

    @property
    def all_weights(self):
        """The parameters, grouped per layer and direction."""
        per = len(self._flat_weights_names) // (self.num_layers * (2 if self.bidirectional else 1))
        names = self._flat_weights_names
        return [[getattr(self, n) for n in names[i:i + per]] for i in range(0, len(names), per)]

    def _weights(self, layer, direction):
        """``(w_ih, w_hh, b_ih, b_hh, w_hr)`` of one layer and direction (None where absent)."""
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        return tuple(getattr(self, f"{p}{suffix}", None)
                     for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))

    def _run_direction(self, x, state, layer, direction):
        """One layer in one direction (a quantized RNN runs its own)."""
        return _run_direction(self.mode, x, state, self._weights(layer, direction),
                              reverse=direction == 1)

    def _state_shapes(self, batch):
        layers = self.num_layers * (2 if self.bidirectional else 1)
        h_shape = (layers, batch, self.proj_size or self.hidden_size)
        return h_shape, (layers, batch, self.hidden_size)

    def forward(self, input, hx=None):
        """``input`` (L, N, H_in), (N, L, H_in) with ``batch_first``, or unbatched (L, H_in);
        ``hx`` the initial ``h_0`` ((num_layers * directions, N, H_out), zeros by default), or
        ``(h_0, c_0)`` for LSTM. Returns ``(output, h_n)`` or ``(output, (h_n, c_n))``."""
        name = type(self).__name__
        lstm = self.mode == "LSTM"
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D (unbatched) or 3D, got "
                             f"{input.ndim}D tensor of shape {tuple(input.shape)}")
        batched = input.ndim == 3
        states = _as_states(name, hx, lstm)
        if states is not None:
            for s in states:
                if s.ndim != input.ndim:
                    raise RuntimeError(f"{name}: for {input.ndim}-D input, hx should also be "
                                       f"{input.ndim}-D but got {s.ndim}-D tensor")
        if not batched:
            input = input.unsqueeze(1)
            states = None if states is None else tuple(s.unsqueeze(1) for s in states)
        elif self.batch_first:
            input = input.transpose(0, 1)
        length, batch, features = input.shape
        if features != self.input_size:
            raise RuntimeError(f"{name}: input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {features}")
        if length == 0:
            raise RuntimeError(f"{name}: Expected sequence length to be larger than 0")
        shapes = self._state_shapes(batch)[:2 if lstm else 1]
        if states is None:
            states = tuple(input.new_zeros(shape) for shape in shapes)
        for s, shape in zip(states, shapes):
            if tuple(s.shape) != shape:
                raise RuntimeError(f"{name}: Expected hidden size {shape}, got {list(s.shape)}")
            if s.dtype != input.dtype:
                raise RuntimeError(f"{name}: hx dtype {s.dtype.name} does not match the input's "
                                   f"{input.dtype.name}")
        initial = [_unbind(s) for s in states]  # per (layer, direction)

        directions = 2 if self.bidirectional else 1
        finals = []
        x = input
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                state = (initial[0][k], initial[1][k]) if lstm else initial[0][k]
                out, state = self._run_direction(x, state, layer, direction)
                outputs.append(out)
                finals.append(state)
            x = outputs[0] if directions == 1 else cat(outputs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = _dropout(x, self.dropout, training=True)

        hidden = (stack([s[0] for s in finals]), stack([s[1] for s in finals])) if lstm \
            else (stack(finals),)
        if not batched:
            x = x.squeeze(1)
            hidden = tuple(h.squeeze(1) for h in hidden)
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, (hidden if lstm else hidden[0])

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


class RNN(RNNBase):
    """Elman RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or relu).

    Example:
        >>> rnn = ddp.nn.RNN(3, 5, nonlinearity="relu")
        >>> out, h_n = rnn(ddp.randn(6, 3))   # unbatched (L, H_in)
        >>> out.shape, h_n.shape
        (ddp.Size([6, 5]), ddp.Size([1, 5]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                             f"'relu'.")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory, gates ``i, f, g, o``: ``c_t = f * c_{t-1} + i * g``,
    ``h_t = o * tanh(c_t)`` (times ``W_hr^T`` with ``proj_size``).

    Example:
        >>> lstm = ddp.nn.LSTM(3, 5, batch_first=True)
        >>> out, (h_n, c_n) = lstm(ddp.randn(2, 6, 3))
        >>> out.shape, c_n.shape
        (ddp.Size([2, 6, 5]), ddp.Size([1, 2, 5]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)


class GRU(RNNBase):
    """Gated recurrent unit, gates ``r, z, n``: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h_t = (1 - z) * n + z * h_{t-1}``.

    Example:
        >>> gru = ddp.nn.GRU(3, 5, num_layers=2)
        >>> out, h_n = gru(ddp.randn(6, 2, 3))
        >>> out.shape, h_n.shape
        (ddp.Size([6, 2, 5]), ddp.Size([2, 2, 5]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)


# --------------------------------------------------------------------------- cells

class RNNCellBase(Module):
    """One time step of an RNN/LSTM/GRU: parameters ``weight_ih``, ``weight_hh``, ``bias_ih``,
    ``bias_hh`` (None without bias), ``forward(input, hx=None)`` on (N, H_in) or (H_in,).

    Example:
        >>> cell = ddp.nn.GRUCell(3, 4)
        >>> cell(ddp.randn(2, 3)).shape
        ddp.Size([2, 4])
    """

    def __init__(self, mode, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        gate_size = _GATES[mode] * hidden_size
        self.weight_ih = Parameter(creation.empty(gate_size, input_size, device=device,
                                                  dtype=dtype))
        self.weight_hh = Parameter(creation.empty(gate_size, hidden_size, device=device,
                                                  dtype=dtype))
        for pname in ("bias_ih", "bias_hh"):
            self.register_parameter(pname, Parameter(creation.empty(gate_size, device=device,
                                                                    dtype=dtype)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def forward(self, input, hx=None):
        """The next ``h`` (or ``(h, c)`` for LSTMCell) from ``input`` and ``hx`` (zeros if None)."""
        name = type(self).__name__
        lstm = self.mode == "LSTM"
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input has inconsistent input_size: got "
                               f"{input.shape[-1]} expected {self.input_size}")
        shape = tuple(input.shape[:-1]) + (self.hidden_size,)
        states = _as_states(name, hx, lstm)
        if states is None:
            states = (input.new_zeros(shape),) * (2 if lstm else 1)
        else:
            for s in states:
                if tuple(s.shape) != shape:
                    raise RuntimeError(f"{name}: Expected hidden size {shape}, got "
                                       f"{list(s.shape)}")
        gates = _input_gates(self.mode, input, self.weight_ih, self.bias_ih, self.bias_hh)
        _, state = _step(self.mode, gates, states if lstm else states[0],
                         _hidden_projection(self.mode, self.weight_hh, self.bias_hh), None)
        return state

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class RNNCell(RNNCellBase):
    """``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or relu).

    Example:
        >>> ddp.nn.RNNCell(3, 4)(ddp.randn(2, 3)).shape
        ddp.Size([2, 4])
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity


class LSTMCell(RNNCellBase):
    """One LSTM step: returns ``(h', c')``.

    Example:
        >>> h, c = ddp.nn.LSTMCell(3, 4)(ddp.randn(2, 3))
        >>> h.shape, c.shape
        (ddp.Size([2, 4]), ddp.Size([2, 4]))
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)


class GRUCell(RNNCellBase):
    """One GRU step.

    Example:
        >>> ddp.nn.GRUCell(3, 4)(ddp.randn(3)).shape
        ddp.Size([4])
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)
