"""The recurrences of ``nn.RNN``/``nn.LSTM``/``nn.GRU``: a whole-sequence op (``Recurrence``)
with a hand-written backward through time, and the same recurrence composed of tensor ops
(``recur``), which the cells, the quantized layers, autocast and double backward use.

Why one op for the sequence: composed of tensor ops, every time step records ~15 graph nodes
and the engine runs each one's backward; over 35 steps of a 128->256 LSTM that cost 3.0x
PyTorch's time. The op projects the inputs of all steps in one matrix product, computes the
gates of a step in one product, keeps the activated gates, and runs backward through time with
the elementwise factors of all steps computed at once; the weight gradients are one product
each over all steps (figures in docs/performance.md).

Example:
    >>> from ddp.nn.functional._rnn import rnn_layer
    >>> x, h0 = ddp.randn(5, 2, 3), ddp.zeros(2, 4)
    >>> w_ih, w_hh = ddp.randn(12, 3), ddp.randn(12, 4)
    >>> out, h_n = rnn_layer("GRU", x, (h0,), (w_ih, w_hh, None, None))
    >>> out.shape, h_n.shape
    (ddp.Size([5, 2, 4]), ddp.Size([2, 4]))
"""
from __future__ import annotations

import numpy as np

from ... import backend, kernels
from ..._functions import stack
from ...autograd.gradients import grad as _autograd_grad
from ...autograd.graph import Op
from ...kernels import recurrent as _kernels
from ...ops.autocast import state as _autocast

# --------------------------------------------------------------------------- composed of ops


def _chunk(t, n):
    """``t`` cut into ``n`` equal pieces along its last dimension (one graph node)."""
    return t.chunk(n, t.ndim - 1)


def input_gates(mode, x, w_ih, b_ih, b_hh):
    """``x @ w_ih^T + biases`` for every time step at once. RNN and LSTM add ``b_hh`` here too
    (it enters their gates linearly); GRU keeps it for the step, where ``r`` scales its n part."""
    gates = x @ w_ih.t()
    if b_ih is not None:
        gates = gates + (b_ih if mode == "GRU" else b_ih + b_hh)
    return gates


def step(mode, gates_in, state, hidden, w_hr_t):
    """One time step from the input gates ``gates_in`` (..., G) and the previous state (``h``,
    or ``(h, c)`` for LSTM); returns ``(h, state)``. ``hidden(h)`` is the state's contribution
    to the gates, with the bias ``gates_in`` does not hold (GRU's ``b_hh``: ``r`` scales it)."""
    if mode == "LSTM":
        h, c = state
        i, f, g, o = _chunk(gates_in + hidden(h), 4)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        if w_hr_t is not None:
            h = h @ w_hr_t
        return h, (h, c)
    h = state
    if mode == "GRU":
        r_i, z_i, n_i = _chunk(gates_in, 3)
        r_h, z_h, n_h = _chunk(hidden(h), 3)
        r = (r_i + r_h).sigmoid()
        z = (z_i + z_h).sigmoid()
        n = (n_i + r * n_h).tanh()
        h = n + z * (h - n)  # (1 - z) * n + z * h
        return h, h
    pre = gates_in + hidden(h)
    h = pre.tanh() if mode == "RNN_TANH" else pre.relu()
    return h, h


def hidden_projection(mode, w_hh, b_hh):
    """``h -> h @ w_hh^T`` (plus ``b_hh`` for GRU; the others add it to the input gates)."""
    w_hh_t = w_hh.t()
    if mode == "GRU" and b_hh is not None:
        return lambda h: h @ w_hh_t + b_hh
    return lambda h: h @ w_hh_t


def recur(mode, steps, state, hidden, w_hr_t, reverse):
    """The time loop over the input gates of each step: (outputs (L, N, H), last state)."""
    outputs = [None] * len(steps)
    for t in (range(len(steps) - 1, -1, -1) if reverse else range(len(steps))):
        outputs[t], state = step(mode, steps[t], state, hidden, w_hr_t)
    return stack(outputs), state


def composed_layer(mode, x, states, weights, reverse=False):
    """One layer in one direction over ``x`` (L, N, I) from tensor ops: ``(out, h_n)`` or
    ``(out, h_n, c_n)`` for LSTM. ``weights``: ``(w_ih, w_hh, b_ih, b_hh[, w_hr])``."""
    w_ih, w_hh, b_ih, b_hh = weights[:4]
    w_hr = weights[4] if len(weights) > 4 else None
    steps = input_gates(mode, x, w_ih, b_ih, b_hh).unbind(0)
    state = tuple(states) if mode == "LSTM" else states[0]
    out, state = recur(mode, steps, state, hidden_projection(mode, w_hh, b_hh),
                       None if w_hr is None else w_hr.t(), reverse)
    return (out,) + (tuple(state) if mode == "LSTM" else (state,))


