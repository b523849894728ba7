"""``ddp.nn``: modules, containers, layers, losses, ``functional``, ``init`` and ``utils``, shaped
like ``torch.nn``.

Example:
    >>> import ddp.nn as nn
    >>> net = nn.Sequential(nn.Sequential(), nn.Sequential())
    >>> len(list(net.modules()))
    3
"""
from .module import Module
from .parameter import Buffer, Parameter
from .container import (Container, ModuleDict, ModuleList, ParameterDict, ParameterList,
                        Sequential)
from . import init, parallel, utils

# ``functional`` star-imports ``_functional_layers``, ``_functional_activations`` and
# ``_functional_losses``; until all three exist it is skipped here (``import ddp.nn.functional``
# then reports which file is missing). Any other import error inside it is raised.
_FUNCTIONAL_PARTS = {f"{__name__}._functional_{part}" for part in ("layers", "activations",
                                                                   "losses")}
try:
    from . import functional
except ModuleNotFoundError as _exc:
    if _exc.name not in _FUNCTIONAL_PARTS:
        raise

# Layers (each file holds one family; see ARCHITECTURE.md)
import importlib as _importlib
for _name in ("linear", "activation", "conv", "pooling", "normalization", "dropout", "sparse", "rnn", "loss", "flatten",
              "sync_batchnorm"):
    try:
        _mod = _importlib.import_module(f".{_name}", __name__)
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_name}":
            raise
        continue
    globals().update({_k: getattr(_mod, _k) for _k in getattr(_mod, "__all__", ())})
