"""Saving and loading tensors and checkpoints: ``ddp.save`` / ``ddp.load`` in three formats.

* **ddp** (the default of ``ddp.save`` for data: tensors, Parameters, NumPy arrays, nested
  dict / OrderedDict / list / tuple / set of them, plain Python values): a JSON header and raw
  payload with crc32 + sha256, no pickle (:mod:`ddp.serialization.native`).
* **torch**: PyTorch's own checkpoint files, both ways (:mod:`ddp.serialization.torch_format`).
  ``ddp.load`` reads ``torch.save`` zip files and legacy (pre-1.6) files with
  ``torch.load(weights_only=True)`` semantics: a restricted unpickler that builds tensors,
  storages, Parameters, OrderedDicts and plain containers and never runs code from the file
  (:mod:`ddp.serialization.torch_pickle`). ``ddp.save(obj, f, format="torch")`` writes a file
  that ``torch.load(f)`` reads with its default ``weights_only=True``. An object the ddp format
  cannot hold (a whole Module, an optimizer, your own class) is pickled into this format, as
  ``torch.save`` does; loading it needs ``ddp.load(f, weights_only=False)`` (which can run code
  from the file: only for files you trust), the default refuses with PyTorch's message.
* **safetensors**: flat ``{name: tensor}`` dicts (:func:`save_safetensors`,
  :func:`load_safetensors`, or ``ddp.save(sd, f, format="safetensors")``).

``ddp.load`` tells the format from the first bytes, whatever the file is called. Writing to a
path is atomic (:func:`atomic_write`: a temporary in the same directory, ``fsync``,
``os.replace``), so a crash mid-save leaves the previous file intact, and the temporary of a
writer killed mid-save is removed by the next save or load in that directory
(:func:`remove_stale_temporaries`). A damaged or crafted file raises ``RuntimeError: ddp.load:
<name> is corrupt or truncated: ...`` (never MemoryError or RecursionError); see
docs/checkpoints.md.

Example:
    >>> import io
    >>> buf = io.BytesIO()
    >>> ddp.save({"epoch": 3, "w": ddp.ones(2)}, buf)
    >>> _ = buf.seek(0)
    >>> ddp.load(buf)["w"]
    tensor([1., 1.])
"""
from __future__ import annotations

import io
import os

from . import files, native, torch_format
from .files import Corrupt, Truncated, atomic_write, remove_stale_temporaries
from .formats import refuse, sniff
from .native import FORMAT_VERSION, MAGIC
from .safetensors_format import load_safetensors, safetensors_metadata, save_safetensors
from .tensors import Restorer
from .torch_pickle import add_safe_globals, clear_safe_globals, get_safe_globals, safe_globals

__all__ = ["save", "load", "save_safetensors", "load_safetensors", "safetensors_metadata",
           "atomic_write", "remove_stale_temporaries", "verify", "detect_format",
           "add_safe_globals", "safe_globals", "get_safe_globals", "clear_safe_globals",
           "FORMAT_VERSION", "DEFAULT_PROTOCOL"]

DEFAULT_PROTOCOL = torch_format.DEFAULT_PROTOCOL
_FORMATS = (None, "ddp", "torch", "safetensors")


def save(obj, f, pickle_module=None, pickle_protocol=DEFAULT_PROTOCOL,
         _use_new_zipfile_serialization=True, _disable_byteorder_record=False, *, format=None):
    """Save ``obj`` to ``f``, a path (written atomically) or a binary file object.

    ``format`` chooses the file format:

    * ``None`` (default): the ddp format when it can hold ``obj`` (tensors, Parameters, NumPy
      arrays, nested dict/OrderedDict/list/tuple/set of them and plain Python values: every
      ``state_dict`` and ``{"epoch": ..., "model": ..., "optim": ...}`` checkpoint), otherwise
      PyTorch's format with ``obj`` pickled whole, as ``torch.save(model, f)`` does (load it
      with ``ddp.load(f, weights_only=False)``). ``_use_new_zipfile_serialization=False`` asks
      for PyTorch's legacy format, as in torch.
    * ``"ddp"``: the ddp format, or ``TypeError`` for an object it cannot hold.
    * ``"torch"``: PyTorch's zip format (``torch.load(f)`` reads it with its default
      ``weights_only=True`` when ``obj`` is a state_dict-like object; tensors that share memory
      share one storage, as in torch). ``pickle_protocol`` is honoured (torch's default 2).
    * ``"safetensors"``: a flat ``{name: tensor}`` dict, see :func:`save_safetensors`.

    CUDA tensors are copied to the host one at a time and remember their device.
    ``pickle_module`` and ``_disable_byteorder_record`` are accepted and ignored.

    Example:
        >>> ckpt = {"epoch": 3, "model": ddp.nn.Linear(2, 1).state_dict(), "betas": (0.9, 0.99)}
        >>> ddp.save(ckpt, tmp_path / "ckpt.pt")
        >>> ddp.load(tmp_path / "ckpt.pt")["betas"]
        (0.9, 0.99)
        >>> ddp.save(ckpt, tmp_path / "for_torch.pt", format="torch")   # torch.load reads it
        >>> ddp.load(tmp_path / "for_torch.pt")["model"]["weight"].shape
        ddp.Size([1, 2])
    """
    if format not in _FORMATS:
        raise ValueError(f"ddp.save: format must be one of 'ddp', 'torch', 'safetensors' or "
                         f"None, got {format!r}")
    if format == "safetensors":
        return save_safetensors(obj, f)
    encoded = None
    if format == "ddp" or (format is None and _use_new_zipfile_serialization):
        try:
            encoded = native.encode(obj)
        except native.Unsupported:
            if format == "ddp":
                raise

    def write(fh):
        if encoded is not None:
            native.write(fh, *encoded)
        elif _use_new_zipfile_serialization:
            torch_format.write_zip(fh, obj, pickle_protocol, torch_format.archive_name(f))
        else:
            torch_format.write_legacy(fh, obj, pickle_protocol)

    if files.is_path(f):
        with atomic_write(f) as fh:
            write(fh)
    else:
        write(f)


