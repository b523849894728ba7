"""PyTorch's eager-mode dynamic quantization: ``quantize_dynamic``, ``QConfig`` and observers
(also importable as ``ddp.quantization``).

Example:
    >>> lstm = nn.LSTM(4, 8)
    >>> q = ddp.ao.quantization.quantize_dynamic(nn.Sequential(lstm), {nn.LSTM})
    >>> q[0]
    DynamicQuantizedLSTM(4, 8)
"""
from .observer import (MinMaxObserver, ObserverBase, PerChannelMinMaxObserver,  # noqa: F401
                       PlaceholderObserver, default_dynamic_quant_observer,
                       default_per_channel_weight_observer, default_weight_observer)
from .qconfig import QConfig, default_dynamic_qconfig, per_channel_dynamic_qconfig  # noqa: F401
from .quantize import get_default_dynamic_quant_module_mappings, quantize_dynamic  # noqa: F401
