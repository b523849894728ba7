"""Saving and loading tensors and checkpoints: ``ddp.save`` / ``ddp.load`` and safetensors.

``ddp.save(obj, f)`` stores tensors, Parameters, NumPy arrays and nested dicts / OrderedDicts /
lists / tuples of them with plain Python values (int, float incl. inf/nan, str, bool, None,
bytes), which covers ``{"epoch": 3, "model": model.state_dict(), "optim": opt.state_dict()}``.
``ddp.load`` reads it back. Loading never unpickles and never runs code from the file: pickles
and ``torch.save`` checkpoints are refused with an explanation. Writing to a path is atomic (a
temporary file in the same directory, ``fsync``, ``os.replace``), so a crash mid-save leaves the
previous file intact.

The ddp file format (version 1), all integers little-endian::

    0   8 bytes  magic b"\\x89DDP\\r\\n\\x1a\\n"
    8   u32      format version (1)
    12  u32      crc32 of the header
    16  u64      header length H
    24  H bytes  header: UTF-8 JSON {"format", "version", "arrays": [...], "payload_nbytes",
                 "root": tree}; zero padding up to a multiple of 64 bytes
        payload  raw little-endian C-order bytes of each array, each at a 64-byte aligned
                 "offset" (relative to the payload start) given in its "arrays" entry, which
                 also holds "kind" (tensor, parameter, ndarray, npscalar, bytes, bytearray),
                 "dtype", "shape", "nbytes", and for tensors "device" and "requires_grad"
    end 32 bytes sha256 of every byte before it

The JSON tree stores str, int, bool, null, finite floats and lists as themselves; every JSON
object is a tagged node ``{"$": tag, ...}``: ``float`` (inf/-inf/nan), ``tuple``, ``dict`` and
``odict`` (``"items"``: ``[[key, value], ...]``, so int/tuple keys survive), ``set``,
``frozenset``, ``size``, ``dtype``, ``device`` and ``ref`` (index into ``"arrays"``).

The safetensors format (``save_safetensors`` / ``load_safetensors``, and ``ddp.load`` of a
safetensors file) interchanges flat ``{name: tensor}`` dicts with the PyTorch ecosystem.

Checkpoint helpers in this module: :func:`atomic_write` (any file written atomically),
:func:`verify` (integrity check without building tensors) and :func:`detect_format`.

Example:
    >>> import io
    >>> buf = io.BytesIO()
    >>> ddp.save({"epoch": 3, "w": ddp.ones(2)}, buf)
    >>> _ = buf.seek(0)
    >>> ddp.load(buf)["w"]
    tensor([1., 1.])
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import stat
import struct
import sys
import zlib
from collections import OrderedDict

import numpy as np

from . import backend
from .tensor import Size, Tensor

__all__ = ["save", "load", "save_safetensors", "load_safetensors", "safetensors_metadata",
           "atomic_write", "verify", "detect_format", "FORMAT_VERSION"]

MAGIC = b"\x89DDP\r\n\x1a\n"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<IIQ")   # version, header crc32, header length (after the magic)
_PREAMBLE_SIZE = len(MAGIC) + _PREAMBLE.size  # 24
_ALIGN = 64
_DIGEST_SIZE = 32
_MAX_HEADER = 1 << 31               # sanity bound before allocating a header buffer
_SAFETENSORS_MAX_HEADER = 100_000_000  # the limit the safetensors library enforces
_CHUNK = 1 << 24

# NumPy dtypes an array in a file may have (never np.dtype(<string from the file>) directly:
# an object dtype would turn file bytes into pointers).
_NP_DTYPES = {name: np.dtype(name) for name in (
    "bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
    "float16", "float32", "float64", "complex64", "complex128")}
if backend.bfloat16 is not None:
    _NP_DTYPES["bfloat16"] = backend.bfloat16.np
_TENSOR_DTYPES = {d.name for d in backend._ALL_DTYPES}

# safetensors dtype codes <-> ddp dtype names
_ST_TO_NAME = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
               "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
               "BOOL": "bool"}
_NAME_TO_ST = {v: k for k, v in _ST_TO_NAME.items()}

_KINDS = ("tensor", "parameter", "ndarray", "npscalar", "bytes", "bytearray")


# --------------------------------------------------------------------------- small helpers

def _name_of(f):
    if isinstance(f, (str, bytes, os.PathLike)):
        return os.fsdecode(f)
    return getattr(f, "name", None) or f"<{type(f).__name__}>"


def _is_path(f):
    return isinstance(f, (str, bytes, os.PathLike))


def _align(n, a=_ALIGN):
    return (n + a - 1) // a * a


def _le_bytes(arr):
    """A C-contiguous little-endian uint8 view (or copy) of a host array."""
    arr = np.ascontiguousarray(arr)
    if sys.byteorder == "big" or arr.dtype.byteorder == ">":  # pragma: no cover - LE machines
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
    return arr.reshape(-1).view(np.uint8)


def _write_bytes(fh, data):
    """Write ``data`` to ``fh`` (one place, so tests can simulate a failing disk)."""
    fh.write(data)


class _Truncated(Exception):
    """Internal: the file ended early."""


def _read_into(f, buf):
    """Fill the uint8 array ``buf`` from ``f``; raise _Truncated at end of file."""
    mv = memoryview(buf).cast("B") if buf.nbytes else None
    got, n = 0, buf.nbytes
    readinto = getattr(f, "readinto", None)
    while got < n:
        if readinto is not None:
            k = readinto(mv[got:got + _CHUNK * 4])
        else:
            chunk = f.read(min(n - got, _CHUNK * 4))
            k = len(chunk)
            mv[got:got + k] = chunk
        if not k:
            raise _Truncated(f"unexpected end of file ({n - got} of {n} bytes missing)")
        got += k


def _read_exact(f, n):
    """Read exactly ``n`` bytes (in chunks, so a corrupt huge length fails at EOF, not OOM)."""
    parts, left = [], n
    while left:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
            raise _Truncated(f"unexpected end of file ({left} of {n} bytes missing)")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _read_upto(f, n):
    """Read up to ``n`` bytes, fewer only at end of file (raw streams may return short reads)."""
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _skip(f, n, h=None):
    """Read and discard ``n`` bytes (hashing them when ``h`` is given)."""
    while n:
        chunk = _read_exact(f, min(n, _CHUNK))
        if h is not None:
            h.update(chunk)
        n -= len(chunk)


def _file_size(f):
    """The size of a regular file behind ``f``, or None (pipes, sockets, BytesIO)."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
    """Open a binary file that replaces ``path`` atomically when the block ends without error.

    The data goes to a temporary file in the same directory, which is flushed, ``fsync``-ed and
    renamed onto ``path`` with ``os.replace``; the directory is then ``fsync``-ed. On any
    exception the temporary file is removed and ``path`` keeps its previous content. An existing
    target's permission bits are kept.

    Example:
        >>> with atomic_write(tmp_path / "notes.txt") as fh:
        ...     _ = fh.write(b"epoch 3")
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


# --------------------------------------------------------------------------- encoding

class _Encoder:
    """Turn an object tree into a JSON-able tree plus a list of arrays to store."""

    def __init__(self):
        self.arrays = []     # header entries
        self.sources = []    # what to write for each entry: a (host or device) array or bytes
        self._ids = {}       # id(tensor) -> index, so one tensor object is stored once
        self._keep = []      # keep encoded objects alive so their ids stay unique
        self._offset = 0
        self._active = set()

    def _add(self, obj, kind, arr, meta=None):
        key = id(obj)
        if key in self._ids:
            return {"$": "ref", "id": self._ids[key]}
        dtype_name = arr.dtype.name
        nbytes = int(arr.size) * arr.dtype.itemsize
        entry = {"kind": kind, "dtype": dtype_name, "shape": [int(s) for s in arr.shape],
                 "offset": self._offset, "nbytes": nbytes}
        if meta:
            entry.update(meta)
        self._offset = _align(self._offset + nbytes)
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
        if isinstance(obj, Tensor):
            from .nn.parameter import Parameter
            kind = "parameter" if isinstance(obj, Parameter) else "tensor"
            return self._add(obj, kind, obj._data, {"device": str(obj.device),
                                                    "requires_grad": bool(obj._requires_grad)})
        if t is np.ndarray or isinstance(obj, np.generic):
            kind = "ndarray" if t is np.ndarray else "npscalar"
            arr = obj if t is np.ndarray else np.asarray(obj)
            if arr.dtype.name not in _NP_DTYPES:
                raise TypeError(f"ddp.save: cannot store a NumPy array of dtype {arr.dtype} "
                                f"(at {where}); supported: {', '.join(_NP_DTYPES)}")
            return self._add(obj, kind, arr)
        if t is bytes or t is bytearray:
            return self._add(obj, t.__name__, np.frombuffer(bytes(obj), np.uint8))
        if isinstance(obj, backend.dtype):
            return {"$": "dtype", "v": obj.name}
        if isinstance(obj, backend.device):
            return {"$": "device", "v": str(obj)}
        if t in (list, tuple, Size, set, frozenset, dict, OrderedDict):
            if id(obj) in self._active:
                raise ValueError(f"ddp.save: the object contains a reference cycle (at {where})")
            self._active.add(id(obj))
            try:
                return self._container(obj, t, where)
            finally:
                self._active.discard(id(obj))
        hint = ""
        if hasattr(obj, "state_dict") and callable(obj.state_dict):
            hint = "; save its state_dict() instead (ddp.save(x.state_dict(), f))"
        raise TypeError(f"ddp.save: cannot store an object of type {t.__module__}.{t.__qualname__}"
                        f" (at {where}); supported are tensors, Parameters, NumPy arrays, dict, "
                        f"OrderedDict, list, tuple, set, int, float, str, bool, None, bytes, "
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


def _host_array(src):
    if isinstance(src, np.ndarray):
        return src
    return src.get()  # CuPy: copy one tensor at a time to the host


def _write_ddp(fh, header, sources):
    header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    h = hashlib.sha256()

    def put(data):
        h.update(data)
        _write_bytes(fh, data)

    put(MAGIC + _PREAMBLE.pack(FORMAT_VERSION, zlib.crc32(header_bytes), len(header_bytes)))
    put(header_bytes)
    put(b"\0" * (_align(_PREAMBLE_SIZE + len(header_bytes)) - _PREAMBLE_SIZE - len(header_bytes)))
    pos = 0
    for entry, src in zip(header["arrays"], sources):
        if entry["offset"] > pos:
            put(b"\0" * (entry["offset"] - pos))
        data = _le_bytes(_host_array(src))
        put(data)
        pos = entry["offset"] + entry["nbytes"]
    if header["payload_nbytes"] > pos:
        put(b"\0" * (header["payload_nbytes"] - pos))
    _write_bytes(fh, h.digest())


def save(obj, f, pickle_module=None, pickle_protocol=None, _use_new_zipfile_serialization=True,
         _disable_byteorder_record=False):
    """Save ``obj`` (tensors, Parameters, NumPy arrays, nested dict/OrderedDict/list/tuple/set of
    them and plain Python values) to ``f``, a path or a binary file object.

    Saving to a path is atomic: the previous file stays intact if anything fails. CUDA tensors
    are copied to the host one at a time and remember their device. ``pickle_module`` and the
    other PyTorch-only arguments are accepted and ignored: nothing is pickled.

    Example:
        >>> ckpt = {"epoch": 3, "model": ddp.nn.Linear(2, 1).state_dict(), "betas": (0.9, 0.99)}
        >>> ddp.save(ckpt, tmp_path / "ckpt.pt")
        >>> ddp.load(tmp_path / "ckpt.pt")["betas"]
        (0.9, 0.99)
    """
    enc = _Encoder()
    root = enc.encode(obj)
    header = {"format": "ddp.save", "version": FORMAT_VERSION, "byteorder": "little",
              "arrays": enc.arrays, "payload_nbytes": enc._offset, "root": root}
    if _is_path(f):
        with atomic_write(f) as fh:
            _write_ddp(fh, header, enc.sources)
    else:
        _write_ddp(f, header, enc.sources)


# --------------------------------------------------------------------------- decoding

class _Corrupt(Exception):
    """Internal: the file's content is inconsistent."""


