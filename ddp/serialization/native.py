"""The ddp file format (version 1): JSON header, aligned raw payload, sha256; no pickle.

It stores tensors, Parameters, NumPy arrays and nested dicts / OrderedDicts / lists / tuples /
sets of them with plain Python values (int, float incl. inf/nan, str, bool, None, bytes,
``ddp.dtype``, ``ddp.device``, ``ddp.Size``). All integers little-endian::

    0   8 bytes  magic b"\\x89DDP\\r\\n\\x1a\\n"
    8   u32      format version (1)
    12  u32      crc32 of the header
    16  u64      header length H
    24  H bytes  header: UTF-8 JSON {"format", "version", "arrays": [...], "payload_nbytes",
                 "root": tree}; zero padding up to a multiple of 64 bytes
        payload  raw little-endian C-order bytes of each array, each at a 64-byte aligned
                 "offset" (relative to the payload start) given in its "arrays" entry, which
                 also holds "kind" (tensor, parameter, ndarray, npscalar, bytes, bytearray,
                 qtensor), "dtype", "shape", "nbytes", for tensors "device" and
                 "requires_grad", for quantized tensors (their integers) "qdtype" and "scale"
                 and "zero_point" or "scales", "zero_points" and "axis"
    end 32 bytes sha256 of every byte before it

The JSON tree stores str, int, bool, null, finite floats and lists as themselves; every JSON
object is a tagged node ``{"$": tag, ...}``: ``float`` (inf/-inf/nan), ``tuple``, ``dict`` and
``odict`` (``"items"``: ``[[key, value], ...]``, so int/tuple keys survive), ``set``,
``frozenset``, ``size``, ``dtype``, ``device`` and ``ref`` (index into ``"arrays"``).

Example:
    >>> import io
    >>> buf = io.BytesIO(); ddp.save({"w": ddp.ones(2)}, buf, format="ddp")
    >>> buf.getvalue()[:8] == MAGIC
    True
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
import zlib
from collections import OrderedDict

import numpy as np

from .. import backend
from ..qtensor import QTensor, file_meta, from_file_entry
from ..tensor import Size, Tensor
from . import files
from .files import Corrupt, check
from .tensors import NP_DTYPES, TENSOR_DTYPES, host_array, le_bytes

MAGIC = b"\x89DDP\r\n\x1a\n"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<IIQ")   # version, header crc32, header length (after the magic)
_PREAMBLE_SIZE = len(MAGIC) + _PREAMBLE.size  # 24
_ALIGN = 64
_DIGEST_SIZE = 32
_MAX_HEADER = 1 << 31               # sanity bound before allocating a header buffer
_KINDS = ("tensor", "parameter", "ndarray", "npscalar", "bytes", "bytearray", "qtensor")
_QTENSOR_STORAGE = {"qint8": "int8", "quint8": "uint8", "qint32": "int32"}


def _align(n, a=_ALIGN):
    return (n + a - 1) // a * a


# --------------------------------------------------------------------------- encoding

class Unsupported(TypeError):
    """An object the ddp format cannot hold (``ddp.save`` then pickles, as torch.save does)."""


class ReferenceCycle(Unsupported, ValueError):
    """A container that contains itself (the ddp format stores trees)."""


class Encoder:
    """Turn an object tree into a JSON-able tree plus a list of arrays to store."""

    def __init__(self):
        self.arrays = []     # header entries
        self.sources = []    # what to write for each entry: a (host or device) array or bytes
        self._ids = {}       # id(tensor) -> index, so one tensor object is stored once
        self._keep = []      # keep encoded objects alive so their ids stay unique
        self.offset = 0
        self._active = set()

    def _add(self, obj, kind, arr, meta=None):
        key = id(obj)
        if key in self._ids:
            return {"$": "ref", "id": self._ids[key]}
        nbytes = int(arr.size) * arr.dtype.itemsize
        entry = {"kind": kind, "dtype": arr.dtype.name, "shape": [int(s) for s in arr.shape],
                 "offset": self.offset, "nbytes": nbytes}
        if meta:
            entry.update(meta)
        self.offset = _align(self.offset + nbytes)
        idx = len(self.arrays)
        self.arrays.append(entry)
        self.sources.append(arr)
        self._ids[key] = idx
        self._keep.append(obj)
        return {"$": "ref", "id": idx}

    def encode(self, obj, where="obj"):
        t = type(obj)
        if obj is None or t is bool or t is int or t is str:
            return obj
        if t is float:
            if math.isfinite(obj):
                return obj
            return {"$": "float", "v": "nan" if obj != obj else ("inf" if obj > 0 else "-inf")}
        if isinstance(obj, QTensor):  # its integers, and the scales as JSON numbers
            return self._add(obj, "qtensor", host_array(obj._int), file_meta(obj))
        if isinstance(obj, Tensor):
            from ..nn.parameter import Parameter
            kind = "parameter" if isinstance(obj, Parameter) else "tensor"
            return self._add(obj, kind, obj._data, {"device": str(obj.device),
                                                    "requires_grad": bool(obj._requires_grad)})
        if t is np.ndarray or isinstance(obj, np.generic):
            kind = "ndarray" if t is np.ndarray else "npscalar"
            arr = obj if t is np.ndarray else np.asarray(obj)
            if arr.dtype.name not in NP_DTYPES:
                raise Unsupported(f"ddp.save: cannot store a NumPy array of dtype {arr.dtype} "
                                  f"(at {where}); supported: {', '.join(NP_DTYPES)}")
            return self._add(obj, kind, arr)
        if t is bytes or t is bytearray:
            return self._add(obj, t.__name__, np.frombuffer(bytes(obj), np.uint8))
        if isinstance(obj, backend.dtype):
            return {"$": "dtype", "v": obj.name}
        if isinstance(obj, backend.device):
            return {"$": "device", "v": str(obj)}
        if t in (list, tuple, Size, set, frozenset, dict, OrderedDict):
            if id(obj) in self._active:
                raise ReferenceCycle(f"ddp.save: the object contains a reference cycle (at {where})")
            self._active.add(id(obj))
            try:
                return self._container(obj, t, where)
            finally:
                self._active.discard(id(obj))
        hint = ""
        if hasattr(obj, "state_dict") and callable(obj.state_dict):
            hint = "; save its state_dict() instead (ddp.save(x.state_dict(), f))"
        raise Unsupported(
            f"ddp.save: the ddp format cannot store an object of type "
            f"{t.__module__}.{t.__qualname__} (at {where}); it stores tensors, Parameters, NumPy "
            f"arrays, dict, OrderedDict, list, tuple, set, int, float, str, bool, None, bytes, "
            f"ddp.dtype and ddp.device{hint}")

    def _container(self, obj, t, where):
        if t is list:
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if t in (tuple, Size, set, frozenset):
            tag = {tuple: "tuple", Size: "size", set: "set", frozenset: "frozenset"}[t]
            items = obj if t in (tuple, Size) else sorted(obj, key=repr)
            return {"$": tag, "v": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(items)]}
        node = {"$": "dict" if t is dict else "odict",
                "items": [[self.encode(k, f"{where} key {k!r}"), self.encode(v, f"{where}[{k!r}]")]
                          for k, v in obj.items()]}
        meta = getattr(obj, "_metadata", None) if t is OrderedDict else None
        if meta is not None:  # Module.state_dict() records module versions here
            node["meta"] = self.encode(meta, f"{where}._metadata")
        return node


def encode(obj):
    """(header, sources) of ``obj``; raises :class:`Unsupported` for what the format can't hold."""
    enc = Encoder()
    try:
        root = enc.encode(obj)
    except RecursionError:
        raise Unsupported("ddp.save: the object nests too deeply for the ddp format") from None
    header = {"format": "ddp.save", "version": FORMAT_VERSION, "byteorder": "little",
              "arrays": enc.arrays, "payload_nbytes": enc.offset, "root": root}
    return header, enc.sources


