"""Convolution and pooling: outputs against loop formulas written with NumPy, gradients against
finite differences (float64 gradcheck), PyTorch parity for the option combinations (outputs and
gradients, when torch is installed), bad-input errors, reprs and initialisation.
"""
import math

import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.nn.functional as F
from ddp.autograd import gradcheck


def arr(t):
    return np.asarray(t.detach().cpu().numpy())


def rand(*shape, seed=0, requires_grad=True, dtype=np.float64):
    data = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return ddp.tensor(data, requires_grad=requires_grad)


# ============================================================== NumPy reference formulas

def np_conv2d(x, w, b=None, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1),
              groups=1):
    """Cross-correlation, one output pixel at a time."""
    x = np.pad(x, ((0, 0), (0, 0)) + tuple(padding))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    per_group = o // groups
    for oc in range(o):
        g = oc // per_group
        for i in range(oh):
            for j in range(ow):
                patch = x[:, g * cg:(g + 1) * cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                          j * sw:j * sw + dw * (kw - 1) + 1:dw]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def np_conv_transpose2d(x, w, b=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                        dilation=(1, 1), groups=1):
    """Scatter each input pixel times the kernel into the output."""
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + output_padding[0] + 1
    ow = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + output_padding[1] + 1
    full = np.zeros((n, cog * groups, oh + 2 * ph, ow + 2 * pw))
    per_group = cin // groups
    for c in range(cin):
        g = c // per_group
        for i in range(h):
            for j in range(wd):
                for ki in range(kh):
                    for kj in range(kw):
                        full[:, g * cog:(g + 1) * cog, i * sh + ki * dh, j * sw + kj * dw] += \
                            x[:, c, i, j][:, None] * w[c, :, ki, kj][None, :]
    out = full[:, :, ph:ph + oh, pw:pw + ow]
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return out


def _pool_windows(size, k, s, p, d, ceil_mode):
    """Start of each window along one axis (PyTorch's output-size rule)."""
    span = size + 2 * p - d * (k - 1) - 1
    o = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1
    return [i * s - p for i in range(o)]


def np_max_pool2d(x, k, s, p=(0, 0), d=(1, 1), ceil_mode=False):
    """Max and flat argmax (first maximum) of each window, skipping positions outside x."""
    n, c, h, w = x.shape
    rows = _pool_windows(h, k[0], s[0], p[0], d[0], ceil_mode)
    cols = _pool_windows(w, k[1], s[1], p[1], d[1], ceil_mode)
    out = np.zeros((n, c, len(rows), len(cols)))
    idx = np.zeros(out.shape, dtype=np.int64)
    for a in range(n):
        for b in range(c):
            for i, r0 in enumerate(rows):
                for j, c0 in enumerate(cols):
                    best, where = -np.inf, -1
                    for ki in range(k[0]):
                        for kj in range(k[1]):
                            r, cc = r0 + ki * d[0], c0 + kj * d[1]
                            if 0 <= r < h and 0 <= cc < w and x[a, b, r, cc] > best:
                                best, where = x[a, b, r, cc], r * w + cc
                    out[a, b, i, j], idx[a, b, i, j] = best, where
    return out, idx


def np_avg_pool2d(x, k, s, p=(0, 0), ceil_mode=False, count_include_pad=True,
                  divisor_override=None):
    """PyTorch's rule: the window is clipped to the padded input for the count_include_pad
    divisor, and to the input for the sum and the other divisor."""
    n, c, h, w = x.shape
    rows = _pool_windows(h, k[0], s[0], p[0], 1, ceil_mode)
    cols = _pool_windows(w, k[1], s[1], p[1], 1, ceil_mode)
    out = np.zeros((n, c, len(rows), len(cols)))
    for i, r0 in enumerate(rows):
        for j, c0 in enumerate(cols):
            r1, c1 = min(r0 + k[0], h + p[0]), min(c0 + k[1], w + p[1])
            padded_count = (r1 - r0) * (c1 - c0)
            ra, rb, ca, cb = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
            total = x[:, :, ra:rb, ca:cb].sum(axis=(2, 3))
            div = divisor_override or (padded_count if count_include_pad
                                       else (rb - ra) * (cb - ca))
            out[:, :, i, j] = total / div
    return out