def _check(cond, msg):
    if not cond:
        raise _Corrupt(msg)


def _np_dtype(name, allowed=_NP_DTYPES):
    _check(isinstance(name, str) and name in allowed, f"unsupported dtype {name!r}")
    return allowed[name] if isinstance(allowed, dict) else _NP_DTYPES[name]


def _check_shape(shape, dtype, nbytes):
    _check(isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape),
           f"bad shape {shape!r}")
    _check(type(nbytes) is int and nbytes == math.prod(shape) * dtype.itemsize,
           f"shape {shape} of {dtype} does not match {nbytes} bytes")


def _validate_arrays(arrays, payload_nbytes):
    _check(isinstance(arrays, list) and type(payload_nbytes) is int and payload_nbytes >= 0,
           "bad header")
    end = 0
    for e in arrays:
        _check(isinstance(e, dict) and e.get("kind") in _KINDS, f"bad array entry {e!r}")
        allowed = _TENSOR_DTYPES if e["kind"] in ("tensor", "parameter") else _NP_DTYPES
        dt = _np_dtype(e.get("dtype"), allowed)
        _check_shape(e.get("shape"), dt, e.get("nbytes"))
        off = e.get("offset")
        _check(type(off) is int and off >= end and off + e["nbytes"] <= payload_nbytes,
               f"bad array offset {off!r}")
        end = off + e["nbytes"]