# --------------------------------------------------------------------------- the fused op

def rnn_layer(mode, x, states, weights, reverse=False):
    """One layer in one direction: ``(out (L, N, H), h_n)``, or ``(out, h_n, c_n)`` for LSTM,
    from ``x`` (L, N, I), ``states`` (``(h0,)`` or ``(h0, c0)``, each (N, H)) and ``weights``
    ``(w_ih, w_hh, b_ih, b_hh[, w_hr])`` in PyTorch's layout. The fused op where it applies
    (float32/float64, no projection, autocast off); the composed recurrence otherwise."""
    w_hr = weights[4] if len(weights) > 4 else None
    if w_hr is not None or _autocast.on or x._data.dtype.kind != "f" \
            or x._data.dtype.itemsize < 4 \
            or any(w is not None and w._data.dtype != x._data.dtype for w in weights) \
            or any(s._data.dtype != x._data.dtype for s in states):
        return composed_layer(mode, x, states, weights, reverse)
    h0 = states[0]
    c0 = states[1] if mode == "LSTM" else None
    return Recurrence.apply(x, h0, c0, *weights[:4], mode=mode, reverse=reverse)


def _blas_operand(xp, a, scale=None):
    """The 2-D ``a`` (times ``scale`` along its last axis) copied for the forward's per-step
    products, where it is the second operand: rows contiguous, and on NumPy 16 elements apart
    more than their length (a view of ``a``'s shape into a wider buffer). OpenBLAS reads that
    operand a row at a time, and rows 4 KiB apart (1024 float32) fall into the same cache sets:
    at 128->256, batch 32, the (32, 256) @ (256, 1024) product takes ~265 us a step in the loop
    padded against ~340 us contiguous (190 against 258 us alone, 290 us through the transposed
    view of W_hh)."""
    if xp is not np:   # cuBLAS: contiguous
        return xp.ascontiguousarray(a) * scale if scale is not None else \
            xp.ascontiguousarray(a)
    view = xp.empty((a.shape[0], a.shape[1] + 16), a.dtype)[:, :a.shape[1]]
    if scale is None:
        view[...] = a
    else:
        xp.multiply(a, scale, out=view)
    return view


def _sigmoid_(a):
    """``a`` holding ``tanh(x / 2)`` becomes ``sigmoid(x)`` in place (one transcendental per
    element, no overflow; the halving is folded into the gates' weights)."""
    a *= 0.5
    a += 0.5


