"""The pickle side of PyTorch's checkpoint format: a restricted unpickler with
``torch.load(weights_only=True)`` semantics, the unrestricted one (``weights_only=False``, an
explicit opt-in), and the pickler that writes tensors the way ``torch.save`` does.

**Restricted loading never runs code from the file.** ``find_class`` resolves a global only from
an allow-list (the names torch's ``torch/_weights_only_unpickler.py`` accepts for state dicts:
``collections.OrderedDict``/``Counter``, ``torch._utils._rebuild_tensor*``/``_rebuild_parameter*``,
storage types, dtypes, ``torch.Size``/``device``/``Tensor``/``nn.Parameter``, ``_codecs.encode``,
``builtins.set``/``frozenset``/``bytes``/``bytearray``/``complex``) and maps each to ddp's own
implementation (so no torch is needed). Every opcode that could call or mutate something is
checked too, because an allow-list of globals alone is not enough: ``REDUCE`` calls only
allow-listed callables (the builtins through wrappers that refuse sizes, e.g.
``bytearray(10**12)``), ``NEWOBJ`` builds only ``Parameter`` and allow-listed classes, ``BUILD``
sets attributes only on ``OrderedDict``/``Counter`` (a ``BUILD`` on ``ddp.float32`` would
otherwise change the dtype for the whole process), ``APPEND``/``SETITEM``/``ADDITEMS`` only
fill lists/dicts/sets, persistent ids are storages only, and ``INST``/``OBJ``/``EXT*``/``PERSID``
and out-of-band buffers are refused. A refusal raises :class:`pickle.UnpicklingError` with
PyTorch's message ("Weights only load failed ... Unsupported global: GLOBAL posix.system ...").

Example:
    >>> import io, os, pickle
    >>> class Evil:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo pwned",))
    >>> try:
    ...     ddp.load(io.BytesIO(pickle.dumps(Evil(), protocol=2)))
    ... except pickle.UnpicklingError as e:
    ...     print(str(e).splitlines()[-3])
    Trying to load unsupported GLOBAL posix.system whose module posix is blocked.
"""
from __future__ import annotations

import _compat_pickle
import contextlib
import functools
import pickle
from collections import Counter, OrderedDict

import numpy as np

from .. import backend
from ..tensor import Size, Tensor
from .files import Corrupt

__all__ = ["add_safe_globals", "safe_globals", "get_safe_globals", "clear_safe_globals",
           "TorchUnpickler", "TorchPickler"]

# Modules never allowed, even if allow-listed (torch's list).
_BLOCKED_MODULES = ("sys", "os", "posix", "nt")

# storage class name -> ddp dtype name (None: a dtype ddp lacks; UntypedStorage: bytes)
STORAGE_DTYPES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
                  "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                  "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
                  "BoolStorage": "bool", "UntypedStorage": "uint8"}
_FOREIGN_STORAGES = ("ComplexFloatStorage", "ComplexDoubleStorage", "QInt8Storage",
                     "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage")
DTYPE_TO_STORAGE = {v: k for k, v in STORAGE_DTYPES.items() if k != "UntypedStorage"}
# torch dtype names (and aliases) ddp has
_TORCH_DTYPES = {**{n: n for n in backend._BY_NAME},
                 "float": "float32", "double": "float64", "half": "float16", "long": "int64",
                 "int": "int32", "short": "int16"}
_FOREIGN_DTYPES = ("complex32", "complex64", "complex128", "cfloat", "cdouble", "chalf",
                   "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2",
                   "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
                   "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "bits8", "bits16",
                   "bits1x8", "bits2x4", "bits4x2", "int1", "int2", "int3", "int4", "int5",
                   "int6", "int7", "uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7")