def _device_location(location):
    if location is None:
        return None
    if isinstance(location, (str, backend.device)):
        return str(backend.as_device(location))
    raise TypeError(f"map_location entries must be str or ddp.device, got {location!r}")


class _Restorer:
    """Moves loaded CPU arrays to their device according to ``map_location``."""

    def __init__(self, map_location, name):
        if isinstance(map_location, dict):
            map_location = {_device_location(k): _device_location(v)
                            for k, v in map_location.items()}
        self.map_location = map_location
        self.name = name

    def __call__(self, arr, saved):
        ml = self.map_location
        target = saved
        if ml is None:
            pass
        elif isinstance(ml, dict):
            target = ml.get(saved, saved)
        elif isinstance(ml, (str, backend.device)):
            target = _device_location(ml)
        elif callable(ml):
            res = ml(Tensor._make(arr), saved)
            if res is not None:
                return res._data if isinstance(res, Tensor) else res
        else:
            raise TypeError(f"ddp.load: map_location must be None, a str, a ddp.device, a dict or "
                            f"a callable, got {type(ml).__name__}")
        dev = backend.as_device(target)
        if dev.type == "cuda" and not backend.cuda_is_available():
            raise RuntimeError(
                f"ddp.load: {self.name} holds a tensor saved on {saved}, but CUDA is not "
                f"available here (ddp.cuda.is_available() is False). On a CPU-only machine pass "
                f"map_location='cpu' (or map_location=ddp.device('cpu')) to load it onto the CPU.")
        return backend.to_device(arr, dev)


