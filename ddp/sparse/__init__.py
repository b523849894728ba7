"""Sparse COO tensors: ``ddp.sparse_coo_tensor``, ``Tensor.to_sparse``, ``to_dense``, and
products with dense operands (``S @ D``, ``ddp.sparse.mm``) whose gradient reaches the dense
side — what graph networks need (a sparse adjacency or scaling matrix times features).

A sparse tensor holds a SciPy ``coo_array`` (CuPy's ``cupyx.scipy.sparse.coo_matrix`` on a GPU);
products run there. It is 2-D with scalar values (PyTorch's ``sparse_dim=2, dense_dim=0``),
its values carry no gradient, and the ops it supports are listed on :class:`SparseTensor`;
others say so and point to ``to_dense()``.

Example:
    >>> s = ddp.sparse_coo_tensor([[0, 1], [1, 0]], [2.0, 3.0], (2, 2))
    >>> s.to_dense()
    tensor([[0., 2.],
            [3., 0.]])
    >>> x = ddp.ones(2, 1, requires_grad=True)
    >>> (s @ x).sum().backward(); x.grad
    tensor([[3.],
            [2.]])
"""
from __future__ import annotations

import importlib
import numbers

import numpy as np

from .. import backend
from ..creation import tensor as _tensor
from ..ops.sparse import SparseMM
from ..tensor import Tensor, _init

__all__ = ["SparseTensor", "sparse_coo_tensor", "mm", "addmm", "sum", "strided", "sparse_coo"]


def _module(xp):
    """SciPy's sparse module for NumPy arrays, else the one beside the backend's CUDA module."""
    if xp is np:
        import scipy.sparse
        return scipy.sparse
    extras = backend.cuda_extras()
    try:
        return importlib.import_module(extras.__name__ + ".scipy.sparse")
    except ImportError as exc:
        raise NotImplementedError(f"sparse tensors on CUDA need {extras.__name__}.scipy.sparse, "
                                  f"which this CUDA module lacks ({exc})") from exc


def _coo(module, values, rows, cols, shape):
    make = getattr(module, "coo_array", None) or module.coo_matrix
    return make((values, (rows, cols)), shape=shape)


