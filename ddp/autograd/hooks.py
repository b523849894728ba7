"""``RemovableHandle``: what every ``register_*_hook`` returns (tensors, autograd nodes, modules,
optimizers), as ``torch.utils.hooks.RemovableHandle``.

Hooks live in dicts keyed by the handle's ``id`` (ordered: they run in registration order), and
the handle holds only weak references to those dicts, so a handle never keeps a tensor, module or
optimizer alive. It sits on the autograd floor because tensors' gradient hooks need it; the
public spelling is ``ddp.utils.hooks.RemovableHandle``.

Example:
    >>> from collections import OrderedDict
    >>> hooks = OrderedDict()
    >>> h = RemovableHandle(hooks); hooks[h.id] = print
    >>> len(hooks), h.remove(), len(hooks)
    (1, None, 0)
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

__all__ = ["RemovableHandle"]


class RemovableHandle:
    """A handle that removes a hook: ``handle.remove()``, or leave a ``with handle:`` block.

    Args:
        hooks_dict: the dict of hooks, indexed by hook ``id``, that the hook is stored in.
        extra_dict: a dict or list of dicts whose entries under the same ``id`` are removed too
            (e.g. the flags a module keeps beside its forward hooks).

    Example:
        >>> m = ddp.nn.Linear(2, 2)
        >>> with m.register_forward_hook(lambda mod, args, out: print("forward")):
        ...     _ = m(ddp.ones(2))
        forward
        >>> _ = m(ddp.ones(2))                 # removed on leaving the block
    """
    id: int
    next_id: int = 0

    def __init__(self, hooks_dict, *, extra_dict=None):
        self.hooks_dict_ref = weakref.ref(hooks_dict)
        self.id = RemovableHandle.next_id
        RemovableHandle.next_id += 1
        self.extra_dict_ref: tuple = ()
        if isinstance(extra_dict, dict):
            self.extra_dict_ref = (weakref.ref(extra_dict),)
        elif isinstance(extra_dict, list):
            self.extra_dict_ref = tuple(weakref.ref(d) for d in extra_dict)

    def remove(self):
        """Unregister the hook (a no-op when it is already gone)."""
        for ref in (self.hooks_dict_ref,) + self.extra_dict_ref:
            d = ref()
            if d is not None and self.id in d:
                del d[self.id]

    # Pickling keeps the dicts (strongly) and the id, and a loaded handle bumps ``next_id`` so
    # that new handles never reuse its id (PyTorch's behaviour).
    def __getstate__(self):
        return (self.hooks_dict_ref(), self.id, tuple(ref() for ref in self.extra_dict_ref))

    def __setstate__(self, state):
        self.hooks_dict_ref = weakref.ref(state[0] if state[0] is not None else OrderedDict())
        self.id = state[1]
        RemovableHandle.next_id = max(RemovableHandle.next_id, self.id + 1)
        extra = state[2] if len(state) > 2 and state[2] is not None else ()
        self.extra_dict_ref = tuple(weakref.ref(d) for d in extra if d is not None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