def _make_tensor(entry, arr, restore):
    from .nn.parameter import Parameter
    data = restore(arr, entry.get("device", "cpu"))
    t = Tensor._make(data)
    requires_grad = bool(entry.get("requires_grad", False))
    if entry["kind"] == "parameter":
        return Parameter(t, requires_grad=requires_grad)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _decode(node, objs):
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is list:
        return [_decode(v, objs) for v in node]
    _check(type(node) is dict and "$" in node, f"bad tree node {str(node)[:80]}")
    tag = node["$"]
    if tag == "ref":
        i = node.get("id")
        _check(type(i) is int and 0 <= i < len(objs), f"bad array reference {i!r}")
        return objs[i]
    if tag == "float":
        _check(node.get("v") in ("inf", "-inf", "nan"), "bad float")
        return float(node["v"])
    if tag in ("tuple", "size", "set", "frozenset"):
        _check(type(node.get("v")) is list, f"bad {tag}")
        items = [_decode(v, objs) for v in node["v"]]
        return {"tuple": tuple, "size": Size, "set": set, "frozenset": frozenset}[tag](items)
    if tag in ("dict", "odict"):
        items = node.get("items")
        _check(type(items) is list and all(type(p) is list and len(p) == 2 for p in items),
               f"bad {tag}")
        out = (dict if tag == "dict" else OrderedDict)(
            (_decode(k, objs), _decode(v, objs)) for k, v in items)
        if "meta" in node and tag == "odict":
            out._metadata = _decode(node["meta"], objs)
        return out
    if tag == "dtype":
        _check(node.get("v") in backend._BY_NAME, "bad dtype")
        return backend._BY_NAME[node["v"]]
    if tag == "device":
        _check(isinstance(node.get("v"), str), "bad device")
        return backend.device(node["v"])
    raise _Corrupt(f"unknown tree tag {tag!r}")


