"""Quantized modules; the dynamic ones (int8 weights, activations quantized on the fly) live in
``ddp.ao.nn.quantized.dynamic``."""
from . import dynamic  # noqa: F401
