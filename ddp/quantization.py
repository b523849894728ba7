"""``ddp.quantization``: the older name of ``ddp.ao.quantization`` (``torch.quantization``).

Example:
    >>> import ddp.quantization
    >>> ddp.quantization.quantize_dynamic is ddp.ao.quantization.quantize_dynamic
    True
"""
from .ao.quantization import *  # noqa: F401,F403