def _read_ddp(f, name, restore, build=True):
    """Read a ddp file whose magic has been consumed; return the object (or None)."""
    h = hashlib.sha256(MAGIC)
    pre = _read_exact(f, _PREAMBLE.size)
    h.update(pre)
    version, crc, hlen = _PREAMBLE.unpack(pre)
    _check(hlen <= _MAX_HEADER, f"implausible header length {hlen}")
    size = _file_size(f)
    if size is not None and hasattr(f, "tell"):
        with contextlib.suppress(OSError, ValueError):
            left = size - f.tell()
            if hlen > left:
                raise _Truncated(f"header of {hlen} bytes but only {left} bytes left")
    header_bytes = _read_exact(f, hlen)
    h.update(header_bytes)
    _check(zlib.crc32(header_bytes) == crc, "header checksum (crc32) mismatch")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Corrupt(f"header is not valid JSON ({exc})") from None
    _check(isinstance(header, dict) and header.get("format") == "ddp.save", "bad header")
    if type(header.get("version")) is int and header["version"] > FORMAT_VERSION:
        raise RuntimeError(f"ddp.load: {name} uses ddp file format version {header['version']}, "
                           f"but this ddp reads versions up to {FORMAT_VERSION}; upgrade ddp")
    _check(header.get("version") == version == FORMAT_VERSION, f"bad format version {version}")
    arrays, payload_nbytes = header.get("arrays"), header.get("payload_nbytes")
    _validate_arrays(arrays, payload_nbytes)
    _skip(f, _align(_PREAMBLE_SIZE + hlen) - _PREAMBLE_SIZE - hlen, h)
    if size is not None:
        with contextlib.suppress(OSError, ValueError):
            left = size - f.tell()
            if left < payload_nbytes + _DIGEST_SIZE:
                raise _Truncated(f"payload needs {payload_nbytes + _DIGEST_SIZE} bytes but only "
                                 f"{left} are left")
    loaded, pos = [], 0
    for e in arrays:
        _skip(f, e["offset"] - pos, h)
        if build:
            dt = _NP_DTYPES[e["dtype"]]
            arr = np.empty(e["shape"], dtype=dt)
            u8 = arr.reshape(-1).view(np.uint8)
            _read_into(f, u8)
            h.update(u8)
            if sys.byteorder == "big":  # pragma: no cover
                arr.byteswap(inplace=True)
            loaded.append(arr)
        else:
            _skip(f, e["nbytes"], h)
        pos = e["offset"] + e["nbytes"]
    _skip(f, payload_nbytes - pos, h)
    digest = _read_exact(f, _DIGEST_SIZE)
    _check(digest == h.digest(), "payload checksum (sha256) mismatch")
    if not build:
        return None
    objs = []
    for e, arr in zip(arrays, loaded):
        kind = e["kind"]
        if kind in ("tensor", "parameter"):
            objs.append(_make_tensor(e, arr, restore))
        elif kind == "ndarray":
            objs.append(arr)
        elif kind == "npscalar":
            objs.append(arr[()])
        else:
            objs.append(bytes(arr) if kind == "bytes" else bytearray(arr))
    try:
        return _decode(header.get("root"), objs)
    except (TypeError, RecursionError) as exc:  # e.g. an unhashable dict key
        raise _Corrupt(f"bad object tree ({type(exc).__name__}: {exc})") from None