def np_adaptive_avg_pool2d(x, out):
    n, c, h, w = x.shape
    res = np.zeros((n, c) + tuple(out))
    for i in range(out[0]):
        r0, r1 = (i * h) // out[0], math.ceil((i + 1) * h / out[0])
        for j in range(out[1]):
            c0, c1 = (j * w) // out[1], math.ceil((j + 1) * w / out[1])
            res[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return res


# ============================================================== conv2d

CONV_CASES = [  # stride, padding, dilation, groups, bias
    dict(),
    dict(stride=2, padding=1),
    dict(stride=(2, 1), padding=(0, 2)),
    dict(dilation=2, padding=2),
    dict(groups=3, padding=1),
    dict(stride=2, dilation=(1, 2), groups=3, bias=False),
]


def _conv_inputs(case, c_in=3, c_out=6, k=3, size=(7, 6)):
    x = rand(2, c_in, *size, seed=1)
    w = rand(c_out, c_in // case.get("groups", 1), k, k, seed=2)
    b = rand(c_out, seed=3) if case.get("bias", True) else None
    kw = {k_: v for k_, v in case.items() if k_ != "bias"}
    return x, w, b, kw


def _np_conv_kwargs(kw):
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    p = pair(kw.get("padding", 0))
    return dict(stride=pair(kw.get("stride", 1)), padding=((p[0], p[0]), (p[1], p[1])),
                dilation=pair(kw.get("dilation", 1)), groups=kw.get("groups", 1))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_numpy(case):
    x, w, b, kw = _conv_inputs(case)
    y = F.conv2d(x, w, b, **kw)
    ref = np_conv2d(arr(x), arr(w), None if b is None else arr(b), **_np_conv_kwargs(kw))
    np.testing.assert_allclose(arr(y), ref, rtol=1e-10, atol=1e-10)


def test_conv2d_same_and_valid_padding():
    x = rand(1, 2, 6, 5)
    for k, d in ((3, 1), (4, 1), (2, 3), (4, 2)):
        w = rand(3, 2, k, k, seed=k)
        y = F.conv2d(x, w, padding="same", dilation=d)
        total = d * (k - 1)  # PyTorch puts the extra row/column at the bottom/right
        pads = ((total // 2, total - total // 2),) * 2
        np.testing.assert_allclose(arr(y), np_conv2d(arr(x), arr(w), padding=pads,
                                                     dilation=(d, d)), atol=1e-10)
        assert y.shape == x.shape[:1] + (3,) + x.shape[2:]
    w = rand(3, 2, 3, 3)
    np.testing.assert_allclose(arr(F.conv2d(x, w, padding="valid")), arr(F.conv2d(x, w)))


@pytest.mark.parametrize("case", CONV_CASES[:2] + CONV_CASES[4:])
def test_conv2d_gradcheck(case):
    x, w, b, kw = _conv_inputs(case, size=(5, 5))
    inputs = (x, w) if b is None else (x, w, b)
    assert gradcheck(lambda *t: F.conv2d(*t, **kw), inputs)


def test_conv2d_gradcheck_same_padding_asymmetric():
    x, w = rand(1, 2, 5, 4), rand(2, 2, 2, 3, seed=4)
    assert gradcheck(lambda a, b: F.conv2d(a, b, padding="same"), (x, w))


@pytest.mark.parametrize("block", [4, 48])
def test_conv2d_in_blocks_of_pixels(monkeypatch, block):
    """On the CPU the patch matrix is built and multiplied a block of output pixels at a time
    (image rows of one sample when a sample has more pixels than a block, else whole samples,
    the last block shorter): every block size gives the same outputs and gradients, for the
    convolution and the transposed one (a convolution too: with the flipped kernel at stride 1,
    with the sub-pixel kernel whose output channels are the phases when strided)."""
    from ddp.nn.functional import _conv
    monkeypatch.setattr(_conv, "_BLOCK", block)
    x, w, b = rand(3, 8, 5, 4, seed=1), rand(9, 8, 3, 3, seed=2), rand(9, seed=3)
    for kw in (dict(padding=1), dict(stride=2, padding=(1, 0)), dict(dilation=2, padding=2)):
        ref = np_conv2d(arr(x), arr(w), arr(b), **_np_conv_kwargs(kw))
        np.testing.assert_allclose(arr(F.conv2d(x, w, b, **kw)), ref, atol=1e-10)
        assert gradcheck(lambda *t: F.conv2d(*t, **kw), (x, w, b))
    wt = rand(8, 9, 3, 3, seed=4)
    for kw in (dict(padding=1), dict(stride=2, padding=1, output_padding=1),
               dict(stride=(2, 3), padding=(0, 1))):
        ref = np_conv_transpose2d(arr(x), arr(wt), arr(b), stride=_pair(kw.get("stride", 1)),
                                  padding=_pair(kw["padding"]),
                                  output_padding=_pair(kw.get("output_padding", 0)))
        np.testing.assert_allclose(arr(F.conv_transpose2d(x, wt, b, **kw)), ref, atol=1e-10)
        assert gradcheck(lambda *t: F.conv_transpose2d(*t, **kw), (x, wt, b))


def test_conv2d_unbatched_input():
    x, w = rand(3, 5, 5), rand(4, 3, 3, 3)
    y = F.conv2d(x, w, padding=1)
    assert y.shape == (4, 5, 5)
    np.testing.assert_allclose(arr(y), arr(F.conv2d(x.unsqueeze(0), w, padding=1))[0])


def test_conv2d_only_needed_gradients(monkeypatch):
    """The input gradient (a transposed convolution) is computed only when the input needs it,
    and the weight gradient only when the weight does."""
    from ddp.nn.functional import _conv
    calls = []
    for name in ("ConvolutionTranspose", "ConvolutionWeight"):
        op = getattr(_conv, name)
        monkeypatch.setattr(op, "run", classmethod(
            lambda cls, *a, _run=op.run, _name=name, **k: calls.append(_name) or _run(*a, **k)))
    conv = nn.Conv2d(3, 4, 3).double()
    conv(rand(2, 3, 5, 5, requires_grad=False)).sum().backward()
    assert calls == ["ConvolutionWeight"]
    assert conv.weight.grad is not None and conv.bias.grad is not None
    calls.clear()
    conv.weight.requires_grad_(False)
    x = rand(2, 3, 5, 5)
    conv(x).sum().backward()
    assert calls == ["ConvolutionTranspose"] and x.grad is not None


def test_conv2d_float32_keeps_dtype():
    conv = nn.Conv2d(3, 4, 3)
    y = conv(ddp.randn(2, 3, 6, 6))
    assert y.dtype == ddp.float32
    y.sum().backward()
    assert conv.weight.grad.dtype == ddp.float32


def test_conv1d_matches_numpy_and_gradcheck():
    x, w, b = rand(2, 4, 9), rand(6, 2, 3, seed=1), rand(6, seed=2)
    y = F.conv1d(x, w, b, stride=2, padding=1, dilation=2, groups=2)
    ref = np_conv2d(arr(x)[:, :, None], arr(w)[:, :, None], arr(b), stride=(1, 2),
                    padding=((0, 0), (1, 1)), dilation=(1, 2), groups=2)[:, :, 0]
    np.testing.assert_allclose(arr(y), ref, atol=1e-10)
    assert gradcheck(lambda *t: F.conv1d(*t, stride=2, padding=1, groups=2), (x, w, b))
    assert F.conv1d(x, rand(3, 4, 4), padding="same").shape == (2, 3, 9)
    assert F.conv1d(x[0], rand(3, 4, 3)).shape == (3, 7)  # unbatched


# ============================================================== conv_transpose2d

TRANSPOSE_CASES = [  # stride, padding, output_padding, dilation, groups
    dict(),
    dict(stride=2, padding=1),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=(2, 3), padding=(0, 1), output_padding=(1, 2)),
    dict(dilation=2, padding=1),
    dict(stride=2, groups=2, dilation=(2, 1), output_padding=1),
]


def _transpose_inputs(case, size=(4, 3)):
    g = case.get("groups", 1)
    x = rand(2, 4, *size, seed=1)
    w = rand(4, 6 // g, 3, 3, seed=2)
    b = rand(6, seed=3)
    return x, w, b


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose2d_matches_numpy(case):
    x, w, b = _transpose_inputs(case)
    y = F.conv_transpose2d(x, w, b, **case)
    ref = np_conv_transpose2d(arr(x), arr(w), arr(b), stride=_pair(case.get("stride", 1)),
                              padding=_pair(case.get("padding", 0)),
                              output_padding=_pair(case.get("output_padding", 0)),
                              dilation=_pair(case.get("dilation", 1)),
                              groups=case.get("groups", 1))
    np.testing.assert_allclose(arr(y), ref, atol=1e-10)


@pytest.mark.parametrize("case", [TRANSPOSE_CASES[0], TRANSPOSE_CASES[2], TRANSPOSE_CASES[5]])
def test_conv_transpose2d_gradcheck(case):
    x, w, b = _transpose_inputs(case, size=(3, 3))
    assert gradcheck(lambda *t: F.conv_transpose2d(*t, **case), (x, w, b))


def test_conv_transpose2d_output_size():
    m = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1).double()
    x = rand(1, 4, 5, 5)
    assert m(x).shape == (1, 2, 9, 9)
    assert m(x, output_size=(10, 10)).shape == (1, 2, 10, 10)
    assert m(x, output_size=[1, 2, 10, 9]).shape == (1, 2, 10, 9)
    with pytest.raises(ValueError, match="output padding"):
        m(x, output_size=(12, 12))


# ============================================================== max pooling

MAXPOOL_CASES = [  # kernel, stride, padding, dilation, ceil_mode
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=1, padding=1, dilation=2),
]


def _np_pool_kwargs(case):
    k = _pair(case["kernel_size"])
    return dict(k=k, s=_pair(case.get("stride") or k), p=_pair(case.get("padding", 0)),
                ceil_mode=case.get("ceil_mode", False))


@pytest.fixture(params=["kernels", "numpy"])
def cpu_path(request, monkeypatch):
    """Each CPU path of max pooling in turn: ddp.kernels' fused loops, then the NumPy path the
    GPU runs (kernels off)."""
    from ddp import kernels
    if request.param == "numpy":
        monkeypatch.setattr(kernels, "_enabled", False)
    return request.param


@pytest.mark.parametrize("case", MAXPOOL_CASES)
def test_max_pool2d_matches_numpy(case, cpu_path):
    x = rand(2, 3, 7, 6)
    y, idx = F.max_pool2d(x, return_indices=True, **case)
    assert y.grad_fn.fused == (cpu_path == "kernels")
    ref, ref_idx = np_max_pool2d(arr(x), d=_pair(case.get("dilation", 1)),
                                 **_np_pool_kwargs(case))
    np.testing.assert_array_equal(arr(y), ref)
    np.testing.assert_array_equal(arr(idx), ref_idx)
    assert idx.dtype == ddp.int64
    np.testing.assert_array_equal(arr(F.max_pool2d(x, **case)), ref)


@pytest.mark.parametrize("case", MAXPOOL_CASES[:2] + MAXPOOL_CASES[4:])
def test_max_pool2d_gradcheck(case, cpu_path):
    # distinct values far apart: finite differences never cross a tie
    x = ddp.tensor(np.random.default_rng(0).permutation(2 * 2 * 6 * 5).reshape(2, 2, 6, 5)
                   .astype(np.float64), requires_grad=True)
    assert gradcheck(lambda t: F.max_pool2d(t, **case), (x,))


def test_max_pool2d_ties_send_gradient_to_first_maximum(cpu_path):
    x = ddp.ones(1, 1, 2, 4, requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(arr(x.grad)[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("case", [dict(kernel_size=2), dict(kernel_size=2, padding=1),
                                  dict(kernel_size=2, ceil_mode=True), dict(kernel_size=(2, 4)),
                                  dict(kernel_size=(1, 2), ceil_mode=True)])
def test_max_pool2d_tiled_backward_matches_kernel_positions(monkeypatch, numpy_path, case):
    """Windows that tile the input (kernel = stride) take their backward in image rows, the
    first maximum from the bytes of one integer per window row: with ties everywhere (values
    0..2), windows short of the edge and padding, the gradient is the one of the kernel
    positions' path."""
    from ddp.nn.functional import _pooling
    x = np.random.default_rng(0).integers(0, 3, (2, 3, 7, 9)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal(F.max_pool2d(ddp.tensor(x), **case).shape)
    grads = []
    for words in (_pooling._WINDOW_WORDS, {}):   # {}: no tiled path
        monkeypatch.setattr(_pooling, "_WINDOW_WORDS", words)
        t = ddp.tensor(x, requires_grad=True)
        F.max_pool2d(t, **case).backward(ddp.tensor(g.astype(np.float32)))
        grads.append(arr(t.grad))
    np.testing.assert_array_equal(grads[0], grads[1])
    assert np.count_nonzero(grads[0]) == g.size - np.count_nonzero(g == 0)


def test_max_pool2d_output_may_be_modified_in_place(cpu_path):
    x = rand(1, 2, 4, 4)
    y = F.max_pool2d(x, 2)
    y.relu_()  # backward must not depend on the pooled values
    y.sum().backward()
    assert x.grad is not None


def test_max_pool2d_backward_leaves_nothing_of_the_maxima(cpu_path):
    """Once backward has run, what max pooling kept to find its maxima (the kernel's argmax,
    the NumPy path's padded input and pooled copy) is gone though the graph lives on, and its
    backward ops left none of it on the shared ctx of unrecorded calls: what stays is x.grad
    (and a few small objects; the argmax alone is 128 KiB)."""
    import tracemalloc
    x = ddp.tensor(np.random.default_rng(0).standard_normal((16, 8, 32, 32)),
                   requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()   # (a kernel's first call loads it)
    x.grad = None
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        loss = F.max_pool2d(x, 2).sum()
        loss.backward()
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert x.grad.nbytes <= left < x.grad.nbytes + 32 * 1024
    assert float(loss) == pytest.approx(float(x.grad.mul(x).sum()))


def test_max_pool1d(cpu_path):
    x = rand(2, 3, 9)
    y, idx = F.max_pool1d(x, 3, stride=2, padding=1, return_indices=True)
    ref, ref_idx = np_max_pool2d(arr(x)[:, :, None], (1, 3), (1, 2), (0, 1))
    np.testing.assert_array_equal(arr(y), ref[:, :, 0])
    np.testing.assert_array_equal(arr(idx), ref_idx[:, :, 0])
    assert F.max_pool1d(x[0], 2).shape == (3, 4)
    m = nn.MaxPool1d(2, dilation=2, ceil_mode=True)
    ref = np_max_pool2d(arr(x)[:, :, None], (1, 2), (1, 2), d=(1, 2), ceil_mode=True)[0]
    np.testing.assert_array_equal(arr(m(x)), ref[:, :, 0])


def test_max_pool_integer_input():
    x = ddp.tensor([[[[1, -5], [3, 2]]]])
    assert F.max_pool2d(x, 2, padding=1).tolist() == [[[[1, -5], [3, 2]]]]


# every combination of the options (the padding is within half of every kernel here)
MAXPOOL_OPTIONS = [dict(kernel_size=k, stride=st, padding=p, dilation=d, ceil_mode=c)
                   for k in (2, 3, (2, 3)) for st in (None, 1, 2, (2, 1)) for p in (0, 1)
                   for d in (1, 2) for c in (False, True)]


def _max_pooled(x, case, upstream="array"):
    """max_pool2d of the array ``x`` with its indices and input gradient for a random upstream
    gradient (``array``, a ``transposed`` view, or the ``sum``'s broadcast one), and whether
    the fused kernel ran."""
    t = ddp.tensor(x, requires_grad=True)
    y, idx = F.max_pool2d(t, return_indices=True, **case)
    g = np.random.default_rng(1).standard_normal(y.shape[::-1]).astype(x.dtype)
    if upstream == "sum":
        y.sum().backward()
    elif upstream == "transposed":
        y.backward(ddp.tensor(g).permute(3, 2, 1, 0))
    else:
        y.backward(ddp.tensor(np.ascontiguousarray(g.transpose(3, 2, 1, 0))))
    return [arr(y), arr(idx), arr(t.grad)], y.grad_fn.fused


@pytest.mark.parametrize("case", MAXPOOL_OPTIONS, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_kernels_give_the_numpy_paths_values_indices_and_gradients(monkeypatch, case,
                                                                            dtype):
    """ddp.kernels' max pooling (the CPU's path for a contiguous float input that needs a
    gradient) against the NumPy path the GPU runs, every option combination, values 0..3 so
    that every window has ties: the same maxima, the same first maximum's index, the same
    gradient (added where windows overlap)."""
    from ddp import kernels
    x = np.random.default_rng(0).integers(0, 4, (2, 3, 7, 8)).astype(dtype)
    got, fused = _max_pooled(x, case)
    assert fused
    monkeypatch.setattr(kernels, "_enabled", False)
    want, fused = _max_pooled(x, case)
    assert not fused
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[2], want[2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("upstream", ["transposed", "sum"])
@pytest.mark.parametrize("case", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)])
def test_max_pool_kernel_takes_a_transposed_or_broadcast_upstream_gradient(monkeypatch, upstream,
                                                                           case):
    from ddp import kernels
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7))
    got, fused = _max_pooled(x, case, upstream)
    assert fused
    monkeypatch.setattr(kernels, "_enabled", False)
    want, _ = _max_pooled(x, case, upstream)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


_NAN, _INF = float("nan"), float("inf")
# PyTorch 2.13's answers (max_pool2d with return_indices, then backward from 1, 2, 3, ...):
# a NaN is the maximum and the last NaN of a window its place; a window of -inf points at its
# first element inside the input
_NAN_INPUT = [[1., _NAN, 3., _NAN, 0.], [_NAN, 2., 0., 5., -_INF],
              [-_INF, -_INF, 4., 4., -_INF], [-_INF, -_INF, 2., _NAN, -_INF]]
_NAN_TORCH = [
    (dict(kernel_size=2), [[_NAN, _NAN], [-_INF, _NAN]], [[5, 3], [10, 18]],
     [[0, 0, 0, 2, 0], [1, 0, 0, 0, 0], [3, 0, 0, 0, 0], [0, 0, 0, 4, 0]]),
    (dict(kernel_size=3, stride=2, padding=1), [[_NAN] * 3] * 2, [[5, 3, 3], [5, 18, 18]],
     [[0, 0, 0, 5, 0], [5, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 11, 0]]),
    (dict(kernel_size=2, stride=1),
     [[_NAN, _NAN, _NAN, _NAN], [_NAN, 4, 5, 5], [-_INF, 4, _NAN, _NAN]],
     [[5, 1, 3, 3], [5, 12, 8, 8], [10, 12, 18, 18]],
     [[0, 2, 0, 7, 0], [6, 0, 0, 15, 0], [9, 0, 16, 0, 0], [0, 0, 0, 23, 0]]),
    (dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
     [[1, _NAN, _NAN], [_NAN, 4, 5], [-_INF, 2, _NAN]], [[0, 1, 3], [5, 12, 8], [15, 17, 18]],
     [[1, 2, 0, 3, 0], [4, 0, 0, 6, 0], [0, 0, 5, 0, 0], [7, 0, 8, 9, 0]]),
    (dict(kernel_size=2, stride=1, padding=1, dilation=2),
     [[2, _NAN, 5, 0, 5], [_NAN, 4, _NAN, 4, _NAN], [2, _NAN, _NAN, 2, _NAN],
      [-_INF, 4, 4, 4, 4]],
     [[6, 5, 8, 7, 8], [1, 12, 3, 12, 3], [6, 5, 18, 17, 18], [11, 12, 13, 12, 13]],
     [[0, 6, 0, 18, 0], [14, 12, 4, 8, 0], [0, 16, 52, 38, 0], [0, 0, 14, 28, 0]]),
]


@pytest.mark.parametrize("case,y,idx,grad", _NAN_TORCH, ids=lambda v: str(v)[:40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_takes_nan_and_minus_infinity_as_pytorch(case, y, idx, grad, dtype, cpu_path):
    # (the NumPy path, the GPU's: the padding took a window of -inf, and a NaN, never equal to
    # the maximum, got neither the index nor the gradient)
    x = ddp.tensor(np.array(_NAN_INPUT, dtype)[None, None], requires_grad=True)
    out, where = F.max_pool2d(x, return_indices=True, **case)
    assert out.grad_fn.fused == (cpu_path == "kernels")
    out.backward(ddp.arange(1, out.numel() + 1, dtype=out.dtype).reshape(out.shape))
    np.testing.assert_array_equal(arr(out)[0, 0], np.array(y, dtype))
    np.testing.assert_array_equal(arr(where)[0, 0], idx)
    np.testing.assert_array_equal(arr(x.grad)[0, 0], np.array(grad, dtype))


def test_max_pool_kernels_are_left_to_the_numpy_path_where_they_do_not_fit(monkeypatch):
    """float16, a non-contiguous input and an input that needs no gradient (the NumPy forward
    is the faster one there) take the NumPy path."""
    from ddp.nn.functional import _pooling
    x = rand(2, 3, 6, 6, dtype=np.float32)
    for inp in (x.half(), x.transpose(2, 3)):
        assert not F.max_pool2d(inp, 2).grad_fn.fused
    monkeypatch.setattr(_pooling._kernels, "max_pool2d_forward", None)   # (not to be called)
    with ddp.no_grad():
        np.testing.assert_array_equal(arr(F.max_pool2d(x, 3, 1, 1)),
                                      np_max_pool2d(arr(x), (3, 3), (1, 1), (1, 1))[0])


# ============================================================== average pooling

AVGPOOL_CASES = [  # kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
    dict(kernel_size=2, stride=1, divisor_override=3),
]


@pytest.mark.parametrize("case", AVGPOOL_CASES)
def test_avg_pool2d_matches_numpy(case):
    x = rand(2, 3, 7, 6)
    ref = np_avg_pool2d(arr(x), count_include_pad=case.get("count_include_pad", True),
                        divisor_override=case.get("divisor_override"), **_np_pool_kwargs(case))
    np.testing.assert_allclose(arr(F.avg_pool2d(x, **case)), ref, atol=1e-12)


@pytest.mark.parametrize("case", [AVGPOOL_CASES[1], AVGPOOL_CASES[4]])
def test_avg_pool2d_gradcheck(case):
    assert gradcheck(lambda t: F.avg_pool2d(t, **case), (rand(2, 2, 5, 6),))


def test_avg_pool1d():
    x = rand(2, 3, 8)
    y = F.avg_pool1d(x, 3, stride=2, padding=1, count_include_pad=False, ceil_mode=True)
    ref = np_avg_pool2d(arr(x)[:, :, None], (1, 3), (1, 2), (0, 1), ceil_mode=True,
                        count_include_pad=False)
    np.testing.assert_allclose(arr(y), ref[:, :, 0], atol=1e-12)
    assert nn.AvgPool1d(2)(x[0]).shape == (3, 4)


# ============================================================== adaptive average pooling

@pytest.mark.parametrize("out", [(1, 1), (2, 3), (3, 2), (4, 4), (7, 5)])
def test_adaptive_avg_pool2d_matches_numpy(out):
    x = rand(2, 3, 7, 5)
    y = F.adaptive_avg_pool2d(x, out)
    np.testing.assert_allclose(arr(y), np_adaptive_avg_pool2d(arr(x), out), atol=1e-12)


def test_adaptive_avg_pool_none_unbatched_and_1d():
    x = rand(3, 7, 5)
    assert F.adaptive_avg_pool2d(x, (3, None)).shape == (3, 3, 5)
    assert nn.AdaptiveAvgPool2d(2)(x).shape == (3, 2, 2)
    y = F.adaptive_avg_pool1d(rand(2, 3, 7), 3)
    ref = np_adaptive_avg_pool2d(arr(rand(2, 3, 7))[:, :, None], (1, 3))[:, :, 0]
    np.testing.assert_allclose(arr(y), ref, atol=1e-12)


@pytest.mark.parametrize("out", [(2, 2), (3, 2)])
def test_adaptive_avg_pool2d_gradcheck(out):
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, out), (rand(1, 2, 4, 5),))


# ============================================================== modules: repr, init, errors

def test_reprs_match_pytorch_format():
    assert repr(nn.Conv2d(3, 16, 3, padding=1)) == \
        "Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    assert repr(nn.Conv2d(3, 16, (3, 5), stride=2, dilation=2, groups=1, bias=False)) == \
        "Conv2d(3, 16, kernel_size=(3, 5), stride=(2, 2), dilation=(2, 2), bias=False)"
    assert repr(nn.Conv2d(4, 4, 3, padding="same", groups=2, padding_mode="reflect")) == \
        ("Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=same, groups=2, "
         "padding_mode=reflect)")
    assert repr(nn.Conv1d(4, 8, 3)) == "Conv1d(4, 8, kernel_size=(3,), stride=(1,))"
    assert repr(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, output_padding=1)) == \
        ("ConvTranspose2d(8, 4, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), "
         "output_padding=(1, 1))")
    assert repr(nn.MaxPool2d(2)) == \
        "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.AvgPool2d(3, 2, 1)) == "AvgPool2d(kernel_size=3, stride=2, padding=1)"
    assert repr(nn.AvgPool1d(2)) == "AvgPool1d(kernel_size=(2,), stride=(2,), padding=(0,))"
    assert repr(nn.AdaptiveAvgPool2d((1, 1))) == "AdaptiveAvgPool2d(output_size=(1, 1))"


def test_conv_parameter_shapes_and_default_init():
    ddp.manual_seed(0)
    m = nn.Conv2d(6, 8, (3, 5), groups=2)
    assert m.weight.shape == (8, 3, 3, 5) and m.bias.shape == (8,)
    fan_in = 3 * 3 * 5
    # kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the bias the same
    assert float(m.weight.abs().max()) <= 1 / math.sqrt(fan_in)
    assert float(m.weight.abs().max()) > 0.8 / math.sqrt(fan_in)
    assert float(m.bias.abs().max()) <= 1 / math.sqrt(fan_in)
    t = nn.ConvTranspose2d(6, 4, 3, groups=2, bias=False)
    assert t.weight.shape == (6, 2, 3, 3) and t.bias is None
    assert nn.Conv1d(2, 4, 5).weight.shape == (4, 2, 5)
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]


def test_conv_padding_modes_match_numpy():
    x = rand(1, 2, 5, 6)
    for mode, np_mode in (("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")):
        m = nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode=mode).double()
        xp = np.pad(arr(x), ((0, 0), (0, 0), (1, 1), (2, 2)), mode=np_mode)
        np.testing.assert_allclose(arr(m(x)), np_conv2d(xp, arr(m.weight), arr(m.bias)),
                                   atol=1e-10)


def test_conv_errors_name_layer_and_shapes():
    with pytest.raises(RuntimeError, match=r"Conv2d: expected input with 3 channels, got input "
                                           r"of shape \(2, 4, 8, 8\)"):
        nn.Conv2d(3, 16, 3)(ddp.ones(2, 4, 8, 8))
    with pytest.raises(RuntimeError, match=r"Conv2d: expected 3-D \(unbatched\) or 4-D.*\(8, 8\)"):
        nn.Conv2d(3, 16, 3)(ddp.ones(8, 8))
    with pytest.raises(RuntimeError, match=r"Conv1d: expected input with 2 channels"):
        nn.Conv1d(2, 4, 3)(ddp.ones(1, 3, 8))
    with pytest.raises(RuntimeError, match=r"ConvTranspose2d: expected input with 4 channels"):
        nn.ConvTranspose2d(4, 2, 3)(ddp.ones(1, 3, 5, 5))
    with pytest.raises(RuntimeError, match="smaller than the"):
        nn.Conv2d(1, 1, 5)(ddp.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(RuntimeError, match="same dtype"):
        F.conv2d(ddp.ones(1, 1, 3, 3, dtype=ddp.float64), ddp.ones(1, 1, 2, 2))


def test_pool_errors_name_layer_and_shapes():
    with pytest.raises(RuntimeError, match=r"MaxPool2d: expected.*got input of shape \(4, 4\)"):
        nn.MaxPool2d(2)(ddp.ones(4, 4))
    with pytest.raises(RuntimeError, match="at most half"):
        nn.MaxPool2d(2, padding=2)(ddp.ones(1, 1, 8, 8))
    with pytest.raises(RuntimeError, match="too small"):
        nn.AvgPool2d(5)(ddp.ones(1, 1, 3, 3))
    with pytest.raises(RuntimeError, match="AvgPool1d"):
        nn.AvgPool1d(2)(ddp.ones(1, 1, 2, 2, 2))


def test_unbatched_pooling():
    x = rand(3, 6, 6)
    y, idx = nn.MaxPool2d(2, return_indices=True)(x)
    assert y.shape == idx.shape == (3, 3, 3)
    assert nn.AvgPool2d(3, 1, 1)(x).shape == (3, 6, 6)


# ============================================================== PyTorch parity

def torch_run(torch, module, x, seed=5):
    """PyTorch's side of a parity case: the module's state and repr, its output (and indices)
    for input ``x``, and the gradients of ``x`` and of every parameter for a random upstream
    gradient drawn from NumPy's generator (the same one ``check_against`` draws)."""
    xt = torch.tensor(x, requires_grad=True)
    y = module(xt)
    idx = None
    if isinstance(y, tuple):
        y, idx = y[0], y[1].numpy()
    g = np.random.default_rng(seed).standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(torch.tensor(g))
    return {"state": {k: v.detach().numpy() for k, v in module.state_dict().items()},
            "repr": repr(module), "y": y.detach().numpy(), "idx": idx, "gx": xt.grad.numpy(),
            "grads": {k: p.grad.numpy() for k, p in module.named_parameters()}}


def check_against(ref, ours, x, seed=5, rtol=1e-4, atol=1e-5):
    """Ours, loaded with PyTorch's weights, gives its output and gradients for the same
    upstream gradient."""
    ours.load_state_dict({k: ddp.tensor(v) for k, v in ref["state"].items()})
    a = ddp.tensor(x, requires_grad=True)
    y = ours(a)
    if ref["idx"] is not None:
        np.testing.assert_array_equal(arr(y[1]), ref["idx"])
        y = y[0]
    np.testing.assert_allclose(arr(y), ref["y"], rtol=rtol, atol=atol)
    g = np.random.default_rng(seed).standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(ddp.tensor(g))
    np.testing.assert_allclose(arr(a.grad), ref["gx"], rtol=rtol, atol=atol)
    grads = {k: arr(p.grad) for k, p in ours.named_parameters()}
    assert sorted(grads) == sorted(ref["grads"])
    for k, want in ref["grads"].items():
        np.testing.assert_allclose(grads[k], want, rtol=rtol, atol=atol, err_msg=k)


CONV_PARITY = [  # module kwargs for Conv2d(4, 6, ...)
    dict(kernel_size=3),
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    dict(kernel_size=3, dilation=2, padding="same"),
    dict(kernel_size=4, padding="same"),
    dict(kernel_size=3, padding="valid", bias=False),
    dict(kernel_size=3, groups=2, stride=2, padding=2),
    dict(kernel_size=1, groups=2),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=(1, 2), padding_mode="circular"),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on even kernels
@pytest.mark.parametrize("kw", CONV_PARITY)
def test_conv2d_torch_parity(oracle, kw):
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 8)).astype(np.float32)
    ref = oracle(lambda torch: torch_run(torch, torch.nn.Conv2d(4, 6, **kw), x))
    check_against(ref, nn.Conv2d(4, 6, **kw), x)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=5, padding="same", dilation=2, groups=2)])