def write(fh, header, sources):
    header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    h = hashlib.sha256()

    def put(data):
        h.update(data)
        files.write_bytes(fh, data)

    put(MAGIC + _PREAMBLE.pack(FORMAT_VERSION, zlib.crc32(header_bytes), len(header_bytes)))
    put(header_bytes)
    put(b"\0" * (_align(_PREAMBLE_SIZE + len(header_bytes)) - _PREAMBLE_SIZE - len(header_bytes)))
    pos = 0
    for entry, src in zip(header["arrays"], sources):
        if entry["offset"] > pos:
            put(b"\0" * (entry["offset"] - pos))
        put(le_bytes(host_array(src)))
        pos = entry["offset"] + entry["nbytes"]
    if header["payload_nbytes"] > pos:
        put(b"\0" * (header["payload_nbytes"] - pos))
    files.write_bytes(fh, h.digest())


# --------------------------------------------------------------------------- decoding

def _np_dtype(name, allowed=NP_DTYPES):
    check(isinstance(name, str) and name in allowed, f"unsupported dtype {name!r}")
    return NP_DTYPES[name]


def check_shape(shape, dtype, nbytes):
    check(isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape),
          f"bad shape {shape!r}")
    check(type(nbytes) is int and nbytes == math.prod(shape) * dtype.itemsize,
          f"shape {shape} of {dtype} does not match {nbytes} bytes")