class SparseTensor(Tensor):
    """A 2-D sparse COO tensor (``layout == ddp.sparse_coo``).

    Supported: ``@``/``mm``/``matmul`` with a dense matrix or vector on either side (dense
    result, gradient to the dense side), ``+``/``-`` with dense (dense result) or sparse
    (sparse result), ``*``/``/`` by a number, ``to_dense``, ``coalesce``, ``indices``,
    ``values``, ``_nnz``, ``t``, ``to``/``cpu``/``cuda``/dtype casts, ``shape``/``size``.
    """
    is_sparse = True

    def __init__(self, *args, **kwargs):
        raise TypeError("SparseTensor is made by ddp.sparse_coo_tensor(...) or Tensor.to_sparse()")

    __slots__ = ()

    @classmethod
    def _wrap(cls, coo):
        t = object.__new__(cls)
        _init(t, coo)
        return t

    # ------------------------------------------------------------------ what it is
    @property
    def layout(self):
        return sparse_coo

    @property
    def device(self):
        return backend.device_of(self._data.data)

    @property
    def is_cuda(self):
        return backend.is_cuda_array(self._data.data)

    @property
    def dtype(self):
        return backend.from_numpy_dtype(self._data.dtype)

    @property
    def requires_grad(self):
        return False

    def sparse_dim(self):
        return 2

    def dense_dim(self):
        return 0

    def _nnz(self):
        return int(self._data.nnz)

    def is_coalesced(self):
        return bool(getattr(self._data, "has_canonical_format", False))

    def coalesce(self):
        """Duplicates summed, entries sorted by row then column (PyTorch's order)."""
        c = self._data.copy()
        c.sum_duplicates()
        return SparseTensor._wrap(c)

    def indices(self):
        """The (2, nnz) int64 coordinates (of a coalesced tensor, as PyTorch requires)."""
        if not self.is_coalesced():
            raise RuntimeError("Cannot get indices on an uncoalesced tensor, please call "
                               ".coalesce() first")
        return self._indices()

    def values(self):
        if not self.is_coalesced():
            raise RuntimeError("Cannot get values on an uncoalesced tensor, please call "
                               ".coalesce() first")
        return self._values()

    def _indices(self):
        xp = backend.get_array_module(self._data.data)
        return Tensor._make(xp.stack([self._data.row, self._data.col]).astype(np.int64))

    def _values(self):
        return Tensor._make(self._data.data.copy())

    def to_dense(self, dtype=None):
        """The dense tensor with the same entries (duplicates summed)."""
        dense = Tensor._make(self._data.toarray())
        return dense if dtype is None else dense.to(dtype)

    def to_sparse(self, sparse_dim=None):
        return self

    def __repr__(self):
        c = self.coalesce()
        return (f"tensor(indices={c._indices()!r},\n       values={c._values()!r},\n"
                f"       size={tuple(self.shape)}, nnz={c._nnz()}, layout=ddp.sparse_coo)")

    # ------------------------------------------------------------------ conversions
    def to(self, *args, **kwargs):
        dev, dt = _device_dtype(args, kwargs)
        coo = self._data
        if dt is not None and backend.to_numpy_dtype(dt) != coo.dtype:
            coo = coo.astype(backend.to_numpy_dtype(dt))
        if dev is not None and backend.as_device(dev) != self.device:
            vals = Tensor._make(coo.data).to(dev)._data
            rows = Tensor._make(coo.row).to(dev)._data
            cols = Tensor._make(coo.col).to(dev)._data
            coo = _coo(_module(backend.get_array_module(vals)), vals, rows, cols, coo.shape)
        return self if coo is self._data else SparseTensor._wrap(coo)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None, non_blocking=False):
        return self.to("cuda" if device is None else device)

    def float(self):
        return self.to(backend.float32)

    def double(self):
        return self.to(backend.float64)

    def long(self):
        return self.to(backend.int64)

    def t(self):
        return SparseTensor._wrap(self._data.T.tocoo())

    def transpose(self, dim0, dim1):
        if {dim0 % 2, dim1 % 2} != {0, 1}:
            return self
        return self.t()

    def detach(self):
        return self

    def clone(self):
        return SparseTensor._wrap(self._data.copy())

    # ------------------------------------------------------------------ arithmetic
    def _dense_operand(self, name, other):
        if not isinstance(other, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(other).__name__}")
        if tuple(other.shape) != tuple(self.shape):
            raise RuntimeError(f"{name}: sparse {list(self.shape)} and dense "
                               f"{list(other.shape)} must have the same shape")
        dt = backend.promote_types(self._data.dtype, other._data.dtype)
        return self.to_dense(backend.from_numpy_dtype(dt)), other

    def __add__(self, other):
        if isinstance(other, SparseTensor):
            return SparseTensor._wrap((self._data + other._data).tocoo())
        dense, other = self._dense_operand("add", other)
        return dense + other

    def __radd__(self, other):
        dense, other = self._dense_operand("add", other)
        return other + dense

    def __sub__(self, other):
        if isinstance(other, SparseTensor):
            return SparseTensor._wrap((self._data - other._data).tocoo())
        dense, other = self._dense_operand("sub", other)
        return dense - other

    def __rsub__(self, other):
        dense, other = self._dense_operand("sub", other)
        return other - dense

    def __mul__(self, other):
        if isinstance(other, numbers.Number):
            return SparseTensor._wrap((self._data * other).tocoo())
        raise NotImplementedError("sparse * tensor: multiply by a number, or use to_dense()")

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, numbers.Number):
            return SparseTensor._wrap((self._data / other).tocoo())
        raise NotImplementedError("sparse / tensor: divide by a number, or use to_dense()")

    def __neg__(self):
        return SparseTensor._wrap((-self._data).tocoo())

    def __matmul__(self, other):
        return mm(self, other)

    def __rmatmul__(self, other):
        # D @ S = (S^T @ D^T)^T
        if other.ndim == 1:
            return mm(self.t(), other)
        return mm(self.t(), other.t()).t()

    def matmul(self, other):
        return mm(self, other)

    def mm(self, other):
        return mm(self, other)

    def __getattr__(self, name):
        raise AttributeError(f"'{name}' is not supported on a sparse tensor (layout "
                             f"ddp.sparse_coo); convert with .to_dense() first")