class Recurrence(Op):
    """A whole RNN/LSTM/GRU layer in one direction, forward and backward through time.

    Inputs ``x`` (L, N, I), ``h0`` (N, H), ``c0`` (N, H; LSTM, else None), ``w_ih`` (G, I),
    ``w_hh`` (G, H), ``b_ih``, ``b_hh`` (G,) or None; outputs ``out`` (L, N, H), ``h_n``
    (and ``c_n``). Saved for backward: the activated gates of every step (LSTM, GRU; for
    RNN the output is enough), the cell states and their ``tanh`` (LSTM) or ``W_hn h + b_hn``
    (GRU), the output, and the inputs. Sigmoids are computed as ``tanh(x / 2) / 2 + 1/2``: the rows of the weights
    that feed a sigmoid gate are halved once per call, so each step takes one ``tanh`` over all
    its gates."""
    writes_grad_sinks = True   # the weights' and biases' gradients written into DDP's buckets

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode, reverse):
        xp = backend.get_array_module(x)
        L, N, _ = x.shape
        G, H = w_hh.shape
        order = range(L - 1, -1, -1) if reverse else range(L)
        # LSTM's and GRU's elementwise work per step in ddp.kernels.recurrent where it fits
        # (the arrays it reads that the op does not make: the initial states, GRU's b_hn)
        ctx.fused = mode in ("LSTM", "GRU") and kernels.fits(h0, c0, b_hh)
        scale = None
        if mode != "RNN_TANH" and mode != "RNN_RELU":
            # the sigmoid gates' pre-activations halved once (see _sigmoid_), in the weights
            # and biases rather than over the (L, N, G) input gates (one pass fewer)
            scale = xp.full((G,), 0.5, x.dtype)
            if mode == "LSTM":
                scale[2 * H:3 * H] = 1          # g: tanh
            else:
                scale[2 * H:] = 1               # n: tanh of (W_in x + b_in) + r * (W_hn h + b_hn)
        w_x = w_ih if scale is None else w_ih * scale[:, None]
        gi = xp.matmul(x.reshape(L * N, x.shape[2]), w_x.T)
        if b_ih is not None:  # GRU's b_hn is scaled by r in the step; its b_hr, b_hz are not
            bias = b_ih + b_hh if mode != "GRU" else \
                xp.concatenate([b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:]])
            gi += bias if scale is None else bias * scale
        gi = gi.reshape(L, N, G)
        out = xp.empty((L, N, H), x.dtype)
        w_t = _blas_operand(xp, w_hh.T, scale)
        h = h0
        if scale is None:   # RNN_TANH, RNN_RELU
            for t in order:
                pre = xp.matmul(h, w_t)
                pre += gi[t]
                h = out[t]
                if mode == "RNN_TANH":
                    xp.tanh(pre, out=h)
                else:
                    xp.maximum(pre, 0, out=h)
            ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, out)
            ctx.mode, ctx.reverse = mode, reverse
            return out, h.copy()
        acts = xp.empty((L, N, G), x.dtype)
        if mode == "LSTM":
            cells = xp.empty((L, N, H), x.dtype)
            tanh_c = xp.empty((L, N, H), x.dtype)
            c = c0
            for t in order:
                a = acts[t]
                xp.matmul(h, w_t, out=a)
                a += gi[t]
                xp.tanh(a, out=a)
                cn = cells[t]
                if ctx.fused:
                    _kernels.lstm_cell(a, c, cn)
                else:
                    _sigmoid_(a[:, :2 * H])
                    _sigmoid_(a[:, 3 * H:])
                    xp.multiply(a[:, H:2 * H], c, out=cn)
                    cn += a[:, :H] * a[:, 2 * H:3 * H]
                c = cn
                h = out[t]
                xp.tanh(c, out=tanh_c[t])   # kept: backward needs it twice
                xp.multiply(tanh_c[t], a[:, 3 * H:], out=h)
            ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, out, acts, cells, tanh_c)
            ctx.mode, ctx.reverse = mode, reverse
            return out, h.copy(), c.copy()
        # GRU: r, z, n
        b_hn = None if b_hh is None else b_hh[2 * H:]
        ghn = xp.empty((L, N, H), x.dtype)   # W_hn h + b_hn of every step: dr needs it
        pre_n = xp.empty((N, H), x.dtype) if ctx.fused else None   # n's pre-activation
        for t in order:
            a = acts[t]
            gh = xp.matmul(h, w_t)
            rz = a[:, :2 * H]
            xp.add(gi[t, :, :2 * H], gh[:, :2 * H], out=rz)
            xp.tanh(rz, out=rz)
            hn = ghn[t]
            n = a[:, 2 * H:]
            hnew = out[t]
            if ctx.fused:
                _kernels.gru_gates(a, gi[t], gh, b_hn, hn, pre_n)
                xp.tanh(pre_n, out=n)
                _kernels.gru_output(a, h, hnew)
            else:
                _sigmoid_(rz)
                if b_hn is not None:
                    xp.add(gh[:, 2 * H:], b_hn, out=hn)
                else:
                    hn[...] = gh[:, 2 * H:]
                xp.multiply(rz[:, :H], hn, out=n)
                n += gi[t, :, 2 * H:]
                xp.tanh(n, out=n)
                xp.subtract(h, n, out=hnew)
                hnew *= rz[:, H:]
                hnew += n
            h = hnew
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, out, acts, ghn)
        ctx.mode, ctx.reverse = mode, reverse
        return out, h.copy()

    @staticmethod
    def backward(ctx, g_out, g_h, g_c=None):
        mode, reverse = ctx.mode, ctx.reverse
        if ctx.create_graph:
            return _double_backward(ctx, g_out, g_h, g_c)
        xp = ctx.xp
        saved = ctx.saved_tensors
        x, h0, c0, w_ih, w_hh, _, _, out = saved[:8]
        L, N, I = x.shape
        G, H = w_hh.shape
        need = ctx.needs_input_grad
        order = range(L) if reverse else range(L - 1, -1, -1)  # backward runs time in reverse
        first = L - 1 if reverse else 0                          # the step that reads h0
        dg = xp.empty((L, N, G), x.dtype)      # gradient of the gates' pre-activations
        dh = g_h.copy()
        fused = ctx.fused and g_out.dtype == dh.dtype == x.dtype \
            and (g_c is None or g_c.dtype == x.dtype)
        if fused:   # (the upstream gradient may be a broadcast: a contiguous copy for the loop)
            g_out = xp.ascontiguousarray(g_out)
        if mode in ("RNN_TANH", "RNN_RELU"):
            deriv = 1 - out * out if mode == "RNN_TANH" else (out > 0).astype(out.dtype)
            for t in order:
                dh += g_out[t]
                d = dg[t]
                xp.multiply(dh, deriv[t], out=d)
                dh = xp.matmul(d, w_hh)
            dgh = dg
            dc = None
        elif mode == "LSTM":
            # per step, on (N, H) scratch arrays that stay in cache:
            # dc += dh o (1 - tanh(c)^2); the gates' pre-activation gradients are
            # (dc g, dc c_prev, dc i, dh tanh(c)) times the activations' derivatives, whose
            # sigmoid factors s (1 - s) are taken for the whole (N, 4H) block in two passes
            # (the g block then gets 1 - g^2) and applied in one: 16 operations a step
            # against 24 when each gate had its own
            acts, cells, tanh_c = saved[8:]
            dc = g_c.copy()
            if fused:   # the same per step in one call (ddp.kernels.recurrent)
                for t in order:
                    cp = c0 if t == first else cells[t + 1 if reverse else t - 1]
                    _kernels.lstm_cell_backward(acts[t], cp, tanh_c[t], g_out[t], dh, dc, dg[t])
                    xp.matmul(dg[t], w_hh, out=dh)
            else:
                tmp = xp.empty((N, H), x.dtype)
                fac = xp.empty((N, G), x.dtype)
                fac_g = fac[:, 2 * H:3 * H]
                for t in order:
                    a = acts[t]
                    i, f, gg, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
                    cp = c0 if t == first else cells[t + 1 if reverse else t - 1]
                    tc = tanh_c[t]
                    d = dg[t]
                    dh += g_out[t]
                    xp.subtract(1, a, out=fac)
                    fac *= a
                    xp.multiply(gg, gg, out=fac_g)
                    xp.subtract(1, fac_g, out=fac_g)
                    xp.multiply(dh, o, out=tmp)
                    dc += tmp
                    tmp *= tc
                    tmp *= tc
                    dc -= tmp
                    xp.multiply(dc, gg, out=d[:, :H])
                    xp.multiply(dc, cp, out=d[:, H:2 * H])
                    xp.multiply(dc, i, out=d[:, 2 * H:3 * H])
                    xp.multiply(dh, tc, out=d[:, 3 * H:])
                    d *= fac
                    dc *= f
                    dh = xp.matmul(d, w_hh)
            dgh = dg
        else:  # GRU, per step on (N, H) scratch arrays as LSTM:
            # d(pre_z) = dh (h_prev - n) z (1-z), d(pre_n) = dh (1-z)(1-n^2),
            # d(pre_r) = d(pre_n) (W_hn h + b_hn) r (1-r), and W_h sees d(pre_n) * r for n
            acts, ghn = saved[8:]
            dgh = xp.empty((L, N, G), x.dtype)
            if fused:   # the same per step in one call (ddp.kernels.recurrent)
                dh_w = xp.zeros((N, H), x.dtype)   # the W_hh part of the gradient carried
                for t in order:
                    hp = h0 if t == first else out[t + 1 if reverse else t - 1]
                    _kernels.gru_cell_backward(acts[t], hp, ghn[t], g_out[t], dh, dh_w, dg[t],
                                               dgh[t])
                    xp.matmul(dgh[t], w_hh, out=dh_w)
                dh += dh_w
            else:
                dg4 = dg.reshape(L, N, 3, H)
                tmp = xp.empty((N, H), x.dtype)
                for t in order:
                    a = acts[t]
                    rr, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
                    hp = h0 if t == first else out[t + 1 if reverse else t - 1]
                    d = dg4[t]
                    dh += g_out[t]
                    dn = d[:, 2]
                    xp.multiply(n, n, out=tmp)
                    xp.subtract(1, tmp, out=tmp)
                    xp.multiply(dh, tmp, out=dn)
                    xp.subtract(1, z, out=tmp)
                    dn *= tmp
                    dz = d[:, 1]
                    xp.subtract(hp, n, out=dz)
                    dz *= dh
                    dz *= z
                    dz *= tmp
                    dr = d[:, 0]
                    xp.subtract(1, rr, out=tmp)
                    tmp *= rr
                    tmp *= ghn[t]
                    xp.multiply(dn, tmp, out=dr)
                    e = dgh[t]
                    e[:, :2 * H] = dg[t, :, :2 * H]
                    xp.multiply(dn, rr, out=e[:, 2 * H:])
                    dh *= z
                    dh += xp.matmul(e, w_hh)
            dc = None

        # the weights' and biases' gradients go into their sinks where offered (DDP's buckets:
        # see Node.gradient_sink; of the weights' dtype, which is x's and dg's here)
        sink = ctx.gradient_sink   # sink(i): input i's, or None
        rows = dg.reshape(L * N, G)
        gx = xp.matmul(rows, w_ih).reshape(L, N, I) if need[0] else None
        gw_ih = _products(xp, [(rows.T, x.reshape(L * N, I))], sink(3)) if need[3] else None
        gw_hh = None
        if need[4]:  # sum over steps of dgh[t]^T h_prev[t]: the steps after the first in one product
            rest = slice(0, L - 1) if reverse else slice(1, L)
            before = slice(1, L) if reverse else slice(0, L - 1)
            pairs = [(dgh[first].T, h0)]
            if L > 1:
                pairs.insert(0, (dgh[rest].reshape(-1, G).T, out[before].reshape(-1, H)))
            gw_hh = _products(xp, pairs, sink(4))
        gb_ih = gb_hh = None
        if need[5] or need[6] and mode != "GRU":   # RNN's and LSTM's biases: one gradient
            total = rows.sum(axis=0)
            if need[5]:
                gb_ih = _scaled_into(xp, total, sink(5))
            if need[6] and mode != "GRU":   # an array of its own (a hook may change one)
                gb_hh = _scaled_into(xp, total, sink(6), copy=gb_ih is total)
        if need[6] and mode == "GRU":
            gb_hh = _scaled_into(xp, dgh.reshape(L * N, G).sum(axis=0), sink(6))
        return gx, dh if need[1] else None, dc if need[2] else None, gw_ih, gw_hh, gb_ih, gb_hh


