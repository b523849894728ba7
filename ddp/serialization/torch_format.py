"""PyTorch's checkpoint containers: the zip format of ``torch.save`` (``<name>/data.pkl``,
``<name>/data/<key>`` raw storages, ``byteorder`` / ``version`` records) and the legacy format
before PyTorch 1.6 (a stream of pickles: magic number, protocol version, system info, the
object, the storage keys, then each storage as an int64 element count and its bytes).

Reading goes through :class:`~ddp.serialization.torch_pickle.TorchUnpickler` (restricted unless
``weights_only=False``); sizes are checked against the archive before anything is allocated.
Writing produces what ``torch.save`` writes (protocol 2, storages 64-byte aligned, stored
uncompressed), so ``torch.load(f)`` reads it with its default ``weights_only=True``.

Example:
    >>> import io, zipfile
    >>> buf = io.BytesIO()
    >>> ddp.save({"w": ddp.arange(4.0)}, buf, format="torch")
    >>> sorted(zipfile.ZipFile(buf).namelist())[:3]
    ['archive/.data/serialization_id', 'archive/.format_version', 'archive/.storage_alignment']
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import sys
import zipfile

import numpy as np

from .. import backend
from . import files
from .files import Corrupt, Truncated, check
from .tensors import host_array, le_bytes
from .torch_pickle import (DTYPE_TO_STORAGE, Refused, Storage, TorchPickler, TorchUnpickler,
                           check_depth, memory_base, storage_type, strided, strides_in_elements,
                           weights_only_error)

MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001
DEFAULT_PROTOCOL = 2          # what torch.save writes (its weights-only reader expects it)
MAX_DEPTH = 1000              # deeper object trees are refused (no reader recursion either way)
_ALIGN = 64
_MAX_DEFLATE_RATIO = 1032     # deflate cannot expand more than this (a zip bomb cannot hide)
_SYS_INFO = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
             "type_sizes": {"short": 2, "int": 4, "long": 4}}


# --------------------------------------------------------------------------- writing

class _StorageRef:
    __slots__ = ("key", "dtype", "location", "numel")

    def __init__(self, key, dtype, location, numel):
        self.key, self.dtype, self.location, self.numel = key, dtype, location, numel


class StorageWriter:
    """Collects the storages of the tensors being pickled: views of one NumPy base share one
    storage (as torch's tensors that share memory), anything else gets its own."""

    def __init__(self, legacy=False):
        self.legacy = legacy
        self.storages = []      # (ref, array to write)
        self._by_base = {}      # id(base array) -> ref
        self._keep = []

    def ref(self, arr):
        """(storage ref, element offset, element strides) for a tensor's array."""
        name = backend.from_numpy_dtype(arr.dtype).name
        location = str(backend.device_of(arr))
        if isinstance(arr, np.ndarray) and arr.size:
            strides = strides_in_elements(arr)
            found = memory_base(arr) if strides is not None else None
            if found is not None:
                base, offset = found
                return self._ref_for(base, name, location), offset, strides
            if strides is not None and (arr.flags.c_contiguous or arr.flags.f_contiguous):
                return self._ref_for(arr, name, location), 0, strides
        arr = backend.get_array_module(arr).ascontiguousarray(arr)
        contiguous = tuple(int(np.prod(arr.shape[i + 1:])) for i in range(arr.ndim))
        return self._new(arr, name, location), 0, contiguous

    def _ref_for(self, base, name, location):
        ref = self._by_base.get(id(base))
        if ref is None:
            ref = self._by_base[id(base)] = self._new(base, name, location)
            self._keep.append(base)
        return ref

    def _new(self, arr, name, location):
        ref = _StorageRef(str(len(self.storages)), name, location, int(arr.size))
        self.storages.append((ref, arr))
        return ref

    def persistent_id(self, obj):
        if type(obj) is not _StorageRef:
            return None
        pid = ("storage", storage_type(DTYPE_TO_STORAGE[obj.dtype]), obj.key, obj.location,
               obj.numel)
        return pid + (None,) if self.legacy else pid

    def payloads(self):
        """(key, little-endian bytes in memory order) of every storage, in key order."""
        for ref, arr in self.storages:
            host = host_array(arr)
            flat = host.ravel(order="K") if host.flags.f_contiguous and not \
                host.flags.c_contiguous else host
            yield ref, le_bytes(flat)


def _pickle(obj, protocol, storages):
    buf = io.BytesIO()
    TorchPickler(buf, protocol, storages).dump(obj)
    return buf.getvalue()


def _put(zf, fh, base, name, data, force_zip64=False):
    """One stored zip entry whose data starts 64-byte aligned (as torch writes them)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    if base is not None:
        header = 30 + len(name.encode("utf-8")) + 4 + (20 if force_zip64 else 0)
        pad = -(fh.tell() - base + header) % _ALIGN
        info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad   # "FB", as torch pads
    with zf.open(info, "w", force_zip64=force_zip64) as out:
        files.write_bytes(out, data)


def write_zip(fh, obj, protocol=DEFAULT_PROTOCOL, archive="archive"):
    """Write ``obj`` in torch.save's zip format to the binary file ``fh``."""
    storages = StorageWriter()
    data_pkl = _pickle(obj, protocol, storages)
    try:
        base = fh.tell() if fh.seekable() else None
    except (AttributeError, OSError):
        base = None
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        _put(zf, fh, base, f"{archive}/data.pkl", data_pkl)
        _put(zf, fh, base, f"{archive}/.format_version", b"1")
        _put(zf, fh, base, f"{archive}/.storage_alignment", str(_ALIGN).encode())
        _put(zf, fh, base, f"{archive}/byteorder", b"little")
        digest = hashlib.sha256(data_pkl)
        for ref, data in storages.payloads():
            digest.update(data)
            _put(zf, fh, base, f"{archive}/data/{ref.key}", data,
                 force_zip64=data.nbytes >= zipfile.ZIP64_LIMIT)
        _put(zf, fh, base, f"{archive}/version", b"3\n")
        serial = str(int.from_bytes(digest.digest()[:16], "little")).encode()
        _put(zf, fh, base, f"{archive}/.data/serialization_id", serial)


def write_legacy(fh, obj, protocol=DEFAULT_PROTOCOL):
    """Write ``obj`` in torch.save's legacy (pre-1.6) format."""
    storages = StorageWriter(legacy=True)
    main = _pickle(obj, protocol, storages)
    for value in (MAGIC_NUMBER, PROTOCOL_VERSION, _SYS_INFO):
        files.write_bytes(fh, pickle.dumps(value, protocol=protocol))
    files.write_bytes(fh, main)
    files.write_bytes(fh, pickle.dumps([ref.key for ref, _ in storages.storages],
                                       protocol=protocol))
    for ref, data in storages.payloads():
        files.write_bytes(fh, struct.pack("<q", ref.numel))
        files.write_bytes(fh, data)


def archive_name(f):
    """The top folder torch names after the file (``resnet18-f37072fd/data.pkl``)."""
    if files.is_path(f):
        stem = os.path.splitext(os.path.basename(os.fsdecode(f)))[0]
        if stem and all(c.isalnum() or c in "-_." for c in stem):
            return stem
    return "archive"


# --------------------------------------------------------------------------- reading

def _unpickle(stream, storages, weights_only, depth_limit=True):
    """Run the unpickler; refusals become PyTorch's error, damage becomes Corrupt."""
    unpickler = TorchUnpickler(stream, storages, weights_only)
    try:
        obj = unpickler.load()
    except Refused as exc:
        raise weights_only_error(exc) from None
    except (Corrupt, Truncated, RuntimeError):
        raise
    except EOFError:
        raise Truncated("the pickle ends early") from None
    except Exception as exc:
        if not weights_only and not isinstance(exc, MemoryError):
            raise          # the file's own classes failed: their error, as torch shows it
        raise Corrupt(f"bad pickle ({type(exc).__name__}: {str(exc)[:200]})") from None
    if weights_only and depth_limit:
        check_depth(obj, MAX_DEPTH)
    return obj, unpickler


def _storage_dtype(storage_type_, name):
    dtype = getattr(storage_type_, "dtype", None)
    if dtype is None:
        raise Corrupt(f"storage of unknown type {storage_type_!r:.80} in {name}")
    return dtype


def _zip_bound(info, archive_size):
    """An entry's size may not exceed what the archive can hold."""
    limit = info.compress_size * (_MAX_DEFLATE_RATIO if info.compress_type else 1)
    check(info.compress_size <= archive_size and info.file_size <= limit,
          f"zip entry {info.filename} announces {info.file_size} bytes in an archive of "
          f"{archive_size} bytes")


def read_zip(f, name, restore, weights_only, build=True):
    """Load a torch.save zip checkpoint from the seekable binary file ``f``."""
    archive_size = files.remaining(f)
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise Corrupt(f"bad zip archive ({exc})") from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkls:
            pkls = [n for n in zf.namelist() if n == "data.pkl"]
        if len(pkls) != 1:
            raise RuntimeError(f"ddp.load: {name} is a zip archive but not a torch.save "
                               f"checkpoint (it has no <name>/data.pkl record)")
        prefix = pkls[0][:-len("data.pkl")]
        infos = {i.filename: i for i in zf.infolist()}
        for info in infos.values():
            _zip_bound(info, archive_size if archive_size is not None else 1 << 62)
        if not build:   # verify: every record's CRC, then everything load would check
            bad = zf.testzip()
            check(bad is None, f"zip entry {bad} fails its CRC-32 check")
        byteorder = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in infos \
            else "little"
        check(byteorder in ("little", "big"), f"bad byteorder record {byteorder!r:.20}")
        loaded = {}

        def storage(pid):
            check(len(pid) == 5, f"bad storage id {pid!r:.100}")
            _, stype, key, location, numel = pid
            check(type(key) is str and type(location) is str and type(numel) is int
                  and numel >= 0, f"bad storage id {pid!r:.100}")
            dtype = _storage_dtype(stype, name)
            if key in loaded:
                return loaded[key]
            info = infos.get(f"{prefix}data/{key}")
            check(info is not None, f"storage {key} is missing from the archive")
            check(info.file_size == numel * dtype.np.itemsize,
                  f"storage {key} holds {info.file_size} bytes, not {numel} {dtype} elements")
            arr = np.empty(numel, dtype.np)
            with zf.open(info) as member:
                files.read_array_into(member, arr)
            if byteorder != sys.byteorder:
                arr.byteswap(inplace=True)
            loaded[key] = Storage(restore(arr, location), location)
            return loaded[key]

        with zf.open(infos[pkls[0]]) as data_pkl:
            obj, _ = _unpickle(files.Reader(data_pkl), storage, weights_only)
    return obj if build else None


def _small_pickle(stream, name, weights_only):
    """The legacy format's header pickles (plain numbers and dicts) are always read restricted,
    so a pickle that is not a torch.save file runs nothing even with ``weights_only=False``."""
    try:
        return _unpickle(stream, None, True)[0]
    except pickle.UnpicklingError:
        if weights_only:
            raise
        raise RuntimeError(f"ddp.load: {name} is a Python pickle but not a torch.save file "
                           f"(Invalid magic number; corrupt file?). ddp.load unpickles only "
                           f"torch.save checkpoints, never arbitrary pickles.") from None


def read_legacy(f, name, restore, weights_only, build=True):
    """Load a legacy (pre-1.6) torch.save file from the seekable binary file ``f``."""
    magic = _small_pickle(files.Reader(f), name, weights_only)
    if magic != MAGIC_NUMBER:
        raise RuntimeError(f"ddp.load: {name}: Invalid magic number; corrupt file? (a pickle, "
                           f"but not a torch.save file)")
    version = _small_pickle(files.Reader(f), name, weights_only)
    if version != PROTOCOL_VERSION:
        raise RuntimeError(f"ddp.load: {name}: Invalid protocol version: {version!r:.40}")
    sys_info = _small_pickle(files.Reader(f), name, weights_only)
    check(isinstance(sys_info, dict), "bad system info record")
    swap = (sys_info.get("little_endian", True) is not True) != (sys.byteorder == "big")
    storages, budget = {}, [files.remaining(f)]

    def storage(pid):
        check(len(pid) == 6, f"bad storage id {pid!r:.100}")
        _, stype, key, location, numel, view = pid
        check(type(key) is str and type(location) is str and type(numel) is int and numel >= 0,
              f"bad storage id {pid!r:.100}")
        dtype = _storage_dtype(stype, name)
        if key not in storages:
            nbytes = numel * dtype.np.itemsize
            if budget[0] is not None:   # every storage's bytes follow the pickle
                if nbytes > budget[0]:
                    raise Truncated(f"storage {key} needs {nbytes} bytes but the file has only "
                                    f"{budget[0]} left")
                budget[0] -= nbytes
            storages[key] = Storage(np.empty(numel, dtype.np), location)
        root = storages[key]
        if view is None:
            return root
        check(type(view) is tuple and len(view) == 3, f"bad storage view {view!r:.100}")
        view_key, offset, size = view
        check(type(offset) is int and type(size) is int and 0 <= offset and
              offset + size <= root.array.shape[0], f"bad storage view {view!r:.100}")
        if view_key not in storages:
            storages[view_key] = Storage(root.array[offset:offset + size], location)
        return storages[view_key]

    obj, unpickler = _unpickle(files.Reader(f), storage, weights_only)
    keys = _small_pickle(files.Reader(f), name, weights_only)
    check(type(keys) is list and all(type(k) is str for k in keys), "bad storage key list")
    for key in keys:
        check(key in storages, f"storage {key} is not used by the object")
        arr = storages[key].array
        (numel,) = struct.unpack("<q", files.read_exact(f, 8))
        check(numel == arr.shape[0], f"storage {key} has {numel} elements, expected "
                                     f"{arr.shape[0]}")
        files.read_array_into(f, arr)
        if swap:
            arr.byteswap(inplace=True)
    if not build:
        return None
    moved = {}
    for key, st in storages.items():       # map_location, now that the bytes are in
        new = restore(st.array, st.location)
        if new is not st.array:
            moved[id(st)] = new
            st.array = new
    if moved:
        for t, st, offset, size, stride, dtype in unpickler.views:
            if id(st) in moved:
                t._data = strided(st.typed(dtype), offset, size, stride)
    return obj