def test_conv1d_torch_parity(oracle, kw):
    x = np.random.default_rng(0).standard_normal((2, 4, 11)).astype(np.float32)
    ref = oracle(lambda torch: torch_run(torch, torch.nn.Conv1d(4, 6, **kw), x))
    check_against(ref, nn.Conv1d(4, 6, **kw), x)


@pytest.mark.parametrize("kw", [dict(kernel_size=3),
                                dict(kernel_size=4, stride=2, padding=1),
                                dict(kernel_size=3, stride=2, padding=1, output_padding=1),
                                dict(kernel_size=(3, 2), stride=(3, 2), output_padding=(2, 1),
                                     groups=2, bias=False),
                                dict(kernel_size=3, dilation=2, stride=2, padding=2)])
def test_conv_transpose2d_torch_parity(oracle, kw):
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 4)).astype(np.float32)
    ref = oracle(lambda torch: torch_run(torch, torch.nn.ConvTranspose2d(4, 6, **kw), x))
    ours = nn.ConvTranspose2d(4, 6, **kw)
    assert repr(ours) == ref["repr"]
    check_against(ref, ours, x)


def test_conv_reprs_match_torch(oracle):
    cases = [((3, 16, 3), dict(padding=1)), ((4, 8, (3, 5)), dict(stride=(2, 1))),
             ((4, 4, 3), dict(padding="same", groups=4, bias=False)),
             ((2, 2, 3), dict(dilation=2, padding_mode="replicate"))]
    want = oracle(lambda torch: [repr(torch.nn.Conv2d(*a, **kw)) for a, kw in cases]
                  + [repr(torch.nn.Conv1d(2, 3, 3, padding="valid"))])
    got = [repr(nn.Conv2d(*a, **kw)) for a, kw in cases] + [repr(nn.Conv1d(2, 3, 3,
                                                                           padding="valid"))]
    assert got == want


