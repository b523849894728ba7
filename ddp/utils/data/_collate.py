"""Turning a list of samples into a batch (:func:`default_collate`), or converting one sample
(:func:`default_convert`, used when ``batch_size=None``), with PyTorch's rules.

:func:`collate` walks containers (dicts, namedtuples, tuples, lists) and hands the leaves to a
per-type function from ``collate_fn_map``; :data:`default_collate_fn_map` stacks ddp tensors and
NumPy arrays into one ddp tensor, turns Python ints into int64 (bools into bool) and floats into
float64 tensors, NumPy scalars into tensors of their dtype, and leaves strings as they are.

Example:
    >>> import numpy as np
    >>> batch = default_collate([{"x": np.zeros(3, np.float32), "y": 1},
    ...                          {"x": np.ones(3, np.float32), "y": 2}])
    >>> batch["x"].shape, batch["y"]
    (ddp.Size([2, 3]), tensor([1, 2]))
"""
from __future__ import annotations

import collections.abc
import copy

import numpy as np

from ... import backend
from ..._functions import stack
from ...creation import as_tensor, from_numpy, tensor
from ...tensor import Tensor

__all__ = ["collate", "default_collate", "default_convert", "default_collate_fn_map"]

_ERR = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
        "found {}")


def _is_str_or_object(np_dtype):
    return np_dtype.kind in "OSUV"


def default_convert(data):
    """Convert NumPy arrays and scalars (also inside dicts, tuples and lists) to ddp tensors;
    leave everything else (Python numbers included) unchanged.

    Example:
        >>> default_convert([np.array([0, 1]), 3])
        [tensor([0, 1]), 3]
    """
    if isinstance(data, Tensor):
        return data
    elem_type = type(data)
    if elem_type.__module__ == "numpy" and not isinstance(data, (np.str_, np.bytes_)):
        if isinstance(data, np.ndarray) and _is_str_or_object(data.dtype):
            return data
        return as_tensor(data)
    if isinstance(data, collections.abc.Mapping):
        try:
            if isinstance(data, collections.abc.MutableMapping):
                clone = copy.copy(data)
                clone.update({key: default_convert(data[key]) for key in data})
                return clone
            return elem_type({key: default_convert(data[key]) for key in data})
        except TypeError:
            return {key: default_convert(data[key]) for key in data}
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return elem_type(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]  # a list, as PyTorch
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        try:
            if isinstance(data, collections.abc.MutableSequence):
                clone = copy.copy(data)
                for i, d in enumerate(data):
                    clone[i] = default_convert(d)
                return clone
            return elem_type([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data


def collate(batch, *, collate_fn_map=None):
    """Collate ``batch`` (a list of samples) with the leaf functions of ``collate_fn_map``.

    A leaf type is looked up exactly first, then with ``isinstance`` in the map's order. Each
    function is called as ``fn(batch, collate_fn_map=collate_fn_map)``.

    Example:
        >>> def first_only(batch, *, collate_fn_map=None): return batch[0]
        >>> collate([("a", 1), ("b", 2)], collate_fn_map={str: first_only, int: first_only})
        ['a', 1]
    """
    elem = batch[0]
    elem_type = type(elem)
    if collate_fn_map is not None:
        if elem_type in collate_fn_map:
            return collate_fn_map[elem_type](batch, collate_fn_map=collate_fn_map)
        for collate_type in collate_fn_map:
            if isinstance(elem, collate_type):
                return collate_fn_map[collate_type](batch, collate_fn_map=collate_fn_map)

    if isinstance(elem, collections.abc.Mapping):
        fields = {key: collate([d[key] for d in batch], collate_fn_map=collate_fn_map)
                  for key in elem}
        try:
            if isinstance(elem, collections.abc.MutableMapping):
                clone = copy.copy(elem)
                clone.update(fields)
                return clone
            return elem_type(fields)
        except TypeError:
            return fields
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return elem_type(*(collate(samples, collate_fn_map=collate_fn_map)
                           for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(e) != size for e in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        transposed = [collate(samples, collate_fn_map=collate_fn_map)
                      for samples in zip(*batch)]
        if isinstance(elem, tuple):
            return transposed  # a list, as PyTorch
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for i, value in enumerate(transposed):
                    clone[i] = value
                return clone
            return elem_type(transposed)
        except TypeError:
            return transposed
    raise TypeError(_ERR.format(elem_type))


def _collate_tensor(batch, *, collate_fn_map=None):
    return stack(batch, 0)


def _collate_ndarray(batch, *, collate_fn_map=None):
    if _is_str_or_object(batch[0].dtype):
        raise TypeError(_ERR.format(batch[0].dtype))
    try:
        stacked = np.stack(batch)
    except ValueError:
        shapes = sorted({tuple(b.shape) for b in batch})
        raise RuntimeError(f"stack expects each tensor to be equal size, but got arrays of "
                           f"shapes {shapes} in one batch") from None
    return from_numpy(stacked)


def _collate_np_scalar(batch, *, collate_fn_map=None):
    return as_tensor(batch)


def _collate_float(batch, *, collate_fn_map=None):
    return tensor(batch, dtype=backend.float64)


def _collate_int(batch, *, collate_fn_map=None):
    return tensor(batch)  # int64; bools give a bool tensor


def _collate_str(batch, *, collate_fn_map=None):
    return batch


default_collate_fn_map = {
    Tensor: _collate_tensor,
    np.ndarray: _collate_ndarray,
    (np.bool_, np.number, np.object_): _collate_np_scalar,
    float: _collate_float,
    int: _collate_int,
    str: _collate_str,
    bytes: _collate_str,
}


def default_collate(batch):
    """Stack a list of samples into a batch, recursing into dicts, namedtuples, tuples and lists.

    Tensors and NumPy arrays become one ddp tensor with a new first dimension; Python ints give
    an int64 tensor, floats a float64 tensor, NumPy scalars a tensor of their dtype; strings stay
    as they are. Tuples come back as lists, as in PyTorch.

    Example:
        >>> xs, ys = default_collate([(ddp.zeros(2), 0), (ddp.ones(2), 1)])
        >>> xs.shape, ys
        (ddp.Size([2, 2]), tensor([0, 1]))
    """
    return collate(batch, collate_fn_map=default_collate_fn_map)
