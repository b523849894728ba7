"""``LazyModuleMixin`` (PyTorch's ``torch.nn.modules.lazy``): modules whose parameters' shapes
come from their first input. Until the first forward they hold ``UninitializedParameter`` s
(and ``UninitializedBuffer`` s); the first forward calls ``initialize_parameters``, which
materialises them and runs the module's ``reset_parameters``, and the module then becomes
``cls_to_become`` (``LazyLinear`` -> ``Linear``). Do a dry run before building an optimizer or
wrapping the model in DistributedDataParallel.

Example:
    >>> m = nn.LazyLinear(4)
    >>> m
    LazyLinear(in_features=0, out_features=4, bias=True)
    >>> m(ddp.ones(2, 3)).shape, type(m).__name__, m.weight.shape
    (ddp.Size([2, 4]), 'Linear', ddp.Size([4, 3]))
"""
from __future__ import annotations

import itertools

from ..autograd import no_grad
from .parameter import is_lazy

__all__ = ["LazyModuleMixin"]


class LazyModuleMixin:
    """Put before the non-lazy module in the bases; subclasses define ``initialize_parameters``
    (and usually ``cls_to_become``). See the module's docstring.

    Example:
        >>> m = nn.LazyBatchNorm1d()
        >>> m.has_uninitialized_params()
        True
        >>> _ = m(ddp.randn(4, 3))
        >>> type(m).__name__, m.num_features   # no longer lazy: a BatchNorm1d
        ('BatchNorm1d', 3)
    """
    cls_to_become = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._load_hook = self._register_load_state_dict_pre_hook(self._lazy_load_hook)
        self._initialize_hook = self.register_forward_pre_hook(self._infer_parameters,
                                                               with_kwargs=True)

    def _lazy_load_hook(self, state_dict, prefix, local_metadata, strict, missing_keys,
                        unexpected_keys, error_msgs):
        # a real tensor loaded into a placeholder gives it its shape; the load then copies it
        for name, param in itertools.chain(self._parameters.items(), self._buffers.items()):
            key = prefix + name
            if key in state_dict and param is not None and is_lazy(param) \
                    and not is_lazy(state_dict[key]):
                with no_grad():
                    param.materialize(state_dict[key].shape)

    def initialize_parameters(self, *args, **kwargs):
        """Infer the shapes from the first input and materialise the parameters."""
        raise NotImplementedError(
            f"initialize_parameters is not implemented for {self.__class__.__name__}")

    def has_uninitialized_params(self):
        """Whether this module (not its children) still holds placeholders."""
        return any(is_lazy(p) for p in itertools.chain(self._parameters.values(),
                                                       self._buffers.values()))

    def _infer_parameters(self, module, args, kwargs=None):
        # the first forward's pre-hook: initialise, then stop being lazy
        module.initialize_parameters(*args, **(kwargs or {}))
        if module.has_uninitialized_params():
            raise RuntimeError(f"module {type(self).__name__} has not been fully initialized")
        module._initialize_hook.remove()
        module._load_hook.remove()
        delattr(module, "_initialize_hook")
        delattr(module, "_load_hook")
        if module.cls_to_become is not None:
            module.__class__ = module.cls_to_become
