"""``ddp.nn``: modules, containers, layers, losses, ``functional``, ``init`` and ``utils``, shaped
like ``torch.nn``.

Example:
    >>> import ddp.nn as nn
    >>> net = nn.Sequential(nn.Sequential(), nn.Sequential())
    >>> len(list(net.modules()))
    3
"""
from .module import Module
from .parameter import Buffer, Parameter, UninitializedBuffer, UninitializedParameter
from .container import (Container, ModuleDict, ModuleList, ParameterDict, ParameterList,
                        Sequential)
from . import init, lazy, parallel, parameter, utils
from .parallel import DataParallel  # noqa: F401  (PyTorch's nn.DataParallel)

from . import functional

# Layers: one file per family, each with its ``__all__``
from .linear import *  # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .sparse import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .flatten import *  # noqa: F401,F403
from .sync_batchnorm import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .transformer import *  # noqa: F401,F403