def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None,
         **pickle_load_args):
    """Load an object from a path or binary file object written by :func:`save`, by
    ``torch.save`` (zip or legacy format), or in the safetensors format (a dict of tensors).

    ``weights_only=True`` (the default ``None`` means True, as in torch, unless the environment
    sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` — PyTorch's switch for programs written before 2.6
    that save whole models — and ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` wins over it): nothing in the
    file can run code. ddp files
    and safetensors hold no code at all; PyTorch files are read by a restricted unpickler that
    accepts tensors, storages, Parameters, OrderedDict, plain containers and values, dtypes,
    ``torch.Size``/``torch.device`` and what :func:`add_safe_globals` allows, and refuses
    anything else with ``pickle.UnpicklingError: Weights only load failed ...`` naming the
    global. ``weights_only=False`` unpickles whole objects (a saved Module or optimizer); it can
    run arbitrary code from the file, so use it only for files you trust. Even then a pickle
    that is not a torch.save file is refused. ``pickle_module`` and ``mmap`` are accepted for
    PyTorch compatibility and change nothing.

    ``map_location`` places the tensors: ``None`` (the device they were saved from; a CUDA
    tensor raises when CUDA is unavailable), ``'cpu'`` / ``'cuda:1'`` / a ``ddp.device`` (all
    there), a dict ``{'cuda:0': 'cpu'}`` (saved location -> new one, others unchanged), or a
    callable ``fn(cpu_tensor, saved_location)`` returning a tensor, or ``None`` for the default.

    A damaged or crafted file raises ``RuntimeError: ddp.load: <name> is corrupt or truncated:
    ...``. Loading from a path also removes temporaries that writers killed mid-save left in its
    directory.

    Example:
        >>> ddp.save({"w": ddp.ones(2)}, tmp_path / "m.pt")
        >>> ddp.load(tmp_path / "m.pt", map_location="cpu")
        {'w': tensor([1., 1.])}
    """
    if weights_only is None:
        weights_only = _default_weights_only()
    return _load(f, map_location, weights_only)


def _default_weights_only():
    """PyTorch's resolution of ``weights_only=None`` from its two environment switches."""
    import os

    def true(name):
        return os.environ.get(name, "0").strip().lower() in ("1", "y", "yes", "true")
    if true("TORCH_FORCE_WEIGHTS_ONLY_LOAD"):
        return True
    return not true("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")


def verify(f):
    """Check a file's integrity without building tensors; return True, or raise RuntimeError
    like :func:`load`. ddp files: both checksums, sizes and the header; safetensors: sizes and
    the header; torch zip files: every record's CRC-32; legacy torch files carry no checksum and
    are read in full (as ``load(f, weights_only=True)``).

    Example:
        >>> ddp.save([1, 2], tmp_path / "x.pt"); verify(tmp_path / "x.pt")
        True
    """
    _load(f, "cpu", True, build=False)
    return True


def detect_format(f):
    """Name the format of a file from its first bytes: ``'ddp'``, ``'safetensors'``,
    ``'zip'`` (e.g. a ``torch.save`` checkpoint), ``'pickle'`` (e.g. a legacy ``torch.save``
    file), ``'empty'`` or ``'unknown'``.

    Reads at most 9 bytes; a file object is left positioned after them.

    Example:
        >>> ddp.save(ddp.ones(1), tmp_path / "t.pt"); detect_format(tmp_path / "t.pt")
        'ddp'
    """
    with files.opened(f) as fh:
        return sniff(files.read_upto(fh, 9))


def _rewound(fh, head):
    """``fh`` positioned where ``head`` started, or an in-memory copy when it cannot seek."""
    try:
        if fh.seekable():
            fh.seek(-len(head), os.SEEK_CUR)
            return fh
    except (AttributeError, OSError, ValueError):
        pass
    return io.BytesIO(head + fh.read())


def _load(f, map_location, weights_only, build=True):
    name = files.name_of(f)
    restore = Restorer(map_location, name)
    if files.is_path(f):
        remove_stale_temporaries(os.path.dirname(os.path.abspath(os.fsdecode(f))))
    with files.opened(f) as fh:
        try:
            head = files.read_upto(fh, len(MAGIC))
            if head == MAGIC:
                obj = native.read(fh, name, restore, build)
                if files.is_path(f) and fh.read(1):
                    raise Corrupt("unexpected data after the end of the ddp file")
                return obj
            head += files.read_upto(fh, 9 - len(head)) if len(head) == len(MAGIC) else b""
            kind = sniff(head)
            if kind == "ddp":
                raise Truncated(f"file is only {len(head)} bytes long")
            if kind == "safetensors":
                from .safetensors_format import read
                tensors, _ = read(fh, head, name, restore)
                return tensors if build else None
            if kind in ("zip", "pickle"):
                reader = torch_format.read_zip if kind == "zip" else torch_format.read_legacy
                return reader(_rewound(fh, head), name, restore, weights_only, build)
            raise refuse(kind, name, head)
        except (Truncated, Corrupt) as exc:
            raise RuntimeError(f"ddp.load: {name} is corrupt or truncated: {exc}") from None
