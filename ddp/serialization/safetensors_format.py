"""The safetensors format: flat ``{name: tensor}`` dicts shared with the PyTorch / Hugging Face
ecosystem (``safetensors.torch``, ``safetensors.numpy``): u64 header length, JSON header, raw
little-endian data.

Example:
    >>> save_safetensors({"w": ddp.ones(2, 3)}, tmp_path / "m.safetensors", {"step": "10"})
    >>> load_safetensors(tmp_path / "m.safetensors")["w"].shape
    ddp.Size([2, 3])
"""
from __future__ import annotations

import json
import struct
import sys

import numpy as np

from .. import backend
from ..tensor import Tensor
from . import files
from .formats import MAX_HEADER, refuse, sniff
from .files import Truncated, Corrupt, check
from .native import check_shape, parse_json
from .tensors import NP_DTYPES, Restorer, host_array, le_bytes

__all__ = ["save_safetensors", "load_safetensors", "safetensors_metadata"]


# safetensors dtype codes <-> ddp dtype names
ST_TO_NAME = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
              "BOOL": "bool"}
NAME_TO_ST = {v: k for k, v in ST_TO_NAME.items()}
# the order of the safetensors library's Dtype enum (the codes ddp supports), which its writer
# sorts by
ST_ORDER = ["BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "F64", "I64"]


def read(f, head, name, restore, device_name="cpu"):
    """Read a safetensors file whose first 9 bytes are ``head``; return (tensors, metadata)."""
    (hlen,) = struct.unpack("<Q", head[:8])
    check(hlen <= MAX_HEADER, f"implausible safetensors header length {hlen}")
    files.ensure_available(f, hlen - (len(head) - 8), "the safetensors header")
    header = parse_json(head[8:] + files.read_exact(f, hlen - (len(head) - 8)),
                        "safetensors header")
    check(isinstance(header, dict), "bad safetensors header")
    metadata = header.pop("__metadata__", None)
    check(metadata is None or (isinstance(metadata, dict) and
                               all(isinstance(v, str) for v in metadata.values())),
          "bad __metadata__")
    entries = []
    for key, info in header.items():
        check(isinstance(info, dict), f"bad entry for {key!r}")
        code = info.get("dtype")
        if code not in ST_TO_NAME:
            raise RuntimeError(f"ddp.load: {name}: tensor {key!r} has safetensors dtype {code!r}, "
                               f"which ddp does not support (supported: "
                               f"{', '.join(ST_TO_NAME)})")
        dt = NP_DTYPES[ST_TO_NAME[code]]
        offs = info.get("data_offsets")
        check(isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
              and 0 <= offs[0] <= offs[1], f"bad data_offsets for {key!r}")
        check_shape(info.get("shape"), dt, offs[1] - offs[0])
        entries.append((offs[0], offs[1], key, dt, info["shape"]))
    order = sorted(entries, key=lambda e: (e[0], e[1]))
    end = 0
    for b, e, key, _, _ in order:
        check(b >= end, f"tensor {key!r} overlaps another one")
        end = e
    files.ensure_available(f, end, "the data")
    arrays, pos = {}, 0
    for b, e, key, dt, shape in order:
        files.skip(f, b - pos)
        arr = files.read_array(f, dt, shape)
        if sys.byteorder == "big":  # pragma: no cover
            arr.byteswap(inplace=True)
        arrays[key] = arr
        pos = e
    out = {key: Tensor._make(restore(arrays[key], device_name)) for _, _, key, _, _ in entries}
    return out, metadata


def save_safetensors(state_dict, path, metadata=None):
    """Write ``{name: tensor}`` to ``path`` (atomically) or a binary file object in the
    safetensors format, readable by ``safetensors.torch.load_file``, ``safetensors.numpy`` and
    Hugging Face tools.

    ``metadata`` is an optional ``{str: str}`` dict stored as ``__metadata__``. Tensors may live
    on any device and have any ddp dtype; NumPy arrays are accepted too.

    Example:
        >>> save_safetensors({"w": ddp.ones(2, 3)}, tmp_path / "m.safetensors", {"step": "10"})
        >>> load_safetensors(tmp_path / "m.safetensors")["w"].shape
        ddp.Size([2, 3])
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"save_safetensors: expected a dict of tensors, got "
                        f"{type(state_dict).__name__}")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError("save_safetensors: metadata must be a dict of str to str")
    items = []
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"save_safetensors: keys must be str, got {key!r}")
        if key == "__metadata__":
            raise ValueError("save_safetensors: '__metadata__' is reserved")
        arr = value._data if isinstance(value, Tensor) else value
        if not isinstance(arr, np.ndarray) and not backend.is_cuda_array(arr):
            raise TypeError(f"save_safetensors: {key!r} is a {type(value).__name__}, not a tensor")
        if arr.dtype.name not in NAME_TO_ST:
            raise TypeError(f"save_safetensors: {key!r} has dtype {arr.dtype}, which safetensors "
                            f"(in ddp) does not support")
        items.append((key, arr))
    # the library's order (its Dtype enum descending, then the name): the same tensors give the
    # same bytes as safetensors.numpy.save, and itemsizes never grow, so every tensor is aligned
    items.sort(key=lambda kv: (-ST_ORDER.index(NAME_TO_ST[kv[1].dtype.name]), kv[0]))
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    for key, arr in items:
        nbytes = int(arr.size) * arr.dtype.itemsize
        header[key] = {"dtype": NAME_TO_ST[arr.dtype.name], "shape": [int(s) for s in arr.shape],
                       "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)

    def write(fh):
        files.write_bytes(fh, struct.pack("<Q", len(hb)) + hb)
        for _, arr in items:
            files.write_bytes(fh, le_bytes(host_array(arr)))

    if files.is_path(path):
        with files.atomic_write(path) as fh:
            write(fh)
    else:
        write(path)


def load_safetensors(path, device="cpu"):
    """Read a safetensors file (path or binary file object) into a dict of tensors on
    ``device``.

    Example:
        >>> save_safetensors({"b": ddp.zeros(3)}, tmp_path / "m.safetensors")
        >>> load_safetensors(tmp_path / "m.safetensors")
        {'b': tensor([0., 0., 0.])}
    """
    return _load(path, device)[0]


def safetensors_metadata(path):
    """The ``__metadata__`` dict of a safetensors file (``None`` when it has none).

    Example:
        >>> save_safetensors({"b": ddp.zeros(1)}, tmp_path / "m.st", {"epoch": "3"})
        >>> safetensors_metadata(tmp_path / "m.st")
        {'epoch': '3'}
    """
    return _load(path, "cpu")[1]


def _load(path, device):
    name = files.name_of(path)
    restore = Restorer(device, name)
    with files.opened(path) as fh:
        head = files.read_upto(fh, 9)
        kind = sniff(head)
        if kind != "safetensors":
            if kind == "ddp":
                raise RuntimeError(f"load_safetensors: {name} is a ddp.save file; use ddp.load")
            raise refuse(kind, name, head, "load_safetensors")
        try:
            return read(fh, head, name, restore, str(backend.CPU))
        except (Truncated, Corrupt) as exc:
            raise RuntimeError(f"ddp.load: {name} is corrupt or truncated: {exc}") from None
