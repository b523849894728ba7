"""Shared pieces of the examples: bundled data sets as tensors, a training epoch, evaluation,
``--config FILE`` (YAML, see configs/) and the rank-0 progress bar.

Data come from scikit-learn's bundled sets (no downloads): digits (8x8 images, 10 classes),
breast cancer (30 features, binary) and diabetes (10 features, regression).
"""
from __future__ import annotations

import numpy as np

import ddp
from ddp.utils.data import DataLoader, TensorDataset
from launcher import config


def bundled(name, test_fraction=0.25, seed=0, standardize=True):
    """(x_train, y_train, x_test, y_test) NumPy arrays of a scikit-learn bundled data set,
    split with a fixed seed; features standardized with the training split's statistics."""
    from sklearn import datasets
    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
              "diabetes": datasets.load_diabetes}[name]
    x, y = loader(return_X_y=True)
    x = x.astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    if standardize:
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def device():
    """This rank's device: the GPU the launcher pinned it to (``DDP_DEVICE``), else the current
    GPU when there is one, else the CPU — so the same script trains on either."""
    import os
    if os.environ.get("DDP_DEVICE"):
        return ddp.device(os.environ["DDP_DEVICE"])
    return ddp.device("cuda", ddp.cuda.current_device()) if ddp.cuda.is_available() \
        else ddp.device("cpu")


def _device_of(model):
    return next(model.parameters()).device


def loader(x, y, batch_size=64, shuffle=True, seed=0, sampler=None):
    """A DataLoader over NumPy arrays (targets as int64 class indices or float32 values)."""
    y_t = ddp.tensor(y) if y.dtype.kind in "iu" else ddp.tensor(y.astype(np.float32))
    generator = ddp.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(ddp.tensor(x), y_t), batch_size=batch_size,
                      shuffle=shuffle and sampler is None, sampler=sampler, generator=generator)


def train_epoch(model, data, loss_fn, optimizer):
    """One pass over ``data``; returns the mean training loss."""
    model.train()
    total, count = 0.0, 0
    dev = _device_of(model)
    for xb, yb in data:
        xb, yb = xb.to(dev), yb.to(dev)
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(xb)
        count += len(xb)
    return total / count


@ddp.no_grad()
def predict(model, x, batch_size=512):
    """Model outputs for a NumPy array of inputs, in eval mode, as one tensor."""
    model.eval()
    dev = _device_of(model)
    return ddp.cat([model(ddp.tensor(x[i:i + batch_size], device=dev)).cpu()
                    for i in range(0, len(x), batch_size)])


def parse_args(parser, argv=None):
    """``parser.parse_args(argv)`` plus ``--config FILE``: a YAML file of the example's options
    (``epochs: 5``), under the flags given on the command line."""
    config.add_config_argument(parser)
    return config.parse_args(parser, argv)
