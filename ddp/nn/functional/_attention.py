"""Attention: ``scaled_dot_product_attention`` and ``multi_head_attention_forward``, PyTorch's
names, arguments, masks and errors.

``softmax(q kᵀ · scale + bias) v`` is one fused op (:class:`ScaledDotProductAttention`, forward
and backward side by side): the (…, L, S) score matrix is scaled, masked, normalised and dropped
out in place, and its backward is the closed form ``dS = P ∘ (dP − rowsum(dP ∘ P))``. Composed of
matmul, mul, softmax, dropout and matmul nodes, the same forward and backward take 1.19× the
fused op's time without dropout and 1.08× with it at (32, 4, 128, 64) (docs/performance.md,
"Transformer"): each composed node makes its own passes, and keeps its own (…, L, S) array.

Masks follow PyTorch: for ``scaled_dot_product_attention`` a bool ``attn_mask`` is True where a
query *may* attend; for ``multi_head_attention_forward`` (and ``nn.MultiheadAttention``) bool
``attn_mask``/``key_padding_mask`` are True where attention is *not* allowed. Float masks are
added to the scores (and get a gradient when they require one).

Example:
    >>> q = ddp.randn(2, 4, 5, 8)                       # (batch, heads, L, E)
    >>> F.scaled_dot_product_attention(q, q, q, is_causal=True).shape
    ddp.Size([2, 4, 5, 8])
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ... import backend, kernels
from ...kernels import softmax as _softmax_kernels
from ...autograd.graph import Op
from ...ops.elementwise import where
from ...tensor import Tensor
from ._dropout import _dropout_mask
from ._linear import linear
from ._padding import pad

__all__ = ["scaled_dot_product_attention", "multi_head_attention_forward"]

_HALF = (np.dtype(np.float16), backend._BFLOAT16)


# --------------------------------------------------------------------------- the fused op

def _softmax_rows_(s, safe):
    """Softmax over the last axis of the array ``s``, in place. ``safe``: a row whose every score
    is -inf gets zero weights (PyTorch's SDPA) instead of NaN (a plain softmax)."""
    if kernels.fits(s):   # ddp.kernels' row passes (see ddp.kernels.softmax)
        return _softmax_kernels.softmax_rows_(s.reshape(-1, s.shape[-1]), safe).reshape(s.shape)
    xp = backend.get_array_module(s)
    m = s.max(axis=-1, keepdims=True)
    if safe:
        m[m == -math.inf] = 0
    xp.subtract(s, m, out=s)
    xp.exp(s, out=s)
    d = s.sum(axis=-1, keepdims=True)
    if safe:
        d[d == 0] = 1
    s /= d
    return s


def _causal_upper(xp, L, S):
    """True above the diagonal of an (L, S) matrix: the keys a causal (upper-left) query skips."""
    return xp.triu(xp.ones((L, S), dtype=bool), 1)


class ScaledDotProductAttention(Op):
    """``softmax(q kᵀ · scale + bias) v`` over the last two axes, as one node.

    ``q`` (…, L, E), ``k`` (…, S, E), ``v`` (…, S, Ev); batch axes broadcast. ``bias`` (or None)
    broadcasts to the weights (…, L, S). ``causal`` masks key j > query i. ``keep`` (or None) is a
    dropout mask of 0 and 1/(1-p) of the weights' shape. ``safe``: fully masked rows give zero
    weights, not NaN. ``weights``: also return the (dropped-out) weights, themselves
    differentiable. Backward recomputes nothing: it uses the saved weights ``P`` (and ``P`` with
    dropout applied), and works on one (…, L, S) buffer in place.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias=None, scale=1.0, causal=False, keep=None, safe=True,
                weights=False):
        xp = backend.get_array_module(q)
        s = xp.matmul(q, xp.swapaxes(k, -1, -2))
        s *= scale
        if bias is not None:
            if np.broadcast_shapes(s.shape, bias.shape) == s.shape:
                s += bias
            else:
                s = s + bias
        if causal:
            xp.copyto(s, -math.inf, where=_causal_upper(xp, *s.shape[-2:]))
        p = _softmax_rows_(s, safe)
        pd = p if keep is None else p * keep
        out = xp.matmul(pd, v)
        ctx.save_for_backward(q, k, v, p, bias, keep, pd)
        ctx.options = (scale, causal, safe)
        if not weights:
            return out
        ctx.set_materialize_grads(False)  # unused weights get no (…, L, S) zeros
        return out, pd

    @staticmethod
    def backward(ctx, g, g_weights=None):
        q, k, v, p, bias, keep, pd = ctx.saved_tensors
        scale, causal, safe = ctx.options
        xp = ctx.xp
        need_q, need_k, need_v, need_bias = ctx.needs_input_grad[:4]
        graph = ctx.create_graph  # the weights are rebuilt from q, k, bias as recorded ops
        if graph:
            p = _weights_as_tensors(q, k, bias, scale, causal, safe)
            pd = p if keep is None else p * keep
        gv = None
        if g is None:  # only the weights were used
            dp, fresh = g_weights, False
        else:
            if need_v:
                gv = xp.matmul(xp.swapaxes(pd, -1, -2), g)
            dp, fresh = xp.matmul(g, xp.swapaxes(v, -1, -2)), not graph
            if g_weights is not None:
                dp = dp + g_weights
        # dS = P ∘ (dP' − rowsum(dP' ∘ P)) with dP' = dP ∘ keep; rowsum(dP' ∘ P) = rowsum(dP ∘ Pd)
        if graph:
            if keep is not None:
                dp = dp * keep
            ds = p * (dp - (dp * p).sum(-1, keepdim=True))
        else:  # on the (…, L, S) buffer in place, no temporary: 3 passes, or one call of
            # ddp.kernels' row passes where they fit
            fused = kernels.fits(dp, p) and (keep is None or keep.dtype == dp.dtype)
            row = None if fused else xp.einsum("...j,...j->...", dp, pd)[..., None]
            if keep is not None:
                dp = dp * keep if not fresh else xp.multiply(dp, keep, out=dp)
            elif not fresh:
                dp = dp.copy()
            if fused:   # P ∘ (dP' − rowsum(dP' ∘ P)), rowsum(dP' ∘ P) from dP' = dP ∘ keep
                rows = dp.reshape(-1, dp.shape[-1])
                _softmax_kernels.softmax_backward(p.reshape(rows.shape), rows, out=rows)
            else:
                dp -= row
                dp *= p
            ds = dp
        gbias = ds if need_bias else None
        gq = gk = None
        if need_q:
            gq = xp.matmul(ds, k)
            gq = gq * scale if graph else xp.multiply(gq, scale, out=gq)
        if need_k:
            gk = xp.matmul(xp.swapaxes(ds, -1, -2), q)
            gk = gk * scale if graph else xp.multiply(gk, scale, out=gk)
        return gq, gk, gv, gbias


def _weights_as_tensors(q, k, bias, scale, causal, safe):
    """The attention weights from Tensors, recorded (for gradients of gradients)."""
    from ...ops.reduction import Softmax
    from ...tensor import where
    s = (q @ k.transpose(-1, -2)) * scale
    if bias is not None:
        s = s + bias
    if causal:
        xp = backend.get_array_module(s._data)
        upper = Tensor._make(_causal_upper(xp, *s.shape[-2:]))
        s = s.masked_fill(upper, -math.inf)
    if safe:
        dead = Tensor._make((s._data == -math.inf).all(axis=-1, keepdims=True))
        s = s.masked_fill(dead, 0.0)
        return where(dead, 0.0, Softmax.apply(s, dim=-1))
    return Softmax.apply(s, dim=-1)


def _attention(q, k, v, bias, scale, causal, dropout_p, safe, need_weights):
    """Run the fused op: draws the dropout mask, computes float16/bfloat16 inputs in float32
    (PyTorch's math kernel keeps half-precision intermediates in float32)."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    half = q.dtype.np in _HALF
    if half:
        dtype = q.dtype
        q, k, v = q.float(), k.float(), v.float()
        bias = None if bias is None else bias.float()
    keep = None
    if dropout_p > 0:
        shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
        keep = _dropout_mask(q, dropout_p, shape)._data
    out = ScaledDotProductAttention.apply(q, k, v, bias, scale=float(scale), causal=bool(causal),
                                          keep=keep, safe=safe, weights=need_weights)
    if half:
        out = tuple(o.to(dtype) for o in out) if need_weights else out.to(dtype)
    return out if need_weights else (out, None)


# --------------------------------------------------------------------------- SDPA

def _float_bias(name, mask, query):
    """An additive bias Tensor from a bool (True = attend) or float mask, or None."""
    if mask is None:
        return None
    if mask.dtype.np == np.bool_:
        # through where (an op), so a trace (ONNX export) sees the mask become the bias
        return where(mask, 0.0, -math.inf).to(query.dtype)
    if mask.dtype.np != query.dtype.np and mask.dtype.np != np.float32:
        raise RuntimeError(f"{name}: Expected attn_mask dtype to be bool or float or to match "
                           f"query dtype, but got attn_mask.dtype: {mask.dtype.name} and "
                           f"query.dtype: {query.dtype.name} instead.")
    return mask if mask.dtype == query.dtype else mask.to(query.dtype)


def _check_sdpa(query, key, value, attn_mask, enable_gqa):
    name = "scaled_dot_product_attention"
    for what, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}(): argument '{what}' must be Tensor, not {type(t).__name__}")
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2:
        raise RuntimeError(f"{name}: Expected query, key, and value to all be at least 2 "
                           f"dimensional, but got query.dim: {query.ndim} key.dim: {key.ndim} and "
                           f"value.dim: {value.ndim} instead.")
    if not query.dtype == key.dtype == value.dtype:
        raise RuntimeError(f"{name}: Expected query, key, and value to have the same dtype, but "
                           f"got query.dtype: {query.dtype.name} key.dtype: {key.dtype.name} and "
                           f"value.dtype: {value.dtype.name} instead.")
    if not query.is_floating_point():
        raise RuntimeError(f"{name}: expected floating point query, key and value, got "
                           f"{query.dtype.name}")
    q, k, v = tuple(query.shape), tuple(key.shape), tuple(value.shape)
    if q[-1] != k[-1]:
        raise RuntimeError(f"{name}: query's last dimension ({q[-1]}) must equal key's "
                           f"({k[-1]}): query {q}, key {k}")
    if k[-2] != v[-2]:
        raise RuntimeError(f"{name}: key and value must have the same sequence length, got key "
                           f"{k} and value {v}")
    if enable_gqa and min(len(q), len(k), len(v)) >= 3 and q[-3] != k[-3]:
        if k[-3] != v[-3] or q[-3] % k[-3]:
            raise RuntimeError(f"{name}: Number of heads in key and value must divide the number "
                               f"of heads in query (enable_gqa=True): query {q}, key {k}, value "
                               f"{v}")
        k, v = (s[:-3] + (q[-3],) + s[-2:] for s in (k, v))  # their heads once repeated
    try:
        batch = np.broadcast_shapes(q[:-2], k[:-2], v[:-2])
    except ValueError:
        raise RuntimeError(f"{name}: the batch dimensions of query {q}, key {k} and value {v} "
                           f"cannot be broadcast together") from None
    if attn_mask is not None:
        try:
            np.broadcast_shapes(tuple(attn_mask.shape), batch + (q[-2], k[-2]))
        except ValueError:
            raise RuntimeError(f"{name}: attn_mask of shape {tuple(attn_mask.shape)} cannot be "
                               f"broadcast to the attention weights' shape "
                               f"{batch + (q[-2], k[-2])} (…, L, S)") from None


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, *, scale=None, enable_gqa=False):
    """``softmax(query @ keyᵀ * scale + mask) @ value``, with dropout ``dropout_p`` on the weights.

    ``query`` (N, ..., Hq, L, E), ``key`` (N, ..., H, S, E), ``value`` (N, ..., H, S, Ev) give
    (N, ..., Hq, L, Ev). ``attn_mask`` broadcasts to (N, ..., Hq, L, S): bool (True where a query
    may attend) or float (added to the scores). ``is_causal``: query i sees keys j <= i (the
    upper-left causal mask; no ``attn_mask`` with it). ``scale`` defaults to 1/sqrt(E).
    ``enable_gqa``: key/value heads are repeated to match the query's (grouped-query attention).
    Dropout is applied whenever ``dropout_p > 0`` (pass 0.0 in evaluation). A query with every
    key masked gets zero output, as PyTorch's.

    Example:
        >>> q = ddp.randn(1, 2, 3, 4)
        >>> mask = ddp.tensor([[True, False, False], [True, True, False], [True, True, True]])
        >>> a = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        >>> b = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        >>> bool(ddp.allclose(a, b))
        True
    """
    _check_sdpa(query, key, value, attn_mask, enable_gqa)
    if is_causal and attn_mask is not None:
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set "
                           "when is_causal=True")
    if dropout_p > 1:
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {dropout_p}")
    if enable_gqa and min(query.ndim, key.ndim, value.ndim) >= 3 \
            and query.shape[-3] != key.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(groups, -3)
        value = value.repeat_interleave(groups, -3)
    bias = _float_bias("scaled_dot_product_attention", attn_mask, query)
    return _attention(query, key, value, bias, scale, is_causal, dropout_p, True, False)[0]


