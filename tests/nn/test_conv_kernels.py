"""ddp.kernels.convolution (the CPU's conv2d for contiguous float32/float64 arrays: patches built
by Numba loops, multiplied by BLAS) against the NumPy path the GPU runs: values and gradients
over the options (stride, padding incl. 'same' and asymmetric, dilation, padding modes), the
blocks of whole samples and of image rows, and the gradients asked for."""
import numpy as np
import pytest

import ddp
import ddp.nn as nn
from ddp import kernels
from ddp.kernels import convolution as conv_kernels
from ddp.kernels import winograd

OPTIONS = [
    dict(),
    dict(padding=1),
    dict(padding="same"),                       # 4x4: the extra row and column bottom/right
    dict(padding=(2, 0), stride=(2, 1)),
    dict(padding=(0, 3), stride=(1, 3)),
    dict(padding=2, dilation=(2, 1)),
    dict(padding=(1, 2), dilation=(1, 2), stride=2),
    dict(padding=4),                            # beyond the kernel: rows of padding only
    dict(padding=1, padding_mode="reflect"),
    dict(padding=(1, 2), padding_mode="circular"),
]


def _conv_run(data, kernel, options, needs, upstream, out_channels=5):
    """(output, input's gradient, weight's, bias's) of a Conv2d(C, out_channels, kernel) on
    ``data``."""
    ddp.manual_seed(0)
    conv = nn.Conv2d(data.shape[1], out_channels, kernel, **options).to(
        ddp.float64 if data.dtype == np.float64 else ddp.float32)
    need_x, need_w, need_b = needs
    conv.weight.requires_grad_(need_w)
    conv.bias.requires_grad_(need_b)
    x = ddp.tensor(data, requires_grad=need_x)
    y = conv(x)
    if upstream == "transposed":   # a transposed upstream gradient (copied by the kernel path)
        g = np.random.default_rng(1).standard_normal(tuple(y.shape)[::-1]).astype(
            np.float32).astype(data.dtype)   # (float64: the float32 values)
        y.backward(ddp.tensor(g.T))
    else:                          # sum(): one value broadcast
        y.sum().backward()
    grads = [t.grad for t, need in ((x, need_x), (conv.weight, need_w), (conv.bias, need_b))]
    return [y.detach().numpy()] + [None if t is None else t.numpy() for t in grads]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS, ids=repr)
@pytest.mark.parametrize("kernel", [3, (4, 2)])
@pytest.mark.parametrize("block_bytes", [None, 64, 2000], ids=["block", "rows", "samples"])
@pytest.mark.parametrize("channels", [3, 8])   # 8: K = 72, g's rows copied (6 images a block)
@pytest.mark.parametrize("needs", [(True, True, True), (False, True, True), (True, True, False)],
                         ids=["all", "weight", "no-bias"])
@pytest.mark.parametrize("upstream", ["transposed", "sum"])
def test_the_kernels_give_the_numpy_paths_values_and_gradients(monkeypatch, dtype, options,
                                                              kernel, block_bytes, channels,
                                                              needs, upstream):
    """Output and gradients from the kernels equal the NumPy path's; an infinity at the end of
    the image's first row stays out of the next row's left padding (the patch loops copy
    whole runs of the input, the pixels that fall in the padding set after). ``block_bytes``: the default blocks, one image
    row per block, or a few whole samples per block."""
    if block_bytes is not None:
        monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(conv_kernels, "_BLOCK_PIXELS", 0)
    calls = []
    for name in ("conv2d_forward", "conv2d_backward"):
        monkeypatch.setattr(conv_kernels, name, lambda *a, _f=getattr(conv_kernels, name),
                            _name=name: calls.append(_name) or _f(*a))
    data = np.random.default_rng(0).standard_normal((6, channels, 9, 11)).astype(dtype)
    data[1, 2, 0, 10] = np.inf   # (a weight gradient that is not finite: direct sums on both)
    stride = options.get("stride", 1)
    # the weight's gradient alone through the kernels at stride 1 along the width only
    backward = needs[0] or (stride if isinstance(stride, int) else stride[1]) == 1
    with np.errstate(invalid="ignore"):
        got = _conv_run(data, kernel, options, needs, upstream)
        assert kernels.enabled() and "conv2d_forward" in calls
        assert ("conv2d_backward" in calls) == backward
        monkeypatch.setattr(kernels, "_enabled", False)
        calls.clear()
        want = _conv_run(data, kernel, options, needs, upstream)
    assert not calls
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    assert [getattr(a, "dtype", None) for a in got] == [getattr(b, "dtype", None) for b in want]
    for a, b in zip(got, want):
        if a is not None:
            np.testing.assert_allclose(a, b, **tol)