def _unsupported(name):
    def method(self, *args, **kwargs):
        raise NotImplementedError(f"{name}() is not supported on a sparse tensor (layout "
                                  f"ddp.sparse_coo); convert with .to_dense() first")
    method.__name__ = name
    return method


# Dense methods that would misread the COO container: refuse them by name.
for _name in ("sum", "mean", "view", "reshape", "__getitem__", "__setitem__", "numpy", "item",
              "tolist", "exp", "log", "abs", "pow", "__pow__", "max", "min", "softmax",
              "contiguous", "unsqueeze", "squeeze", "permute", "backward", "__gt__", "__lt__",
              "__ge__", "__le__", "__eq__", "__ne__"):
    setattr(SparseTensor, _name, _unsupported(_name))
SparseTensor.__hash__ = Tensor.__hash__


def _device_dtype(args, kwargs):
    dev, dt = kwargs.get("device"), kwargs.get("dtype")
    for a in args:
        if isinstance(a, backend.dtype):
            dt = a
        elif isinstance(a, Tensor):
            dev, dt = a.device, a.dtype
        elif a is not None:
            dev = a
    return dev, dt


class _Layout:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"ddp.{self.name}"


strided = _Layout("strided")
sparse_coo = _Layout("sparse_coo")


# ---------------------------------------------------------------- construction
def sparse_coo_tensor(indices, values, size=None, *, dtype=None, device=None,
                      requires_grad=False, check_invariants=None, is_coalesced=None):
    """A sparse COO tensor with ``values[i]`` at ``indices[:, i]`` (2 x nnz), shaped ``size``
    (default: one past the largest index in each dimension). Duplicates add up.

    Example:
        >>> ddp.sparse_coo_tensor([[0, 2]], [1.0, 5.0], (3,))   # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        NotImplementedError: ...
    """
    idx = indices._data if isinstance(indices, Tensor) else np.asarray(indices)
    vals = values if isinstance(values, Tensor) else _tensor(values)
    if requires_grad:
        raise NotImplementedError("sparse_coo_tensor: gradients to sparse values are not "
                                  "supported (the dense operand of a product gets its gradient)")
    if idx.ndim != 2:
        raise RuntimeError(f"sparse_coo_tensor: indices must be a 2-D (sparse_dim, nnz) tensor, "
                           f"got shape {list(idx.shape)}")
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"sparse_coo_tensor: indices must be an int64 tensor, got {idx.dtype}")
    if idx.shape[0] != 2 or vals.ndim != 1:
        raise NotImplementedError(
            f"sparse_coo_tensor: only 2-D sparse tensors with scalar values are supported (got "
            f"indices of shape {list(idx.shape)} and values of shape {list(vals.shape)})")
    nnz = idx.shape[1]
    if vals.shape[0] != nnz:
        raise RuntimeError(f"sparse_coo_tensor: indices have {nnz} entries but values have "
                           f"{vals.shape[0]} (number of values must match nnz)")
    xp = backend.get_array_module(idx)
    if size is None:
        size = tuple(int(m) + 1 for m in (idx.max(axis=1) if nnz else xp.zeros(2, int)))
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise RuntimeError(f"sparse_coo_tensor: size {list(size)} must have 2 dimensions "
                           f"(the number of index rows)")
    if nnz:
        lo, hi = idx.min(axis=1), idx.max(axis=1)
        for d in range(2):
            if int(lo[d]) < 0 or int(hi[d]) >= size[d]:
                raise RuntimeError(f"sparse_coo_tensor: index {int(hi[d]) if hi[d] >= size[d] else int(lo[d])} "
                                   f"out of bounds for dimension {d} with size {size[d]}")
    if dtype is not None:
        vals = vals.to(dtype)
    if device is not None:
        vals = vals.to(device)
    v = vals._data
    rows = Tensor._make(np.asarray(idx[0]) if xp is np else idx[0]).to(vals.device)._data
    cols = Tensor._make(np.asarray(idx[1]) if xp is np else idx[1]).to(vals.device)._data
    return SparseTensor._wrap(_coo(_module(backend.get_array_module(v)), v, rows, cols, size))


