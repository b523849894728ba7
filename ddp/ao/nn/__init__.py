"""Quantized modules (``ddp.ao.nn.quantized.dynamic``)."""
from . import quantized  # noqa: F401
