"""``ddp.nn.functional``: the functional form of every layer, activation and loss.

Example:
    >>> import ddp.nn.functional as F
    >>> F.relu(ddp.tensor([-1.0, 2.0]))
    tensor([0., 2.])
"""
from __future__ import annotations

from ._functional_layers import *  # noqa: F401,F403  linear, conv, pooling, norms, dropout, ...
from ._functional_activations import *  # noqa: F401,F403  relu, gelu, softmax, ...
from ._functional_losses import *  # noqa: F401,F403  cross_entropy, mse_loss, ...