_FOREIGN_TENSORS = {  # rebuild functions torch allows for tensor kinds ddp does not have
    "_rebuild_sparse_tensor": "a sparse tensor", "_rebuild_qtensor": "a quantized tensor",
    "_rebuild_meta_tensor_no_storage": "a meta tensor", "_rebuild_nested_tensor":
    "a nested tensor", "_rebuild_wrapper_subclass": "a tensor subclass",
    "_rebuild_device_tensor_from_numpy": "a tensor stored as a NumPy array"}

_UNSAFE = ("Re-running `ddp.load` with `weights_only` set to `False` will likely succeed, but "
           "it can result in arbitrary code execution. Do it only if you got the file from a "
           "trusted source.")
_DOCS = ("\n\nCheck the documentation of ddp.load (docs/checkpoints.md) to learn more about "
         "types accepted by default with weights_only.")


class Refused(pickle.UnpicklingError):
    """Internal: the restricted unpickler refused something (not a damaged file)."""

    def __init__(self, message, allowlist_hint=False):
        super().__init__(message)
        self.allowlist_hint = allowlist_hint


def weights_only_error(refusal):
    """PyTorch's ``torch.load`` message for a weights-only refusal."""
    msg = str(refusal)
    if refusal.allowlist_hint:
        text = ("Weights only load failed. This file can still be loaded, to do so you have two "
                "options, do those steps only if you trust the source of the checkpoint. "
                f"\n\t(1) {_UNSAFE}\n\t(2) Alternatively, to load with `weights_only=True` "
                "please check the recommended steps in the following error message."
                f"\n\tWeightsUnpickler error: {msg}")
    else:
        text = f"Weights only load failed. {_UNSAFE}\n\n\n{msg}"
    return pickle.UnpicklingError(text + _DOCS)


# --------------------------------------------------------------------------- user allow-list

_user_globals: set = set()


def add_safe_globals(safe_globals):
    """Allow ``weights_only`` loading to build these classes / call these functions (as
    ``torch.serialization.add_safe_globals``): a list of objects, or of ``(object, "module.name")``
    pairs for an object saved under another name.

    Example:
        >>> class Config:
        ...     pass
        >>> add_safe_globals([Config]); Config in get_safe_globals()
        True
        >>> clear_safe_globals()
    """
    for g in safe_globals:
        if isinstance(g, tuple) and not (len(g) == 2 and isinstance(g[1], str)):
            raise TypeError(f"add_safe_globals: expected (global, 'module.name'), got {g!r}")
    _user_globals.update(safe_globals)


def get_safe_globals():
    """The objects added with :func:`add_safe_globals`.

    Example:
        >>> get_safe_globals()
        []
    """
    return list(_user_globals)


def clear_safe_globals():
    """Forget every object added with :func:`add_safe_globals`.

    Example:
        >>> clear_safe_globals(); get_safe_globals()
        []
    """
    _user_globals.clear()


@contextlib.contextmanager
def safe_globals(globals_list):
    """Allow these globals for ``weights_only`` loading inside the block only.

    Example:
        >>> import fractions
        >>> with safe_globals([fractions.Fraction]):
        ...     fractions.Fraction in get_safe_globals()
        True
        >>> fractions.Fraction in get_safe_globals()
        False
    """
    new = [g for g in globals_list if g not in _user_globals]
    add_safe_globals(new)
    try:
        yield
    finally:
        _user_globals.difference_update(new)


def _user_allowed():
    out = {}
    for g in _user_globals:
        if isinstance(g, tuple):
            out[g[1]] = g[0]
        else:
            out[f"{g.__module__}.{g.__qualname__}"] = g
    return out


# --------------------------------------------------------------------------- safe builtins

def _encode(obj, encoding="utf-8", errors="strict"):   # _codecs.encode, as pickle writes bytes
    if type(obj) is not str or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise Refused(f"_codecs.encode is allowed only for text to bytes, got "
                      f"{type(obj).__name__} with encoding {encoding!r}")
    return obj.encode(encoding, errors)