def _to_sparse(self, sparse_dim=None):
    """The sparse COO tensor with this 2-D tensor's nonzero entries.

    Example:
        >>> ddp.eye(2).to_sparse()._nnz()
        2
    """
    if self.ndim != 2 or sparse_dim not in (None, 2):
        raise NotImplementedError(f"to_sparse: only 2-D tensors are supported (got a "
                                  f"{self.ndim}-D tensor{'' if sparse_dim is None else f' and sparse_dim={sparse_dim}'})")
    xp = backend.get_array_module(self._data)
    coo = _module(xp).coo_matrix(self.detach()._data)
    if hasattr(_module(xp), "coo_array") and xp is np:
        coo = _module(xp).coo_array(coo)
    coo.sum_duplicates()
    return SparseTensor._wrap(coo)


def _to_dense_of_dense(self, dtype=None):
    return self if dtype is None else self.to(dtype)


# The seam: dense tensors learn their layout and to become sparse here, once, at import.
Tensor.to_sparse = _to_sparse
Tensor.to_dense = _to_dense_of_dense
Tensor.layout = property(lambda self: strided, doc="``ddp.strided`` for a dense tensor")
Tensor.is_sparse = False


# ---------------------------------------------------------------- products
def mm(sparse, dense):
    """``sparse @ dense`` with a dense (k, m) matrix or (k,) vector: a dense result whose
    gradient reaches ``dense``.

    Example:
        >>> ddp.sparse.mm(ddp.eye(2).to_sparse(), ddp.ones(2, 3)).shape
        ddp.Size([2, 3])
    """
    if not isinstance(sparse, SparseTensor):
        if isinstance(dense, SparseTensor):
            return dense.__rmatmul__(sparse)
        from ..tensor import matmul
        return matmul(sparse, dense)
    if isinstance(dense, SparseTensor):
        return SparseTensor._wrap((sparse._data @ dense._data).tocoo())
    if not isinstance(dense, Tensor):
        raise TypeError(f"mm: expected a Tensor, got {type(dense).__name__}")
    if dense.ndim not in (1, 2) or dense.shape[0] != sparse.shape[1]:
        raise RuntimeError(f"mm: sparse {list(sparse.shape)} and dense {list(dense.shape)} "
                           f"cannot be multiplied ({sparse.shape[1]} != {dense.shape[0] if dense.ndim else '-'})")
    dt = backend.promote_types(sparse._data.dtype, dense._data.dtype)
    s = sparse._data if sparse._data.dtype == dt else sparse._data.astype(dt)
    if dense._data.dtype != dt:
        dense = dense.to(backend.from_numpy_dtype(dt))
    return SparseMM.apply(dense, s=s)


def addmm(mat, mat1, mat2, *, beta=1.0, alpha=1.0):
    """``beta * mat + alpha * (mat1 @ mat2)`` with a sparse ``mat1``."""
    return beta * mat + alpha * mm(mat1, mat2)


def sum(input, dim=None, dtype=None):
    """The sum of a sparse tensor's values (``dim=None``), or a dense sum over ``dim``."""
    if dim is None:
        return input.to_dense(dtype).sum()
    return input.to_dense(dtype).sum(dim)
