"""The benchmark models, written once for any library with PyTorch's API (``ddp`` or
``torch``), so that both frameworks time the very same network.

=============  ==========================================================  ============
name           network                                                     input
=============  ==========================================================  ============
``mlp``        Linear 784-1024-1024-10 with ReLUs (1.86 M parameters)      784
``cnn``        2 × (Conv 3×3, ReLU, MaxPool 2) + Linear 1568-128-10         1×28×28
``lstm``       LSTM 28→128 over 28 rows of a 28×28 image, Linear 128-10     28×28
``transformer``  Linear 28→64, 2 TransformerEncoderLayers (4 heads,        28×28
               feed-forward 128), mean over the 28 tokens, Linear 64-10
=============  ==========================================================  ============

Example:
    >>> net = build(ddp, "mlp")
    >>> sum(p.numel() for p in net.parameters())
    1863690
    >>> INPUT_SHAPES["cnn"]
    (1, 28, 28)
"""
from __future__ import annotations

MODELS = ("mlp", "cnn", "lstm", "transformer")
INPUT_SHAPES = {"mlp": (784,), "cnn": (1, 28, 28), "lstm": (28, 28), "transformer": (28, 28)}
TITLES = {"mlp": "MLP 784-1024-1024-10", "cnn": "small CNN", "lstm": "LSTM 28-128",
          "transformer": "Transformer encoder 2×64"}


def mlp(lib):
    nn = lib.nn
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


def small_cnn(lib):
    nn = lib.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def row_lstm(lib):
    nn = lib.nn

    class RowLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(28, 128, batch_first=True)
            self.head = nn.Linear(128, 10)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.head(h[-1])
    return RowLSTM()


class ModelUnavailable(RuntimeError):
    """A benchmark model needs a layer this library does not have."""


def require(lib, name):
    """Raise :class:`ModelUnavailable` when ``lib`` lacks a layer that model ``name`` needs.

    Example:
        >>> require(ddp, "mlp")     # always there
    """
    if name == "transformer" and not (hasattr(lib.nn, "TransformerEncoderLayer")
                                      and hasattr(lib.nn, "TransformerEncoder")):
        raise ModelUnavailable(
            f"--model transformer needs {lib.__name__}.nn.TransformerEncoderLayer and "
            f"TransformerEncoder, which this version of {lib.__name__} does not have; use "
            f"--model mlp, cnn or lstm")


def transformer(lib):
    nn = lib.nn
    require(lib, "transformer")

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(28, 64)
            layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, dropout=0.0,
                                               batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2)
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.encoder(self.embed(x)).mean(1))
    return Encoder()


BUILDERS = {"mlp": mlp, "cnn": small_cnn, "lstm": row_lstm, "transformer": transformer}


def build(lib, name):
    """The model ``name`` built with ``lib``'s ``nn`` (seed it first for identical weights)."""
    return BUILDERS[name](lib)