def _bytes_like(name, make):
    def build(*args):
        if not args:
            return make()
        if len(args) == 1 and type(args[0]) in (bytes, bytearray):
            return make(args[0])
        raise Refused(f"builtins.{name} is allowed only from bytes (no sizes), got "
                      f"{tuple(type(a).__name__ for a in args)}")
    build.__name__ = name
    return build


def _complex(real=0.0, imag=0.0):
    if not all(type(v) in (int, float, bool) for v in (real, imag)):
        raise Refused("builtins.complex is allowed only from two numbers")
    return complex(real, imag)


@functools.lru_cache(maxsize=None)
def storage_type(name):
    """The object standing for a torch storage class (``torch.FloatStorage``) in a pickle."""
    return _StorageType(name)


class _StorageType:
    __slots__ = ("name", "dtype")

    def __init__(self, name):
        self.name = name
        self.dtype = backend._BY_NAME[STORAGE_DTYPES[name]]

    def __repr__(self):
        return f"torch.{self.name}"


def _layout(name):  # torch.serialization._get_layout("torch.strided")
    return str(name)


# --------------------------------------------------------------------------- unpickling

class TorchUnpickler(pickle._Unpickler):
    """Unpickle a torch ``data.pkl`` (or a legacy file's object pickle).

    ``storages(pid)`` gives the storage for a persistent id ``('storage', type, key, location,
    numel[, view])``. With ``weights_only=True`` every global and every opcode that could call
    or change something is checked (see the module docstring); with ``weights_only=False`` any
    global is imported (``torch.*`` names that ddp has are read as ddp's: ``import ddp as
    torch``), which can run arbitrary code.

    Tensors are views (``offset``, ``size``, ``stride``) of their storage, so tensors that
    shared a storage when saved share it again.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, storages, weights_only=True):
        super().__init__(file, encoding="utf-8")
        self._storages = storages
        self.weights_only = weights_only
        self.views = []          # (tensor, storage, offset, size, stride) of every tensor built
        self._spec = {}          # id(tensor) -> its entry in views
        self._globals = self._known_globals()
        self._user = _user_allowed() if weights_only else {}
        allowed = [g for g in list(self._globals.values()) + list(self._user.values())
                   if callable(g) and not isinstance(g, (backend.dtype, _StorageType))]
        self._callables = {id(g) for g in allowed}
        self._classes = {id(g) for g in allowed if isinstance(g, type)} - {id(Tensor)}
        self._user_types = {id(g) for g in self._user.values() if isinstance(g, type)}
        self._rebuilders = tuple(self._globals[f"torch._utils._rebuild_{n}"] for n in (
            "tensor", "tensor_v2", "tensor_v3", "parameter", "parameter_with_state"))

    # ----------------------------------------------------------- the allow-list
    def _known_globals(self):
        from ..nn.parameter import Parameter
        g = {"collections.OrderedDict": OrderedDict, "collections.Counter": Counter,
             "torch.nn.parameter.Parameter": Parameter, "torch.Size": Size, "torch.Tensor": Tensor,
             "torch.device": backend.device, "torch.serialization._get_layout": _layout,
             "_codecs.encode": _encode, "builtins.set": set, "builtins.frozenset": frozenset,
             "builtins.bytearray": _bytes_like("bytearray", bytearray),
             "builtins.bytes": _bytes_like("bytes", bytes), "builtins.complex": _complex,
             "torch._utils._rebuild_tensor": self._rebuild_tensor,
             "torch._utils._rebuild_tensor_v2": self._rebuild_tensor_v2,
             "torch._utils._rebuild_tensor_v3": self._rebuild_tensor_v3,
             "torch._utils._rebuild_parameter": self._rebuild_parameter,
             "torch._utils._rebuild_parameter_with_state": self._rebuild_parameter_with_state,
             "torch._utils._rebuild_device_tensor_from_cpu_tensor": self._rebuild_on_device,
             "torch._tensor._rebuild_from_type_v2": self._rebuild_from_type_v2}
        for name in STORAGE_DTYPES:
            for module in ("torch", "torch.cuda", "torch.storage"):
                g[f"{module}.{name}"] = storage_type(name)
        g["torch.storage.TypedStorage"] = g["torch.TypedStorage"] = storage_type("UntypedStorage")
        for name, ours in _TORCH_DTYPES.items():
            g[f"torch.{name}"] = backend._BY_NAME[ours]
        return g

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full in self._globals:
            return self._globals[full]
        if module in ("torch", "torch._utils", "torch.storage", "torch.cuda"):
            what = _FOREIGN_TENSORS.get(name)
            if what is None and (name in _FOREIGN_STORAGES or name in _FOREIGN_DTYPES):
                what = f"data of type torch.{name}"
            if what is not None:
                raise RuntimeError(f"ddp.load: the file holds {what} ({full}), which ddp does "
                                   f"not support")
        if not self.weights_only:
            return self._import(module, name)
        if module.split(".")[0] in _BLOCKED_MODULES:
            raise Refused(f"Trying to load unsupported GLOBAL {full} whose module {module} is "
                          f"blocked.")
        if full in self._user:
            return self._user[full]
        shown = full[len("builtins."):] if module == "builtins" else full
        raise Refused(f"Unsupported global: GLOBAL {shown} was not an allowed global by default. "
                      f"Please use `ddp.serialization.add_safe_globals([{shown}])` or the "
                      f"`ddp.serialization.safe_globals([{shown}])` context manager to allowlist "
                      f"this global if you trust this class/function.", allowlist_hint=True)

    def _import(self, module, name):
        """weights_only=False: any global. ``torch.a.b.Name`` is read as ddp's ``Name`` from
        ``ddp.a.b``, ``ddp.a`` or ``ddp`` (the first that has it: ``torch.nn.modules.linear.Linear``
        is ``ddp.nn.Linear``), so a whole module pickled by torch.save loads into ddp."""
        if module != "torch" and not module.startswith("torch."):
            return super().find_class(module, name)
        parts = ["ddp"] + module.split(".")[1:]
        while parts:
            try:
                return super().find_class(".".join(parts), name)
            except (ImportError, AttributeError):
                parts.pop()
        raise pickle.UnpicklingError(f"ddp.load: the file needs {module}.{name}, which ddp does "
                                     f"not have; load the object's state_dict instead")

    def persistent_load(self, pid):
        if self.weights_only and not (type(pid) is tuple and pid and pid[0] in ("storage",
                                                                               b"storage")):
            raise Refused(f"Only persistent_load of storage is allowed, but got {pid!r:.100}")
        if self._storages is None:
            raise Refused("persistent ids are not allowed here")
        return self._storages(pid)

    # ----------------------------------------------------------- checked opcodes
    def _load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in self._callables:
            raise Refused(f"Trying to call reduce for unrecognized function {func!r:.200}")
        if type(args) is not tuple:
            raise Corrupt("REDUCE arguments are not a tuple")
        self.stack[-1] = func(*args)

    def _load_newobj(self, kwargs=None):
        from ..nn.parameter import Parameter
        args = self.stack.pop()
        cls = self.stack.pop()
        if type(args) is not tuple or (kwargs is not None and type(kwargs) is not dict):
            raise Corrupt("NEWOBJ arguments are not a tuple")
        if cls is Parameter:
            self.append(Parameter(*args, **(kwargs or {})))
        elif id(cls) in self._classes:
            self.append(cls.__new__(cls, *args, **(kwargs or {})))
        else:
            raise Refused(f"Can only create new object for nn.Parameter or classes allowlisted "
                          f"via `add_safe_globals` but got {cls!r:.200}")

    def _load_newobj_ex(self):
        self._load_newobj(self.stack.pop())

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) in (OrderedDict, Counter):   # Module.state_dict()'s _metadata
            if type(state) is not dict or not all(type(k) is str and not k.startswith("__")
                                                  for k in state):
                raise Refused(f"BUILD of {type(inst).__name__} with state {state!r:.100}")
            inst.__dict__.update(state)
        elif id(type(inst)) in self._user_types:
            self.stack.append(state)
            pickle._Unpickler.load_build(self)      # the user trusts this class
        else:
            raise Refused(f"Can only build OrderedDict or types allowlisted via "
                          f"`add_safe_globals`, but got {type(inst)!r:.200}")

    def _container(self, kinds, opcode):
        target = self.stack[-1]
        if type(target) not in kinds:
            raise Refused(f"Can only {opcode} for {', '.join(k.__name__ for k in kinds)}, but got "
                          f"{type(target)!r:.200}")
        return target

    def _load_append(self):
        value = self.stack.pop()
        self._container((list,), "APPEND").append(value)

    def _load_appends(self):
        items = self.pop_mark()
        self._container((list,), "APPENDS").extend(items)

    def _load_setitem(self):
        value, key = self.stack.pop(), self.stack.pop()
        self._container((dict, OrderedDict, Counter), "SETITEM")[key] = value

    def _load_setitems(self):
        items = self.pop_mark()
        target = self._container((dict, OrderedDict, Counter), "SETITEMS")
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def _load_additems(self):
        items = self.pop_mark()
        self._container((set,), "ADDITEMS").update(items)

    _CHECKED = {pickle.REDUCE: _load_reduce, pickle.NEWOBJ: _load_newobj,
                pickle.NEWOBJ_EX: _load_newobj_ex, pickle.BUILD: _load_build,
                pickle.APPEND: _load_append, pickle.APPENDS: _load_appends,
                pickle.SETITEM: _load_setitem, pickle.SETITEMS: _load_setitems,
                pickle.ADDITEMS: _load_additems}
    _REFUSED = (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.PERSID,
                pickle.NEXT_BUFFER, pickle.READONLY_BUFFER)

    def load(self):
        if self.weights_only:
            self.dispatch = _RESTRICTED_DISPATCH
        return super().load()

    # ----------------------------------------------------------- tensors
    def _view(self, storage, offset, size, stride, dtype=None):
        if not isinstance(storage, Storage):
            raise Corrupt(f"a tensor's storage is a {type(storage).__name__}")
        for what, v in (("size", size), ("stride", stride)):
            if type(v) not in (tuple, list, Size) or not all(type(s) is int for s in v):
                raise Corrupt(f"bad tensor {what} {v!r:.100}")
        if type(offset) is not int or len(size) != len(stride):
            raise Corrupt(f"bad tensor offset {offset!r:.50} or size/stride lengths")
        arr = storage.typed(dtype)
        if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise Corrupt(f"negative tensor offset, size or stride ({offset}, {size}, {stride})")
        if 0 not in size:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= arr.shape[0]:
                raise Corrupt(f"a tensor of size {tuple(size)} and stride {tuple(stride)} at "
                              f"offset {offset} reaches past its storage of {arr.shape[0]} "
                              f"elements")
        elif offset > arr.shape[0]:
            raise Corrupt(f"tensor offset {offset} past its storage of {arr.shape[0]} elements")
        t = Tensor._make(strided(arr, offset, size, stride))
        self._register(t, (storage, offset, tuple(size), tuple(stride), dtype))
        return t

    def _register(self, t, spec):
        entry = (t,) + spec
        self.views.append(entry)
        self._spec[id(t)] = entry

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        return self._view(storage, storage_offset, size, stride)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        t = self._view(storage, storage_offset, size, stride)
        if requires_grad is True:
            t.requires_grad_(True)
        return t

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad, backward_hooks,
                           dtype, metadata=None):
        if not isinstance(dtype, backend.dtype):
            raise Corrupt(f"bad tensor dtype {dtype!r:.50}")
        t = self._view(storage, storage_offset, size, stride, dtype)
        if requires_grad is True:
            t.requires_grad_(True)
        return t

    def _parameter(self, data, requires_grad):
        from ..nn.parameter import Parameter
        if not isinstance(data, Tensor):
            raise Corrupt(f"a Parameter's data is a {type(data).__name__}")
        p = Parameter(data, requires_grad=requires_grad is True)
        spec = self._spec.get(id(data))
        if spec is not None:
            self._register(p, spec[1:])
        return p

    def _rebuild_parameter(self, data, requires_grad, backward_hooks=None):
        return self._parameter(data, requires_grad)

    def _rebuild_parameter_with_state(self, data, requires_grad, backward_hooks, state):
        p = self._parameter(data, requires_grad)
        _set_state(p, state)
        return p

    def _rebuild_from_type_v2(self, func, new_type, args, state):
        from ..nn.parameter import Parameter
        if not any(func is f for f in self._rebuilders) or type(args) is not tuple:
            raise Refused(f"_rebuild_from_type_v2 with {func!r:.100}")
        if new_type not in (Tensor, Parameter):
            raise Refused(f"_rebuild_from_type_v2 to {new_type!r:.100}: only ddp.Tensor and "
                          f"ddp.nn.Parameter")
        t = func(*args)
        if new_type is Parameter and not isinstance(t, Parameter):
            t = self._parameter(t, t.requires_grad)
        _set_state(t, state)
        return t

    def _rebuild_on_device(self, data, dtype, device, requires_grad):
        if not isinstance(data, Tensor) or not isinstance(dtype, backend.dtype):
            raise Corrupt("bad _rebuild_device_tensor_from_cpu_tensor arguments")
        t = data.to(dtype=dtype, device=device)
        if requires_grad is True:
            t.requires_grad_(True)
        return t


def _refused_opcode(op):
    def refuse(self):
        raise Refused(f"Unsupported operand {op!r} (an opcode that can run code or reach "
                      f"outside the file)")
    return refuse


_RESTRICTED_DISPATCH = dict(TorchUnpickler.dispatch)
_RESTRICTED_DISPATCH.update({op[0]: method for op, method in TorchUnpickler._CHECKED.items()})
_RESTRICTED_DISPATCH.update({op[0]: _refused_opcode(op) for op in TorchUnpickler._REFUSED})


class Storage:
    """A torch storage read from a file: a flat array (on its device) and where it was saved."""

    __slots__ = ("array", "location")

    def __init__(self, array, location):
        self.array, self.location = array, location

    def typed(self, dtype=None):
        """The storage's elements as ``dtype`` (a view of the same bytes)."""
        arr = self.array
        if dtype is None or dtype.np == arr.dtype:
            return arr
        if arr.nbytes % dtype.np.itemsize:
            raise Corrupt(f"a storage of {arr.nbytes} bytes cannot hold {dtype} elements")
        return arr.view(np.uint8).view(dtype.np)