WINOGRAD_OPTIONS = [
    dict(),
    dict(padding=1),
    dict(padding=(2, 0)),
    dict(padding=4),                            # beyond the kernel: tiles of padding only
    dict(padding=1, padding_mode="reflect"),
    dict(padding=(1, 2), padding_mode="circular"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", WINOGRAD_OPTIONS, ids=repr)
@pytest.mark.parametrize("size", [(9, 11), (8, 6)])   # odd: the last tiles half outside
@pytest.mark.parametrize("block_bytes", [None, 64, 1 << 24], ids=["block", "rows", "samples"])
@pytest.mark.parametrize("needs", [(True, True, True), (False, True, True), (True, False, False)],
                         ids=["all", "weight", "input"])
def test_winograd_gives_the_numpy_paths_values_and_gradients(monkeypatch, dtype, options, size,
                                                             block_bytes, needs):
    """A 3x3 convolution at stride 1 with 8 or more channels in and out, 32 together, goes
    through ddp.kernels.winograd, forward and backward: its output and gradients equal the
    NumPy path's in float64 — in float32 within 1e-6 of the largest value (the error of a float32
    sum scales with its terms, not its result: the NumPy path's own float32 weight gradient
    misses by 2.6e-5 of 79, Winograd's by 0.9e-5). ``block_bytes``: the default blocks, one
    row of tiles per block, all the samples in one block."""
    if block_bytes is not None:
        monkeypatch.setattr(winograd, "_BLOCK_BYTES", block_bytes)
    calls = []
    for name in ("conv3x3", "conv3x3_backward"):
        monkeypatch.setattr(winograd, name, lambda *a, _f=getattr(winograd, name),
                            _name=name: calls.append(_name) or _f(*a))
    data = np.random.default_rng(0).standard_normal((5, 8) + size).astype(np.float32)
    upstream = "transposed" if needs[0] else "sum"
    got = _conv_run(data.astype(dtype), 3, options, needs, upstream, out_channels=24)
    # the input's gradient alone: the convolution of g with the flipped kernel (padded by 2
    # less the forward's padding: none beyond the kernel)
    alone = ["conv3x3"] if options.get("padding") != 4 else []
    assert calls == ["conv3x3"] + (["conv3x3_backward"] if needs[1] else alone)
    monkeypatch.setattr(kernels, "_enabled", False)
    calls.clear()
    want = _conv_run(data.astype(np.float64), 3, options, needs, upstream, out_channels=24)
    assert not calls
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == dtype
            tol = dict(rtol=1e-4, atol=1e-6 * np.abs(b).max()) if dtype == np.float32 else \
                dict(rtol=1e-11, atol=1e-12)
            np.testing.assert_allclose(a, b, **tol)


def test_winograds_float32_error_is_that_of_the_direct_sum(monkeypatch):
    """In float32, the transforms' sums and differences keep the error (against float64 on the
    same values) of the output and both gradients within 2x the NumPy path's direct sums'
    (measured at 16->32 on 28x28: 0.4x-0.6x of it, at most 2.4e-7 of the largest value)."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 16, 28, 28)).astype(np.float32)
    g = rng.standard_normal((4, 32, 28, 28)).astype(np.float32)

    def run(dtype):
        ddp.manual_seed(0)
        conv = nn.Conv2d(16, 32, 3, padding=1).to(ddp.float64 if dtype == np.float64 else
                                                  ddp.float32)
        x = ddp.tensor(data.astype(dtype), requires_grad=True)
        y = conv(x)
        y.backward(ddp.tensor(g.astype(dtype)))
        return [t.numpy().astype(np.float64) for t in (y.detach(), x.grad, conv.weight.grad)]
    fast = run(np.float32)
    exact = run(np.float64)
    monkeypatch.setattr(kernels, "_enabled", False)
    direct = run(np.float32)
    for f, d, e in zip(fast, direct, exact):
        assert np.abs(f - e).max() <= 1e-6 * np.abs(e).max()
        assert np.abs(f - e).max() <= 2 * np.abs(d - e).max()


def test_the_kernels_are_left_to_the_numpy_path_where_they_do_not_fit(monkeypatch):
    """Groups, a 1x1 kernel at stride 1 (its patches are the input), float16 and a
    non-contiguous input take the NumPy path."""
    calls = []
    monkeypatch.setattr(conv_kernels, "conv2d_forward", lambda *a: calls.append(a))
    x = ddp.randn(2, 4, 6, 6)
    for conv, inp in [(nn.Conv2d(4, 6, 3, groups=2), x), (nn.Conv2d(4, 6, 1), x),
                      (nn.Conv2d(4, 6, 3).half(), x.half()),
                      (nn.Conv2d(4, 6, 3), x.transpose(2, 3))]:
        assert conv(inp).shape[:2] == (2, 6)
    assert not calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [dict(), dict(padding=1), dict(stride=2, padding=1),
                                     dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2)),
                                     dict(stride=3, padding=2),
                                     dict(padding=2, dilation=2)], ids=repr)
@pytest.mark.parametrize("kernel,out_channels", [(4, 4), (3, 24), (5, 4)])
def test_the_kernels_give_the_numpy_paths_transposed_convolution(monkeypatch, dtype, options,
                                                                 kernel, out_channels):
    """conv_transpose2d's forward (the stride-1 convolution of its input with the flipped or
    the sub-pixel kernel, through the kernels; 3x3 to 24 channels: Winograd's) and its
    gradients (one pass over g's patches — strided, of g's phases, a kernel whose size is not
    a multiple of the stride padded with zero taps) equal the NumPy path's."""
    calls = []
    for name in ("conv2d_forward", "conv2d_phases"):
        monkeypatch.setattr(conv_kernels, name, lambda *a, _f=getattr(conv_kernels, name),
                            _name=name: calls.append(_name) or _f(*a))
    data = np.random.default_rng(0).standard_normal((3, 8, 6, 7)).astype(dtype)

    def run():
        ddp.manual_seed(0)
        conv = nn.ConvTranspose2d(8, out_channels, 3 if "dilation" in options else kernel,
                                  **options).to(ddp.float64 if dtype == np.float64
                                                else ddp.float32)
        x = ddp.tensor(data, requires_grad=True)
        y = conv(x)
        g = np.random.default_rng(1).standard_normal(tuple(y.shape)).astype(dtype)
        y.backward(ddp.tensor(g))
        return [t.numpy() for t in (y.detach(), x.grad, conv.weight.grad, conv.bias.grad)]
    got = run()
    # the backward's convolution of g (strided: of g's phases) through the kernels
    assert calls[-1] == "conv2d_forward"
    assert ("conv2d_phases" in calls) == (options.get("stride", 1) != 1)
    monkeypatch.setattr(kernels, "_enabled", False)
    calls.clear()
    want = run()
    assert not calls
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, **tol)
