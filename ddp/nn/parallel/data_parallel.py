"""``DataParallel`` / ``data_parallel``: PyTorch's single-process, multi-GPU wrapper.

ddp's data parallelism is one process per device (:class:`DistributedDataParallel` under the
launcher). In one process this wrapper runs the module on the device it lives on, unchanged,
so programs written for ``nn.DataParallel`` run and give the same numbers as without it; its
``state_dict`` keys carry the ``module.`` prefix, as PyTorch's do. Asked for several GPUs it
still uses one, and says so once.

Example:
    >>> net = ddp.nn.DataParallel(ddp.nn.Linear(3, 2))
    >>> net(ddp.ones(4, 3)).shape, list(net.state_dict())
    (ddp.Size([4, 2]), ['module.weight', 'module.bias'])
"""
from __future__ import annotations

import warnings

from ..module import Module

__all__ = ["DataParallel", "data_parallel"]

_warned = False


def _one_device(device_ids):
    global _warned
    ids = list(device_ids) if device_ids is not None else []
    if len(ids) > 1 and not _warned:
        _warned = True
        warnings.warn(f"DataParallel: device_ids={ids} asks for {len(ids)} GPUs in one process; "
                      f"ddp runs the module on one device (for several, one process per device: "
                      f"DistributedDataParallel under `python -m launcher -n N`)", stacklevel=3)
    return ids


class DataParallel(Module):
    """Wraps ``module``; ``forward`` calls it (on its own device). ``device_ids``,
    ``output_device`` and ``dim`` are kept for PyTorch compatibility."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: module must be an nn.Module, got "
                            f"{type(module).__name__}")
        self.module = module
        self.device_ids = _one_device(device_ids)
        self.output_device = output_device if output_device is not None else \
            (self.device_ids[0] if self.device_ids else None)
        self.dim = dim

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)


def data_parallel(module, inputs, device_ids=None, output_device=None, dim=0,
                  module_kwargs=None):
    """``module(*inputs, **module_kwargs)`` on the module's device (the functional form)."""
    _one_device(device_ids)
    if not isinstance(inputs, tuple):
        inputs = (inputs,) if inputs is not None else ()
    return module(*inputs, **(module_kwargs or {}))