def _set_state(t, state):
    if state in (None, {}):
        return
    if type(state) is not dict or not all(type(k) is str and not k.startswith("__") for k in state):
        raise Refused(f"tensor attributes {state!r:.100}")
    t.__dict__.update(state)


def strided(arr, offset, size, stride):
    """The view of the 1-D array ``arr`` that torch describes by offset, size and stride (in
    elements); the caller has checked that it stays inside ``arr``."""
    xp = backend.get_array_module(arr)
    item = arr.dtype.itemsize
    return xp.lib.stride_tricks.as_strided(arr[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))


def check_depth(obj, limit):
    """Raise Corrupt when the containers in ``obj`` nest deeper than ``limit`` (iteratively, so a
    crafted 200,000-deep pickle is refused here rather than by a RecursionError later)."""
    stack, seen = [(obj, 0)], set()
    while stack:
        o, depth = stack.pop()
        t = type(o)
        if t not in (list, tuple, dict, OrderedDict, Counter, set, frozenset, Size) or id(o) in seen:
            continue
        if depth >= limit:
            raise Corrupt(f"the object nests deeper than {limit} levels")
        seen.add(id(o))
        items = list(o.keys()) + list(o.values()) if isinstance(o, dict) else o
        stack.extend((v, depth + 1) for v in items)