def _validate_arrays(arrays, payload_nbytes):
    check(isinstance(arrays, list) and type(payload_nbytes) is int and payload_nbytes >= 0,
          "bad header")
    end = 0
    for e in arrays:
        check(isinstance(e, dict) and e.get("kind") in _KINDS, f"bad array entry {str(e)[:80]}")
        allowed = TENSOR_DTYPES if e["kind"] in ("tensor", "parameter") else NP_DTYPES
        dt = _np_dtype(e.get("dtype"), allowed)
        check_shape(e.get("shape"), dt, e.get("nbytes"))
        off = e.get("offset")
        check(type(off) is int and off >= end and off + e["nbytes"] <= payload_nbytes,
              f"bad array offset {off!r}")
        end = off + e["nbytes"]


def _make_tensor(entry, arr, restore):
    from ..nn.parameter import Parameter
    t = Tensor._make(restore(arr, entry.get("device", "cpu")))
    requires_grad = bool(entry.get("requires_grad", False))
    if entry["kind"] == "parameter":
        return Parameter(t, requires_grad=requires_grad)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _make_qtensor(entry, arr):
    qdtype = entry.get("qdtype")
    check(qdtype in _QTENSOR_STORAGE and entry["dtype"] == _QTENSOR_STORAGE[qdtype],
          f"bad quantized tensor entry {str(entry)[:80]}")
    if "scales" in entry:
        scales, zps, axis = entry.get("scales"), entry.get("zero_points"), entry.get("axis")
        n = arr.shape[axis] if type(axis) is int and 0 <= axis < arr.ndim else -1
        check(isinstance(scales, list) and isinstance(zps, list) and len(scales) == len(zps) == n
              and all(type(v) in (int, float) and v > 0 for v in scales)
              and all(type(v) is int for v in zps), "bad per-channel quantization parameters")
    else:
        scale, zp = entry.get("scale"), entry.get("zero_point")
        check(type(scale) in (int, float) and scale > 0 and type(zp) is int,
              "bad quantization parameters")
    return from_file_entry(arr, qdtype, entry)