POOL_PARITY = [
    ("MaxPool2d", dict(kernel_size=2)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("MaxPool2d", dict(kernel_size=(2, 3), stride=1, dilation=2, padding=(1, 1))),
    ("MaxPool2d", dict(kernel_size=2, padding=1, ceil_mode=True, return_indices=True)),
    ("AvgPool2d", dict(kernel_size=2)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                       count_include_pad=False)),
    ("AvgPool2d", dict(kernel_size=2, stride=1, divisor_override=5)),
    ("AdaptiveAvgPool2d", dict(output_size=(3, 4))),
    ("AdaptiveAvgPool2d", dict(output_size=(5, None))),
    ("AdaptiveAvgPool2d", dict(output_size=1)),
]


@pytest.mark.parametrize("name,kw", POOL_PARITY)
def test_pool2d_torch_parity(oracle, name, kw):
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 7)).astype(np.float32)
    ref = oracle(lambda torch: torch_run(torch, getattr(torch.nn, name)(**kw), x))
    ours = getattr(nn, name)(**kw)
    assert repr(ours) == ref["repr"]
    check_against(ref, ours, x)


@pytest.mark.parametrize("name,kw", [
    ("MaxPool1d", dict(kernel_size=3, stride=2, padding=1, return_indices=True)),
    ("MaxPool1d", dict(kernel_size=2, dilation=2, ceil_mode=True)),
    ("AvgPool1d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False,
                       ceil_mode=True)),
    ("AdaptiveAvgPool1d", dict(output_size=4)),
])
def test_pool1d_torch_parity(oracle, name, kw):
    x = np.random.default_rng(0).standard_normal((2, 3, 11)).astype(np.float32)
    ref = oracle(lambda torch: torch_run(torch, getattr(torch.nn, name)(**kw), x))
    ours = getattr(nn, name)(**kw)
    assert repr(ours) == ref["repr"]
    check_against(ref, ours, x)