def _read_safetensors(f, head, name, restore, device_name="cpu"):
    """Read a safetensors file whose first 9 bytes are ``head``; return (tensors, metadata)."""
    (hlen,) = struct.unpack("<Q", head[:8])
    _check(hlen <= _SAFETENSORS_MAX_HEADER, f"implausible safetensors header length {hlen}")
    header_bytes = head[8:] + _read_exact(f, hlen - (len(head) - 8))
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Corrupt(f"safetensors header is not valid JSON ({exc})") from None
    _check(isinstance(header, dict), "bad safetensors header")
    metadata = header.pop("__metadata__", None)
    _check(metadata is None or (isinstance(metadata, dict) and
                                all(isinstance(v, str) for v in metadata.values())),
           "bad __metadata__")
    entries = []
    for key, info in header.items():
        _check(isinstance(info, dict), f"bad entry for {key!r}")
        code = info.get("dtype")
        if code not in _ST_TO_NAME:
            raise RuntimeError(f"ddp.load: {name}: tensor {key!r} has safetensors dtype {code!r}, "
                               f"which ddp does not support (supported: "
                               f"{', '.join(_ST_TO_NAME)})")
        dt = _NP_DTYPES[_ST_TO_NAME[code]]
        offs = info.get("data_offsets")
        _check(isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
               and 0 <= offs[0] <= offs[1], f"bad data_offsets for {key!r}")
        _check_shape(info.get("shape"), dt, offs[1] - offs[0])
        entries.append((offs[0], offs[1], key, dt, info["shape"]))
    order = sorted(entries, key=lambda e: (e[0], e[1]))
    end = 0
    for b, e, key, _, _ in order:
        _check(b >= end, f"tensor {key!r} overlaps another one")
        end = e
    size = _file_size(f)
    if size is not None:
        with contextlib.suppress(OSError, ValueError):
            left = size - f.tell()
            if left < end:
                raise _Truncated(f"data needs {end} bytes but only {left} are left")
    arrays, pos = {}, 0
    for b, e, key, dt, shape in order:
        _skip(f, b - pos)
        arr = np.empty(shape, dtype=dt)
        _read_into(f, arr.reshape(-1).view(np.uint8))
        if sys.byteorder == "big":  # pragma: no cover
            arr.byteswap(inplace=True)
        arrays[key] = arr
        pos = e
    out = {key: Tensor._make(restore(arrays[key], device_name)) for _, _, key, _, _ in entries}
    return out, metadata


def detect_format(f):
    """Name the format of a file from its first bytes: ``'ddp'``, ``'safetensors'``,
    ``'pickle'``, ``'zip'`` (e.g. a ``torch.save`` checkpoint), ``'empty'`` or ``'unknown'``.

    Reads at most 9 bytes; a file object is left positioned after them.

    Example:
        >>> ddp.save(ddp.ones(1), tmp_path / "t.pt"); detect_format(tmp_path / "t.pt")
        'ddp'
    """
    if _is_path(f):
        with open(f, "rb") as fh:
            return _sniff(_read_upto(fh, 9))
    return _sniff(_read_upto(f, 9))


def _sniff(head):
    if not head:
        return "empty"
    if head[:8] == MAGIC:
        return "ddp"
    if len(head) < 9 and MAGIC.startswith(head):
        return "ddp"  # a truncated ddp file
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and \
            struct.unpack("<Q", head[:8])[0] <= _SAFETENSORS_MAX_HEADER:
        return "safetensors"
    return "unknown"


def _refuse(kind, name, head):
    if kind == "zip":
        return RuntimeError(
            f"ddp.load: {name} is a zip archive, most likely a torch.save checkpoint. Such files "
            f"hold pickled Python objects, and ddp.load never unpickles (unpickling can run "
            f"arbitrary code). Convert it with PyTorch, e.g. safetensors.torch.save_file("
            f"torch.load(path, weights_only=True), 'model.safetensors'), then load that file "
            f"with ddp.load or ddp.serialization.load_safetensors.")
    if kind == "pickle":
        return RuntimeError(
            f"ddp.load: {name} is a Python pickle (protocol {head[1]}), e.g. a legacy torch.save "
            f"file. ddp.load refuses to unpickle it, because unpickling can run arbitrary code. "
            f"Re-save the data with ddp.save, or as safetensors.")
    if kind == "empty":
        return RuntimeError(f"ddp.load: {name} is empty (0 bytes)")
    return RuntimeError(f"ddp.load: {name} is not a ddp.save or safetensors file (it starts with "
                        f"{bytes(head[:9])!r}); ddp.load only reads those two formats")


def _with_file(f, mode="rb"):
    if _is_path(f):
        return open(f, mode)
    return contextlib.nullcontext(f)


def _load(f, map_location, build=True):
    name = _name_of(f)
    restore = _Restorer(map_location, name)
    with _with_file(f) as fh:
        try:
            head = _read_upto(fh, len(MAGIC))
            if head == MAGIC:
                obj = _read_ddp(fh, name, restore, build)
                if _is_path(f) and fh.read(1):
                    raise _Corrupt("unexpected data after the end of the ddp file")
                return obj
            head += _read_upto(fh, 9 - len(head)) if len(head) == len(MAGIC) else b""
            kind = _sniff(head)
            if kind == "ddp":
                raise _Truncated(f"file is only {len(head)} bytes long")
            if kind == "safetensors":
                tensors, _ = _read_safetensors(fh, head, name, restore)
                return tensors if build else None
            raise _refuse(kind, name, head)
        except _Truncated as exc:
            raise RuntimeError(f"ddp.load: {name} is corrupt or truncated: {exc}") from None
        except _Corrupt as exc:
            raise RuntimeError(f"ddp.load: {name} is corrupt or truncated: {exc}") from None


