"""``Parameter``: a tensor that a Module registers as learnable (``requires_grad`` by default).

Example:
    >>> p = ddp.nn.Parameter(ddp.zeros(2))
    >>> p.requires_grad, p.is_leaf
    (True, True)
"""
from __future__ import annotations

from ..tensor import Tensor, _init


class Parameter(Tensor):
    """A leaf tensor that modules list in ``parameters()``; shares ``data``'s storage."""
    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        from ..creation import zeros
        if data is None:
            data = zeros(0)
        if isinstance(data, Tensor):  # share the array as is: no dtype cast, no move to the CPU
            _init(self, data._data)
            self._vc = data._vc
        else:
            Tensor.__init__(self, data)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (self.detach(), self._requires_grad))

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        p = Parameter(Tensor._make(self._data.copy()), self._requires_grad)
        memo[id(self)] = p
        return p


def _rebuild_parameter(data, requires_grad):
    return Parameter(data, requires_grad)


class Buffer(Tensor):
    """Marks a tensor as a buffer when assigned to a Module attribute (``nn.Buffer``)."""
    __slots__ = ("persistent",)

    def __init__(self, data, persistent=True):
        if isinstance(data, Tensor):  # share the array as is: no dtype cast, no move to the CPU
            _init(self, data._data)
            self._vc = data._vc
        else:
            Tensor.__init__(self, data)
        self.persistent = persistent


class UninitializedTensorMixin:
    """What lazy modules' placeholders share (PyTorch's ``UninitializedTensorMixin``): no shape
    until :meth:`materialize` gives one, which turns the object itself (so that whoever holds it,
    an optimizer say, sees the change) into ``cls_to_become``."""
    __slots__ = ()
    cls_to_become = None

    def materialize(self, shape, device=None, dtype=None):
        """Give this placeholder uninitialised storage of ``shape`` (by default on its own
        device, in its own dtype) and make it a ``cls_to_become``."""
        from ..creation import empty
        self._data = empty(shape, device=self.device if device is None else device,
                           dtype=self.dtype if dtype is None else dtype)._data
        self.__class__ = self.cls_to_become

    @property
    def shape(self):
        raise RuntimeError(
            "Can't access the shape of an uninitialized parameter or buffer. "
            "This error usually happens in `load_state_dict` when trying to load "
            "an uninitialized parameter into an initialized one. "
            "Call `forward` to initialize the parameters before accessing their attributes.")

    def share_memory_(self):
        raise RuntimeError(
            "Can't share memory on an uninitialized parameter or buffer. "
            "Call `forward` to initialize the parameters before calling "
            "`module.share_memory()`.")

    def __repr__(self):
        return f"<{type(self).__name__}>"

    def __reduce_ex__(self, protocol):
        return (type(self), (self._requires_grad, None, self.dtype))

    def __deepcopy__(self, memo):
        if id(self) not in memo:
            memo[id(self)] = type(self)(self._requires_grad, self.device, self.dtype)
        return memo[id(self)]


def is_lazy(param):
    """Whether ``param`` is an ``UninitializedParameter`` or ``UninitializedBuffer``."""
    return isinstance(param, UninitializedTensorMixin)


def _empty_placeholder(self, requires_grad, device, dtype):
    from ..creation import empty
    _init(self, empty(0, device=device, dtype=dtype)._data)
    if requires_grad:
        self.requires_grad_(True)


class UninitializedParameter(UninitializedTensorMixin, Parameter):
    """A ``Parameter`` whose shape is not known yet (a lazy module's, until its first forward).

    Example:
        >>> p = nn.parameter.UninitializedParameter()
        >>> p
        <UninitializedParameter>
        >>> p.materialize((2, 3))
        >>> type(p).__name__, p.shape
        ('Parameter', ddp.Size([2, 3]))
    """
    __slots__ = ()
    cls_to_become = Parameter

    def __init__(self, requires_grad=True, device=None, dtype=None):
        _empty_placeholder(self, requires_grad, device, dtype)


class UninitializedBuffer(UninitializedTensorMixin, Tensor):
    """A buffer whose shape is not known yet; :meth:`materialize` makes it a plain Tensor.

    Example:
        >>> b = nn.parameter.UninitializedBuffer()
        >>> b.materialize(4)
        >>> type(b).__name__, b.shape
        ('Tensor', ddp.Size([4]))
    """
    __slots__ = ()
    cls_to_become = Tensor

    def __init__(self, requires_grad=False, device=None, dtype=None):
        _empty_placeholder(self, requires_grad, device, dtype)