def test_small_cnn_torch_parity(oracle):
    """A conv / pool / linear stack with the same weights gives the same loss and gradients."""

    def build(lib):
        n = lib.nn
        return n.Sequential(n.Conv2d(1, 4, 3, padding=1), n.ReLU(), n.MaxPool2d(2),
                            n.Conv2d(4, 8, 3, stride=2), n.ReLU(), n.AdaptiveAvgPool2d(2),
                            n.Flatten(), n.Linear(32, 3))
    x = np.random.default_rng(0).standard_normal((4, 1, 12, 12)).astype(np.float32)
    ref = oracle(lambda torch: torch_run(torch, build(torch), x))
    check_against(ref, build(ddp), x)


# ============================================================== higher-order gradients

def test_conv_double_backward_gradgradcheck():
    from ddp.autograd import gradgradcheck
    x, w, b = rand(1, 2, 4, 4), rand(4, 1, 2, 3, seed=1), rand(4, seed=2)
    assert gradgradcheck(lambda *t: F.conv2d(*t, stride=2, padding=1, groups=2), (x, w, b))
    wt = rand(2, 3, 3, 3, seed=3)
    assert gradgradcheck(lambda a, c: F.conv_transpose2d(a, c, stride=2, padding=1,
                                                         output_padding=1), (x, wt))