# --------------------------------------------------------------------------- multi-head

def _none_or_dtype(input):
    """The dtype of a mask, or None (PyTorch's helper of the same name)."""
    if input is None:
        return None
    if isinstance(input, Tensor):
        return input.dtype
    raise RuntimeError("input to _none_or_dtype() must be None or torch.Tensor")


def _canonical_mask(mask, mask_name, other_type, other_name, target_type, check_other=True):
    """A bool (True = masked) or float mask as a float mask of ``target_type`` (-inf where
    masked); warns, as PyTorch, when it and the other mask have different types.

    Example:
        >>> F._canonical_mask(ddp.tensor([False, True]), "key_padding_mask", None, "",
        ...                   ddp.float32)
        tensor([0., -inf])
    """
    if mask is None:
        return None
    if mask.dtype != backend.bool and not mask.is_floating_point():
        raise AssertionError(f"only bool and floating types of {mask_name} are supported")
    if check_other and other_type is not None and mask.dtype != other_type:
        warnings.warn(f"Support for mismatched {mask_name} and {other_name} is deprecated. Use "
                      f"same type for both instead.", stacklevel=3)
    if mask.is_floating_point():
        return mask
    return where(mask, -math.inf, 0.0).to(target_type)


def _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads):
    """Whether the input is batched (3-D query) or not (2-D); PyTorch's shape errors."""
    if query.ndim == 3:
        if key.ndim != 3 or value.ndim != 3:
            raise AssertionError(f"For batched (3-D) `query`, expected `key` and `value` to be 3-D "
                                 f"but found {key.ndim}-D and {value.ndim}-D tensors respectively")
        if key_padding_mask is not None and key_padding_mask.ndim != 2:
            raise AssertionError(f"For batched (3-D) `query`, expected `key_padding_mask` to be "
                                 f"`None` or 2-D but found {key_padding_mask.ndim}-D tensor "
                                 f"instead")
        if attn_mask is not None and attn_mask.ndim not in (2, 3):
            raise AssertionError(f"For batched (3-D) `query`, expected `attn_mask` to be `None`, "
                                 f"2-D or 3-D but found {attn_mask.ndim}-D tensor instead")
        return True
    if query.ndim == 2:
        if key.ndim != 2 or value.ndim != 2:
            raise AssertionError(f"For unbatched (2-D) `query`, expected `key` and `value` to be "
                                 f"2-D but found {key.ndim}-D and {value.ndim}-D tensors "
                                 f"respectively")
        if key_padding_mask is not None and key_padding_mask.ndim != 1:
            raise AssertionError(f"For unbatched (2-D) `query`, expected `key_padding_mask` to be "
                                 f"`None` or 1-D but found {key_padding_mask.ndim}-D tensor "
                                 f"instead")
        if attn_mask is not None:
            if attn_mask.ndim not in (2, 3):
                raise AssertionError(f"For unbatched (2-D) `query`, expected `attn_mask` to be "
                                     f"`None`, 2-D or 3-D but found {attn_mask.ndim}-D tensor "
                                     f"instead")
            expected = (num_heads, query.shape[0], key.shape[0])
            if attn_mask.ndim == 3 and tuple(attn_mask.shape) != expected:
                raise AssertionError(f"Expected `attn_mask` shape to be {expected} but got "
                                     f"{attn_mask.shape}")
        return False
    raise AssertionError(f"query should be unbatched 2D or batched 3D tensor but received "
                         f"{query.ndim}-D query tensor")