def _decode(node, objs):
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is list:
        return [_decode(v, objs) for v in node]
    check(type(node) is dict and "$" in node, f"bad tree node {str(node)[:80]}")
    tag = node["$"]
    if tag == "ref":
        i = node.get("id")
        check(type(i) is int and 0 <= i < len(objs), f"bad array reference {i!r}")
        return objs[i]
    if tag == "float":
        check(node.get("v") in ("inf", "-inf", "nan"), "bad float")
        return float(node["v"])
    if tag in ("tuple", "size", "set", "frozenset"):
        check(type(node.get("v")) is list, f"bad {tag}")
        items = [_decode(v, objs) for v in node["v"]]
        return {"tuple": tuple, "size": Size, "set": set, "frozenset": frozenset}[tag](items)
    if tag in ("dict", "odict"):
        items = node.get("items")
        check(type(items) is list and all(type(p) is list and len(p) == 2 for p in items),
              f"bad {tag}")
        out = (dict if tag == "dict" else OrderedDict)(
            (_decode(k, objs), _decode(v, objs)) for k, v in items)
        if "meta" in node and tag == "odict":
            out._metadata = _decode(node["meta"], objs)
        return out
    if tag == "dtype":
        check(node.get("v") in backend._BY_NAME, "bad dtype")
        return backend._BY_NAME[node["v"]]
    if tag == "device":
        check(isinstance(node.get("v"), str), "bad device")
        return backend.device(node["v"])
    raise Corrupt(f"unknown tree tag {tag!r}")


def parse_json(data, what="header"):
    """JSON from a file: malformed or absurdly nested text is Corrupt, never RecursionError."""
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise Corrupt(f"{what} nests too deeply (deeper than Python's recursion limit, "
                      f"{sys.getrecursionlimit()})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise Corrupt(f"{what} is not valid JSON ({exc})") from None


def read(f, name, restore, build=True):
    """Read a ddp file whose magic has been consumed; return the object (or None)."""
    h = hashlib.sha256(MAGIC)
    pre = files.read_exact(f, _PREAMBLE.size)
    h.update(pre)
    version, crc, hlen = _PREAMBLE.unpack(pre)
    check(hlen <= _MAX_HEADER, f"implausible header length {hlen}")
    files.ensure_available(f, hlen, "the header")
    header_bytes = files.read_exact(f, hlen)
    h.update(header_bytes)
    check(zlib.crc32(header_bytes) == crc, "header checksum (crc32) mismatch")
    header = parse_json(header_bytes)
    check(isinstance(header, dict) and header.get("format") == "ddp.save", "bad header")
    if type(header.get("version")) is int and header["version"] > FORMAT_VERSION:
        raise RuntimeError(f"ddp.load: {name} uses ddp file format version {header['version']}, "
                           f"but this ddp reads versions up to {FORMAT_VERSION}; upgrade ddp")
    check(header.get("version") == version == FORMAT_VERSION, f"bad format version {version}")
    arrays, payload_nbytes = header.get("arrays"), header.get("payload_nbytes")
    _validate_arrays(arrays, payload_nbytes)
    files.skip(f, _align(_PREAMBLE_SIZE + hlen) - _PREAMBLE_SIZE - hlen, h)
    files.ensure_available(f, payload_nbytes + _DIGEST_SIZE, "the payload")
    loaded, pos = [], 0
    for e in arrays:
        files.skip(f, e["offset"] - pos, h)
        if build:
            arr = files.read_array(f, NP_DTYPES[e["dtype"]], e["shape"], h)
            if sys.byteorder == "big":  # pragma: no cover
                arr.byteswap(inplace=True)
            loaded.append(arr)
        else:
            files.skip(f, e["nbytes"], h)
        pos = e["offset"] + e["nbytes"]
    files.skip(f, payload_nbytes - pos, h)
    digest = files.read_exact(f, _DIGEST_SIZE)
    check(digest == h.digest(), "payload checksum (sha256) mismatch")
    if not build:
        return None
    objs = []
    for e, arr in zip(arrays, loaded):
        kind = e["kind"]
        if kind in ("tensor", "parameter"):
            objs.append(_make_tensor(e, arr, restore))
        elif kind == "qtensor":
            objs.append(_make_qtensor(e, arr))
        elif kind == "ndarray":
            objs.append(arr)
        elif kind == "npscalar":
            objs.append(arr[()])
        else:
            objs.append(bytes(arr) if kind == "bytes" else bytearray(arr))
    try:
        return _decode(header.get("root"), objs)
    except (TypeError, RecursionError) as exc:  # e.g. an unhashable dict key
        raise Corrupt(f"bad object tree ({type(exc).__name__}: {str(exc)[:200]})") from None