def _products(xp, pairs, sink):
    """The sum of the products ``a @ b`` over ``pairs``: a new array, or with ``sink = (out,
    scale)`` (see ``Node.gradient_sink``) ``scale`` times it, written into ``out`` (the first
    product, the largest, straight there), the scale applied once, to whichever is smallest:
    the left operands, the right ones, or ``out`` (in place)."""
    if sink is None:
        total = xp.matmul(*pairs[0])
        for a, b in pairs[1:]:
            total += xp.matmul(a, b)
        return total
    out, scale = sink
    side = None   # 0: the left operands scaled, 1: the right ones, None: out afterwards
    if scale != 1:
        sizes = [sum(pair[k].size for pair in pairs) for k in (0, 1)]
        if min(sizes) < out.size:
            side = sizes.index(min(sizes))
    for k, pair in enumerate(pairs):
        if side is not None:
            pair = tuple(a * scale if j == side else a for j, a in enumerate(pair))
        if k == 0:
            xp.matmul(*pair, out=out)
        else:
            out += xp.matmul(*pair)
    if scale != 1 and side is None:
        out *= scale
    return out


def _scaled_into(xp, grad, sink, copy=False):
    """``grad`` (a copy with ``copy``), or with ``sink = (out, scale)`` (see
    ``Node.gradient_sink``) ``scale * grad`` written into ``out``."""
    if sink is None:
        return grad.copy() if copy else grad
    out, scale = sink
    xp.multiply(grad, scale, out=out)
    return out


def _double_backward(ctx, g_out, g_h, g_c):
    """Under ``create_graph``: the gradient taken through the composed recurrence rebuilt on the
    op's own input tensors, so that it is differentiable again (``autograd.grad`` runs only the
    rebuilt nodes, not the graph the inputs came from)."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = ctx.saved_tensors[:7]
    lstm = ctx.mode == "LSTM"
    outs = composed_layer(ctx.mode, x, (h0, c0) if lstm else (h0,), (w_ih, w_hh, b_ih, b_hh),
                          ctx.reverse)
    ins = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    wrt = [k for k, need in enumerate(ctx.needs_input_grad) if need]
    grads = _autograd_grad(outs, [ins[k] for k in wrt], (g_out, g_h, g_c)[:len(outs)],
                           create_graph=True, allow_unused=True)
    result = [None] * len(ins)
    for k, g in zip(wrt, grads):
        result[k] = g
    return tuple(result)