def test_pool_double_backward_gradgradcheck(cpu_path):
    from ddp.autograd import gradgradcheck
    x = ddp.tensor(np.random.default_rng(0).permutation(50).reshape(1, 2, 5, 5)
                   .astype(np.float64), requires_grad=True)
    assert gradgradcheck(lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True), (x,))
    assert gradgradcheck(lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False), (x,))


def test_gradient_penalty_torch_parity(oracle):
    """d/dweights of ||d out / d x||^2 through conv, pooling and transposed conv (the gradient
    penalty of WGAN-GP) matches PyTorch."""

    def penalty(lib, conv, up, x):
        fn = lib.nn.functional
        h = fn.avg_pool2d(conv(x).tanh(), 2)
        out = fn.max_pool2d(up(h).tanh(), 2).sum()
        grad, = lib.autograd.grad(out, x, create_graph=True)
        return (grad ** 2).sum()

    def convs(lib):
        return [lib.nn.Conv2d(2, 4, 3, padding=1), lib.nn.ConvTranspose2d(4, 3, 2, stride=2)]
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)

    def reference(torch):
        mods = convs(torch)
        pt = penalty(torch, *mods, torch.tensor(x, requires_grad=True))
        pt.backward()
        return {"p": float(pt.detach()),
                "state": [{k: v.detach().numpy() for k, v in m.state_dict().items()}
                          for m in mods],
                "grads": [[q.grad.numpy() for q in m.parameters()] for m in mods]}
    ref = oracle(reference)
    ours = convs(ddp)
    for m, state in zip(ours, ref["state"]):
        m.load_state_dict({k: ddp.tensor(v) for k, v in state.items()})
    p = penalty(ddp, *ours, ddp.tensor(x, requires_grad=True))
    np.testing.assert_allclose(float(p), float(ref["p"]), rtol=1e-4)
    p.backward()
    for m, grads in zip(ours, ref["grads"]):
        params = list(m.parameters())
        assert len(params) == len(grads)
        for q, r in zip(params, grads):
            np.testing.assert_allclose(arr(q.grad), r, rtol=1e-3, atol=1e-5)
