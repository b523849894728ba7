"""Dynamically quantized LSTM and GRU: int8 weights, the float recurrence of ``nn.LSTM`` /
``nn.GRU`` with every matrix product a :func:`linear_dynamic` (PyTorch's
``torch.ao.nn.quantized.dynamic.LSTM``/``GRU``).

As PyTorch on the CPU, the input projection of all time steps is one product (one activation
scale for the whole sequence), the hidden projection one per step; ``b_ih`` goes with the first,
``b_hh`` with the second.

Example:
    >>> from ddp.ao.nn.quantized.dynamic import LSTM
    >>> q = LSTM.from_float(nn.LSTM(3, 5, num_layers=2))
    >>> out, (h, c) = q(ddp.randn(7, 2, 3))
    >>> out.shape, q.get_weight()["weight_ih_l1"].dtype
    (ddp.Size([7, 2, 5]), ddp.qint8)
"""
from __future__ import annotations

from .....backend import qint8
from .....nn import rnn as _rnn
from .....nn.module import Module
from .linear import linear_dynamic, quantize_weight, weight_observer_of

__all__ = ["RNNBase", "LSTM", "GRU"]

_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class RNNBase(_rnn.RNNBase):
    """The shared quantized recurrent layer: ``nn.RNNBase``'s forward (shapes, states, layers,
    directions) with quantized products per layer and direction."""
    _FLOAT_MODULE = None

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=qint8):
        float_cls = {"LSTM": _rnn.LSTM, "GRU": _rnn.GRU}[mode]
        self._init_from(float_cls(input_size, hidden_size, num_layers, bias, batch_first,
                                  dropout, bidirectional), dtype)

    def _init_from(self, mod, dtype=qint8, observer_of=None):
        if dtype is not qint8:
            raise RuntimeError(f"Unsupported dtype for dynamic RNN quantization: {dtype} (ddp "
                               f"supports ddp.qint8)")
        if not mod.bias:
            raise AssertionError("mod.bias must be True")
        Module.__init__(self)
        for key in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
                    "dropout", "bidirectional", "proj_size"):
            setattr(self, key, getattr(mod, key))
        if self.proj_size:
            raise RuntimeError("dynamic quantization of an LSTM with proj_size is not supported")
        self.dtype = dtype
        self.training = False
        self._qweights = {}  # "weight_ih_l0" -> QTensor, "bias_ih_l0" -> float Tensor, ...
        for name in mod._flat_weights_names:
            p = getattr(mod, name)
            if name.startswith("weight"):
                observer = (observer_of or (lambda m: weight_observer_of(m)))(mod)
                observer(p)
                self._qweights[name] = quantize_weight(p, observer)
            else:
                self._qweights[name] = p.detach().clone()

    def _run_direction(self, x, state, layer, direction):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        w_ih, w_hh, b_ih, b_hh = (self._qweights[n + suffix] for n in _NAMES)
        steps = linear_dynamic(x, w_ih, b_ih).unbind(0)
        return _rnn.recur(self.mode, steps, state, lambda h: linear_dynamic(h, w_hh, b_hh),
                          None, direction == 1)

    def get_weight(self):
        return {k: v for k, v in self._qweights.items() if k.startswith("weight")}

    def get_bias(self):
        return {k: v for k, v in self._qweights.items() if k.startswith("bias")}

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name, value in self._qweights.items():
            destination[prefix + name] = value

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for name in self._qweights:
            if prefix + name in state_dict:
                self._qweights[name] = state_dict.pop(prefix + name)
            elif strict:
                missing_keys.append(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, False, missing_keys,
                                      unexpected_keys, error_msgs)

    def _get_name(self):
        return "DynamicQuantized" + type(self).__name__

    @property
    def all_weights(self):
        raise AttributeError("a quantized RNN has no float weights; see get_weight()")

    def flatten_parameters(self):
        pass

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """The quantized copy of a float ``nn.LSTM``/``nn.GRU`` (its weights quantized by the
        module's ``qconfig``'s weight observer, one observer per weight)."""
        if type(mod) is not cls._FLOAT_MODULE:
            raise AssertionError(f"nn.quantized.dynamic.{cls.__name__}.from_float only works "
                                 f"for nn.{cls.__name__}, got {type(mod).__name__}")
        q = cls.__new__(cls)
        q._init_from(mod)
        return q


class LSTM(RNNBase):
    """A dynamically quantized ``nn.LSTM`` (same arguments, inputs and outputs).

    Example:
        >>> LSTM(3, 4, batch_first=True)(ddp.randn(2, 6, 3))[0].shape
        ddp.Size([2, 6, 4])
    """
    _FLOAT_MODULE = _rnn.LSTM

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)


class GRU(RNNBase):
    """A dynamically quantized ``nn.GRU``.

    Example:
        >>> GRU(3, 4)(ddp.randn(6, 2, 3))[1].shape
        ddp.Size([1, 2, 4])
    """
    _FLOAT_MODULE = _rnn.GRU

    def __init__(self, *args, **kwargs):
        super().__init__("GRU", *args, **kwargs)
