"""Dynamically quantized modules: int8 weights, float activations quantized per call
(PyTorch's ``torch.ao.nn.quantized.dynamic``).

Example:
    >>> from ddp.ao.nn.quantized.dynamic import Linear
    >>> Linear.from_float(nn.Linear(4, 2)).weight().dtype
    ddp.qint8
"""
from .linear import Linear, linear_dynamic
from .rnn import GRU, LSTM

__all__ = ["Linear", "LSTM", "GRU", "linear_dynamic"]
