"""``ddp.utils.hooks``, as ``torch.utils.hooks``: the handle every ``register_*_hook`` returns.

The class itself lives in :mod:`ddp.autograd.hooks` (tensors' gradient hooks need it, and the
tensor sits on a lower floor than this package); this is its public name.

Example:
    >>> from ddp.utils.hooks import RemovableHandle
    >>> isinstance(ddp.nn.Linear(1, 1).register_forward_hook(lambda *a: None), RemovableHandle)
    True
"""
from ..autograd.hooks import RemovableHandle

__all__ = ["RemovableHandle"]
