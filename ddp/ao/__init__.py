"""``ddp.ao``: PyTorch's architecture-optimization namespace (``ddp.ao.quantization``,
``ddp.ao.nn.quantized.dynamic``).

Example:
    >>> import ddp.ao.quantization
    >>> callable(ddp.ao.quantization.quantize_dynamic)
    True
"""
from . import nn, quantization  # noqa: F401
