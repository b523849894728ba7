"""``quantize_dynamic``: swap a model's Linear/LSTM/GRU layers for dynamically quantized ones.

Example:
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> q = ddp.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=ddp.qint8)
    >>> type(q[0]).__name__, type(model[0]).__name__
    ('Linear', 'Linear')
    >>> q[0]
    DynamicQuantizedLinear(in_features=8, out_features=16, dtype=ddp.qint8, qscheme=ddp.per_tensor_affine)
"""
from __future__ import annotations

import copy

from ...backend import qint8
from ... import nn
from ..nn.quantized import dynamic as nnqd
from .qconfig import default_dynamic_qconfig

__all__ = ["quantize_dynamic", "get_default_dynamic_quant_module_mappings"]


def get_default_dynamic_quant_module_mappings():
    """Float module type -> its dynamically quantized replacement."""
    return {nn.Linear: nnqd.Linear, nn.LSTM: nnqd.LSTM, nn.GRU: nnqd.GRU}


def quantize_dynamic(model, qconfig_spec=None, dtype=qint8, mapping=None, inplace=False):
    """A copy of ``model`` (``inplace=True``: the model itself) whose submodules chosen by
    ``qconfig_spec`` are replaced by dynamically quantized ones: int8 weights, activations
    quantized per call. ``qconfig_spec`` is a set of module types (``{nn.Linear, nn.LSTM}``,
    with the default qconfig) or a dict from types or submodule names to ``QConfig``
    (``per_channel_dynamic_qconfig`` quantizes each output channel with its own scale);
    ``None`` means Linear, LSTM and GRU. Only ``dtype=ddp.qint8`` is supported.
    """
    if dtype is not qint8:
        raise ValueError(f"quantize_dynamic: dtype {dtype} is not supported (ddp.qint8)")
    mapping = get_default_dynamic_quant_module_mappings() if mapping is None else mapping
    if qconfig_spec is None:
        qconfig_spec = {t: default_dynamic_qconfig for t in (nn.Linear, nn.LSTM, nn.GRU)}
    elif isinstance(qconfig_spec, (set, frozenset, list, tuple)):
        qconfig_spec = {t: default_dynamic_qconfig for t in qconfig_spec}
    if not inplace:
        model = copy.deepcopy(model)
    _swap(model, "", qconfig_spec, mapping, None)
    return model


def _swap(module, prefix, spec, mapping, inherited):
    """Replace, below ``module``, every child whose type or name ``spec`` names (a child
    inherits its parent's qconfig given by name) by ``mapping[type(child)].from_float``."""
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        path = prefix + name
        qconfig = spec.get(path, spec.get(type(child), inherited))
        if qconfig is not None and type(child) in mapping:
            child.qconfig = qconfig
            module._modules[name] = mapping[type(child)].from_float(child)
        else:
            _swap(child, path + ".", spec, mapping, spec.get(path, inherited))
