"""``QConfig``: which observers quantize a module's activations and weights (PyTorch's
``torch.ao.quantization.qconfig``).

Example:
    >>> per_channel_dynamic_qconfig.weight().qscheme
    ddp.per_channel_symmetric
"""
from __future__ import annotations

from collections import namedtuple

from .observer import (default_dynamic_quant_observer, default_per_channel_weight_observer,
                       default_weight_observer)

__all__ = ["QConfig", "default_dynamic_qconfig", "per_channel_dynamic_qconfig"]


class QConfig(namedtuple("QConfig", ["activation", "weight"])):
    """Observer factories (``Observer.with_args(...)``) for the activation and the weight."""
    __slots__ = ()


default_dynamic_qconfig = QConfig(activation=default_dynamic_quant_observer,
                                  weight=default_weight_observer)
per_channel_dynamic_qconfig = QConfig(activation=default_dynamic_quant_observer,
                                      weight=default_per_channel_weight_observer)
