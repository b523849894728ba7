"""Datasets, samplers and the DataLoader, with the API of ``torch.utils.data``.

Example:
    >>> import ddp
    >>> from ddp.utils.data import DataLoader, TensorDataset
    >>> ds = TensorDataset(ddp.randn(10, 3), ddp.arange(10))
    >>> x, y = next(iter(DataLoader(ds, batch_size=4, shuffle=True)))
    >>> x.shape, y.shape
    (ddp.Size([4, 3]), ddp.Size([4]))

``DistributedSampler`` (the distributed layer's, in ``distributed.py``) is exported here once
that module exists.
"""
import importlib.util as _importlib_util

from ._collate import collate, default_collate, default_collate_fn_map, default_convert
from .dataloader import DataLoader, WorkerInfo, get_worker_info
from .dataset import (ChainDataset, ConcatDataset, Dataset, IterableDataset, StackDataset, Subset,
                      TensorDataset, random_split)
from .sampler import (BatchSampler, RandomSampler, Sampler, SequentialSampler,
                      SubsetRandomSampler, WeightedRandomSampler)

__all__ = ["BatchSampler", "ChainDataset", "ConcatDataset", "DataLoader", "Dataset",
           "IterableDataset", "RandomSampler", "Sampler", "SequentialSampler", "StackDataset",
           "Subset", "SubsetRandomSampler", "TensorDataset", "WeightedRandomSampler", "WorkerInfo",
           "collate", "default_collate", "default_collate_fn_map", "default_convert",
           "get_worker_info", "random_split"]

# The seam for the distributed layer: import its sampler when its module is present (errors
# inside that module are not hidden).
if _importlib_util.find_spec(__name__ + ".distributed") is not None:
    from .distributed import DistributedSampler  # noqa: F401
    __all__.append("DistributedSampler")
