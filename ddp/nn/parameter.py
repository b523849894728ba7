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