def _to_heads(x, parts, num_heads, batch_first):
    """A projection (L, N, parts·E) — (N, L, parts·E) when ``batch_first`` — as ``parts``
    tensors (N, H, L, E/H): views of it, one node (no copy of the projection)."""
    a, b, f = x.shape
    x = x.reshape(a, b, parts, num_heads, f // (parts * num_heads))
    x = x.permute(2, 0, 3, 1, 4) if batch_first else x.permute(2, 1, 3, 0, 4)
    return x.unbind(0)


def _project(x, weight, bias):
    """``linear`` over the rows of ``x`` (…, E) as one 2-D product (NumPy runs a 3-D operand as
    one small product per leading index: 1.3× slower at (32, 128, 256))."""
    out = linear(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.reshape(tuple(x.shape[:-1]) + (weight.shape[0],))


def _in_projection_heads(query, key, value, num_heads, in_proj_weight, in_proj_bias,
                         separate, batch_first):
    """q, k, v projected and split into heads, each (N, H, len, E/H). The weights are packed
    (in_proj_weight, q; k; v rows) or separate ``(w_q, w_k, w_v)``; self-attention (one
    input) takes one product, encoder-decoder attention (key is value) two."""
    E = query.shape[-1]
    if separate is None and key is value:
        if query is key:
            return _to_heads(_project(query, in_proj_weight, in_proj_bias), 3, num_heads,
                             batch_first)
        w_q, w_kv = in_proj_weight.split([E, 2 * E])
        b_q, b_kv = (None, None) if in_proj_bias is None else in_proj_bias.split([E, 2 * E])
        q, = _to_heads(_project(query, w_q, b_q), 1, num_heads, batch_first)
        k, v = _to_heads(_project(key, w_kv, b_kv), 2, num_heads, batch_first)
        return q, k, v
    bq = bk = bv = None
    if in_proj_bias is not None:
        bq, bk, bv = in_proj_bias.chunk(3)
    if separate is None:
        w_q, w_k, w_v = in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = separate
        Ek, Ev = key.shape[-1], value.shape[-1]
        for what, w, want in (("query", w_q, (E, E)), ("key", w_k, (E, Ek)),
                              ("value", w_v, (E, Ev))):
            if tuple(w.shape) != want:
                raise AssertionError(f"expecting {what} weights shape of {want}, but got "
                                     f"{w.shape}")
    return tuple(_to_heads(_project(x, w, b), 1, num_heads, batch_first)[0]
                 for x, w, b in ((query, w_q, bq), (key, w_k, bk), (value, w_v, bv)))


def _static_heads(static, name, bsz, num_heads, head_dim):
    if static.shape[0] != bsz * num_heads:
        raise AssertionError(f"expecting {name}.size(0) of {bsz * num_heads}, but got "
                             f"{static.shape[0]}")
    if static.shape[2] != head_dim:
        raise AssertionError(f"expecting {name}.size(2) of {head_dim}, but got {static.shape[2]}")
    return static.reshape(bsz, num_heads, static.shape[1], head_dim)


def _multi_head_attention(query, key, value, embed_dim_to_check, num_heads, in_proj_weight,
                          in_proj_bias, bias_k, bias_v, add_zero_attn, dropout_p,
                          out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
                          need_weights=True, attn_mask=None, use_separate_proj_weight=False,
                          q_proj_weight=None, k_proj_weight=None, v_proj_weight=None,
                          static_k=None, static_v=None, average_attn_weights=True,
                          is_causal=False, batch_first=False):
    """:func:`multi_head_attention_forward` for (L, N, E) inputs, or (N, L, E) ones with
    ``batch_first`` — worked on in place of PyTorch's transposes to and from (L, N, E)."""
    is_batched = _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    batch_axis = 0 if batch_first else 1
    if not is_batched:
        query, key, value = (x.unsqueeze(batch_axis) for x in (query, key, value))
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz = (query.shape[1], query.shape[0]) if batch_first else query.shape[:2]
    embed_dim = query.shape[2]
    src_len = key.shape[1 if batch_first else 0]

    key_padding_mask = _canonical_mask(key_padding_mask, "key_padding_mask",
                                       _none_or_dtype(attn_mask), "attn_mask", query.dtype)
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the "
                           "Transformer module method `generate_square_subsequent_mask` to "
                           "create this mask.")
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None  # the hint stands for the mask: attention masks causally by itself
    else:
        attn_mask = _canonical_mask(attn_mask, "attn_mask", None, "", query.dtype,
                                    check_other=False)
        if key_padding_mask is not None:
            is_causal = False  # the merged mask is no longer the causal one
    if embed_dim != embed_dim_to_check:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim_to_check}, but "
                             f"got {embed_dim}")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if use_separate_proj_weight:
        seq_batch = (lambda t: tuple(t.shape[:2]))
        if seq_batch(key) != seq_batch(value):
            raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match "
                                 f"value's {value.shape[:2]}")
        for name, w in (("q", q_proj_weight), ("k", k_proj_weight), ("v", v_proj_weight)):
            if w is None:
                raise AssertionError(f"use_separate_proj_weight is True but {name}_proj_weight "
                                     f"is None")
        separate = (q_proj_weight, k_proj_weight, v_proj_weight)
    else:
        if tuple(key.shape) != tuple(value.shape):
            raise AssertionError(f"key shape {key.shape} does not match value shape "
                                 f"{value.shape}")
        if in_proj_weight is None:
            raise AssertionError("use_separate_proj_weight is False but in_proj_weight is None")
        separate = None
    for name, m in (("attn_mask", attn_mask), ("key_padding_mask", key_padding_mask)):
        if m is not None and m.dtype != query.dtype:
            raise RuntimeError(f"multi_head_attention_forward: {name} of dtype {m.dtype.name} "
                               f"does not match the query's dtype {query.dtype.name}")

    q, k, v = _in_projection_heads(query, key, value, num_heads, in_proj_weight, in_proj_bias,
                                   separate, batch_first)

    if attn_mask is not None:
        if attn_mask.ndim == 2:
            if tuple(attn_mask.shape) != (tgt_len, src_len):
                raise RuntimeError(f"The shape of the 2D attn_mask is {attn_mask.shape}, but "
                                   f"should be {(tgt_len, src_len)}.")
        elif attn_mask.ndim == 3:
            if tuple(attn_mask.shape) != (bsz * num_heads, tgt_len, src_len):
                raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but "
                                   f"should be {(bsz * num_heads, tgt_len, src_len)}.")
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.ndim} is not supported")

    if bias_k is not None and bias_v is not None:
        if static_k is not None:
            raise AssertionError("bias cannot be added to static key.")
        if static_v is not None:
            raise AssertionError("bias cannot be added to static value.")
        k = _append_key(k, bias_k.reshape(1, num_heads, 1, head_dim))
        v = _append_key(v, bias_v.reshape(1, num_heads, 1, head_dim))
        attn_mask = None if attn_mask is None else pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else pad(key_padding_mask, (0, 1))
    elif bias_k is not None:
        raise AssertionError("bias_k is set but bias_v is None")
    elif bias_v is not None:
        raise AssertionError("bias_v is set but bias_k is None")
    if static_k is not None:
        k = _static_heads(static_k, "static_k", bsz, num_heads, head_dim)
    if static_v is not None:
        v = _static_heads(static_v, "static_v", bsz, num_heads, head_dim)
    if add_zero_attn:
        k = _append_key(k, k.new_zeros((1, 1, 1, head_dim)))
        v = _append_key(v, v.new_zeros((1, 1, 1, v.shape[-1])))
        attn_mask = None if attn_mask is None else pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else pad(key_padding_mask, (0, 1))
    src_len = k.shape[2]

    # one additive bias broadcasting to the weights (N, H, L, S)
    bias = None
    if attn_mask is not None and attn_mask.ndim == 3:
        attn_mask = attn_mask.reshape(bsz, num_heads, tgt_len, src_len)
    if key_padding_mask is not None:
        if key_padding_mask.shape[0] != bsz:
            raise AssertionError(f"Expected key_padded_mask.shape[0] to be {bsz}, but got "
                                 f"{key_padding_mask.shape[0]}")
        if key_padding_mask.shape[1] != src_len:
            raise AssertionError(f"Expected key_padded_mask.shape[1] to be {src_len}, but got "
                                 f"{key_padding_mask.shape[1]}")
        bias = key_padding_mask.reshape(bsz, 1, 1, src_len)
        if attn_mask is not None:
            bias = attn_mask + bias
    else:
        bias = attn_mask

    if not training:
        dropout_p = 0.0
    # need_weights runs PyTorch's plain softmax (a fully masked row is NaN), the SDPA path its
    # safe one (zeros)
    # (is_causal survives only where it replaced the mask)
    out, weights = _attention(q, k, v, bias, None, is_causal and bias is None, dropout_p,
                              not need_weights, need_weights)
    # (N, H, L, hd) -> rows of (L, N) or (N, L), E = H * hd, then the output projection
    out = out.permute(0, 2, 1, 3) if batch_first else out.permute(2, 0, 1, 3)
    out = _project(out.reshape(out.shape[0], out.shape[1], embed_dim), out_proj_weight,
                   out_proj_bias)
    if weights is not None and average_attn_weights:
        weights = weights.mean(dim=1)
    if not is_batched:
        out = out.squeeze(batch_axis)
        weights = None if weights is None else weights.squeeze(0)
    return out, weights


