"""``ddp.nn.functional``: the functional form of every layer, activation and loss.

One file per family of layers (``_conv``, ``_pooling``, ``_normalization``, ...), each holding
its ops' forward and backward side by side; this package's namespace is the public surface.

Example:
    >>> import ddp.nn.functional as F
    >>> F.relu(ddp.tensor([-1.0, 2.0]))
    tensor([0., 2.])
    >>> x = ddp.randn(2, 3, 8, 8)
    >>> F.conv2d(x, ddp.randn(4, 3, 3, 3), padding=1).shape
    ddp.Size([2, 4, 8, 8])
    >>> F.max_pool2d(x, 2).shape
    ddp.Size([2, 3, 4, 4])
"""
from __future__ import annotations

from ._linear import linear
from ._conv import conv1d, conv2d, conv_transpose2d
from ._pooling import max_pool1d, max_pool2d, avg_pool1d, avg_pool2d, adaptive_avg_pool1d, adaptive_avg_pool2d
from ._normalization import batch_norm, layer_norm, group_norm, instance_norm, normalize
from ._dropout import dropout, dropout1d, dropout2d
from ._embedding import embedding, one_hot
from ._padding import pad
from ._fold import unfold, fold
from ._interpolate import interpolate
from ._activations import *  # noqa: F401,F403  relu, gelu, softmax, ... (their __all__)
from ._losses import *  # noqa: F401,F403  cross_entropy, mse_loss, ... (their __all__)
from ._attention import (scaled_dot_product_attention, multi_head_attention_forward,
                         _canonical_mask, _none_or_dtype)