def load(f, map_location=None, pickle_module=None, *, weights_only=True, mmap=None,
         **pickle_load_args):
    """Load an object saved with :func:`save` (or a safetensors file, giving a dict of tensors)
    from a path or a binary file object.

    Nothing in the file is ever executed: pickles and ``torch.save`` zip checkpoints are refused
    with an error explaining how to convert them; ``weights_only``, ``pickle_module`` and
    ``mmap`` are accepted for PyTorch compatibility and change nothing. A damaged file raises
    ``RuntimeError: ddp.load: <name> is corrupt or truncated: ...``.

    ``map_location`` places the tensors: ``None`` (the device they were saved from; a CUDA
    tensor raises when CUDA is unavailable), ``'cpu'`` / ``'cuda:1'`` / a ``ddp.device`` (all
    there), a dict ``{'cuda:0': 'cpu'}`` (saved location -> new one, others unchanged), or a
    callable ``fn(cpu_tensor, saved_location)`` returning a tensor, or ``None`` for the default.

    Example:
        >>> ddp.save({"w": ddp.ones(2)}, tmp_path / "m.pt")
        >>> ddp.load(tmp_path / "m.pt", map_location="cpu")
        {'w': tensor([1., 1.])}
    """
    return _load(f, map_location)


def verify(f):
    """Check a ddp or safetensors file's integrity (checksums, sizes, header) without building
    tensors; return True, or raise RuntimeError like :func:`load`.

    Example:
        >>> ddp.save([1, 2], tmp_path / "x.pt"); verify(tmp_path / "x.pt")
        True
    """
    _load(f, "cpu", build=False)
    return True


# --------------------------------------------------------------------------- safetensors

def save_safetensors(state_dict, path, metadata=None):
    """Write ``{name: tensor}`` to ``path`` (atomically) or a binary file object in the
    safetensors format, readable by ``safetensors.torch.load_file`` and Hugging Face tools.

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
        if arr.dtype.name not in _NAME_TO_ST:
            raise TypeError(f"save_safetensors: {key!r} has dtype {arr.dtype}, which safetensors "
                            f"(in ddp) does not support")
        items.append((key, arr))
    items.sort(key=lambda kv: (-kv[1].dtype.itemsize, kv[0]))  # keeps every tensor aligned
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    for key, arr in items:
        nbytes = int(arr.size) * arr.dtype.itemsize
        header[key] = {"dtype": _NAME_TO_ST[arr.dtype.name], "shape": [int(s) for s in arr.shape],
                       "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)

    def write(fh):
        _write_bytes(fh, struct.pack("<Q", len(hb)) + hb)
        for _, arr in items:
            _write_bytes(fh, _le_bytes(_host_array(arr)))

    if _is_path(path):
        with atomic_write(path) as fh:
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
    return _load_safetensors(path, device)[0]


def safetensors_metadata(path):
    """The ``__metadata__`` dict of a safetensors file (``None`` when it has none).

    Example:
        >>> save_safetensors({"b": ddp.zeros(1)}, tmp_path / "m.st", {"epoch": "3"})
        >>> safetensors_metadata(tmp_path / "m.st")
        {'epoch': '3'}
    """
    return _load_safetensors(path, "cpu")[1]


def _load_safetensors(path, device):
    name = _name_of(path)
    restore = _Restorer(device, name)
    with _with_file(path) as fh:
        head = _read_upto(fh, 9)
        kind = _sniff(head)
        if kind != "safetensors":
            if kind == "ddp":
                raise RuntimeError(f"load_safetensors: {name} is a ddp.save file; use ddp.load")
            raise _refuse(kind, name, head)
        try:
            return _read_safetensors(fh, head, name, restore, str(backend.CPU))
        except (_Truncated, _Corrupt) as exc:
            raise RuntimeError(f"ddp.load: {name} is corrupt or truncated: {exc}") from None