# --------------------------------------------------------------------------- pickling

@functools.lru_cache(maxsize=None)
def global_name(module, name):
    """A global that the pickle names by ``module`` and ``name`` (no import: torch need not exist)."""
    return _Global(module, name)


class _Global:
    __slots__ = ("module", "name")

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):   # pickle's save_reduce wants a callable; this only names one
        raise TypeError(f"{self.module}.{self.name} is a name written into a pickle")


class _TensorData:
    """A Parameter's data, pickled as a plain tensor (torch: ``_rebuild_parameter(data, ...)``)."""
    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor


class TorchPickler(pickle._Pickler):
    """Pickle an object the way ``torch.save`` does: a tensor becomes
    ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` of a
    persistent storage id, a Parameter ``_rebuild_parameter``, ``ddp.Size``/``device``/dtypes
    become ``torch.Size``/``torch.device``/``torch.float32``; everything else is pickled as usual
    (a whole Module then names ddp's classes). ``storages.ref(array)`` gives
    ``(persistent id, offset, stride)`` for an array."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, protocol, storages):
        super().__init__(file, protocol)
        self._storages = storages

    def _save_global_name(self, obj):
        # a dtype is torch.float32, a storage type torch.FloatStorage
        g = obj if isinstance(obj, _Global) else global_name("torch", obj.name)
        if self.proto >= 4:
            self.save(g.module)
            self.save(g.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{g.module}\n{g.name}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch[_Global] = _save_global_name
    dispatch[backend.dtype] = _save_global_name
    dispatch[_StorageType] = _save_global_name

    def persistent_id(self, obj):
        return self._storages.persistent_id(obj)

    def reducer_override(self, obj):
        if isinstance(obj, Tensor):
            from ..nn.parameter import Parameter
            if isinstance(obj, Parameter):
                return (global_name("torch._utils", "_rebuild_parameter"),
                        (_TensorData(obj), obj._requires_grad, OrderedDict()))
            return self._tensor(obj._data, obj._requires_grad)
        if type(obj) is _TensorData:
            return self._tensor(obj.tensor._data, False)
        if type(obj) is Size:
            return (global_name("torch", "Size"), (tuple(obj),))
        if type(obj) is bytes and not obj and self.proto < 3:
            # pickle writes b"" as builtins.bytes(), which torch's weights-only reader refuses
            return (global_name("_codecs", "encode"), ("", "latin1"))
        if type(obj) is backend.device:
            return (global_name("torch", "device"),
                    (obj.type,) if obj.index is None else (obj.type, obj.index))
        return NotImplemented

    def _tensor(self, arr, requires_grad):
        storage, offset, stride = self._storages.ref(arr)
        return (global_name("torch._utils", "_rebuild_tensor_v2"),
                (storage, offset, tuple(int(s) for s in arr.shape), stride, bool(requires_grad),
                 OrderedDict()))


def strides_in_elements(arr):
    """``arr``'s strides in elements, or None when torch cannot describe them (negative or not a
    multiple of the element size)."""
    item = arr.dtype.itemsize
    if any(s < 0 or s % item for s in arr.strides):
        return None
    return tuple(s // item for s in arr.strides)


def memory_base(arr):
    """(base, element offset) of a NumPy view inside the contiguous array that owns its memory,
    or None when there is no such base of the same dtype."""
    base = arr
    while isinstance(base.base, np.ndarray):
        base = base.base
    if base is arr or base.dtype != arr.dtype or not (base.flags.c_contiguous or
                                                      base.flags.f_contiguous):
        return None
    delta = arr.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    if delta < 0 or delta % arr.dtype.itemsize:
        return None
    return base, delta // arr.dtype.itemsize