def _append_key(x, row):
    """``x`` (N, H, S, d) with one more key position, ``row`` broadcast over it."""
    from ..._functions import cat
    return cat([x, row.expand(x.shape[0], x.shape[1], 1, x.shape[3])], dim=2)


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads,
                                 in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn,
                                 dropout_p, out_proj_weight, out_proj_bias, training=True,
                                 key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None,
                                 k_proj_weight=None, v_proj_weight=None, static_k=None,
                                 static_v=None, average_attn_weights=True, is_causal=False):
    """Multi-head attention of (L, N, E) ``query`` over (S, N, E) ``key``/``value`` (unbatched:
    (L, E), (S, E)), as ``nn.MultiheadAttention`` runs it; returns ``(output, weights)``.

    The projections are ``in_proj_weight`` (3E, E) packed q; k; v (or the separate
    ``q/k/v_proj_weight`` with ``use_separate_proj_weight``), ``in_proj_bias`` (3E), then
    ``out_proj_weight``/``out_proj_bias``. ``bias_k``/``bias_v`` (1, 1, E) append one key/value
    position, ``add_zero_attn`` one of zeros. Bool masks are True where attention is not allowed;
    float masks are added. ``attn_mask`` is (L, S) or (N·num_heads, L, S), ``key_padding_mask``
    (N, S). Weights (only with ``need_weights``) are averaged over heads with
    ``average_attn_weights``: (N, L, S), else (N, num_heads, L, S). ``is_causal`` is a hint that
    ``attn_mask`` is the causal mask. Dropout ``dropout_p`` on the weights when ``training``.

    Example:
        >>> E, H = 8, 2
        >>> w, b = ddp.randn(3 * E, E), ddp.zeros(3 * E)
        >>> x = ddp.randn(5, 3, E)                          # (L, N, E)
        >>> out, weights = F.multi_head_attention_forward(
        ...     x, x, x, E, H, w, b, None, None, False, 0.0, ddp.randn(E, E), None)
        >>> out.shape, weights.shape
        (ddp.Size([5, 3, 8]), ddp.Size([3, 5, 5]))
    """
    return _multi_head_attention(
        query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k,
        bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training,
        key_padding_mask, need_weights, attn_mask, use_separate_proj_weight, q_proj_weight,
        k_proj_weight, v_proj_weight, static_k, static_v, average_attn_weights, is_causal)
