"""Linear, Identity, Flatten/Unflatten, Dropout, Embedding and the functional helpers (one_hot,
pad, normalize, unfold/fold, interpolate): outputs against NumPy formulas, gradients against
finite differences (float64 gradcheck), train/eval behaviour, errors, reprs, and PyTorch
parity when torch is installed.
"""
import math

import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.nn.functional as F
from ddp.autograd import gradcheck, gradgradcheck


def arr(t):
    return np.asarray(t.detach().cpu().numpy())


def rand(*shape, seed=0, requires_grad=True):
    data = np.random.default_rng(seed).standard_normal(shape)
    return ddp.tensor(data, requires_grad=requires_grad)


def state_of(module):
    """A torch module's state as NumPy arrays (what an oracle answer holds)."""
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def load_state(ours, state):
    ours.load_state_dict({k: ddp.tensor(v) for k, v in state.items()})


# ============================================================== Linear, Identity

def test_linear_matches_numpy_and_gradcheck():
    x, w, b = rand(2, 3, 4), rand(5, 4, seed=1), rand(5, seed=2)
    np.testing.assert_allclose(arr(F.linear(x, w, b)), arr(x) @ arr(w).T + arr(b), rtol=1e-12)
    np.testing.assert_allclose(arr(F.linear(x, w)), arr(x) @ arr(w).T, rtol=1e-12)
    assert gradcheck(F.linear, (x, w, b))
    assert gradgradcheck(F.linear, (rand(2, 3), rand(2, 3, seed=1), rand(2, seed=2)))


def test_linear_module():
    ddp.manual_seed(0)
    m = nn.Linear(4, 2)
    assert repr(m) == "Linear(in_features=4, out_features=2, bias=True)"
    assert m.weight.shape == (2, 4) and m.bias.shape == (2,)
    bound = 1 / math.sqrt(4)  # kaiming_uniform_(a=sqrt(5)) and the bias: U(-1/sqrt(in), ..)
    assert float(m.weight.abs().max()) <= bound and float(m.bias.abs().max()) <= bound
    x = ddp.randn(3, 4)
    np.testing.assert_allclose(arr(m(x)), arr(x) @ arr(m.weight).T + arr(m.bias), rtol=1e-6)
    m(x).sum().backward()
    np.testing.assert_allclose(arr(m.bias.grad), [3.0, 3.0])
    m2 = nn.Linear(4, 2, bias=False, dtype=ddp.float64)
    assert m2.bias is None and m2.weight.dtype == ddp.float64
    assert repr(m2) == "Linear(in_features=4, out_features=2, bias=False)"
    assert m(ddp.randn(4)).shape == (2,)  # a 1-D input


def test_linear_init_distribution():
    ddp.manual_seed(1)
    w = arr(nn.Linear(100, 400).weight).ravel()
    bound = 1 / math.sqrt(100)
    assert w.min() >= -bound and w.max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound  # uniform on (-bound, bound)


def test_linear_errors():
    with pytest.raises(RuntimeError, match=r"Linear: input's last dimension 5 does not match "
                                           r"in_features=4"):
        nn.Linear(4, 2)(ddp.ones(3, 5))


def test_identity():
    m = nn.Identity(3, something="ignored")
    x = ddp.ones(2)
    assert m(x) is x and repr(m) == "Identity()"


def test_linear_torch_parity(oracle):
    x = np.random.default_rng(0).standard_normal((2, 5, 6)).astype(np.float32)

    def reference(torch):
        theirs = torch.nn.Linear(6, 3)
        b = torch.tensor(x, requires_grad=True)
        yt = theirs(b)
        (yt * yt).sum().backward()
        return {"state": state_of(theirs), "y": yt.detach().numpy(),
                "grads": [q.grad.numpy() for q in (b, theirs.weight, theirs.bias)]}
    ref = oracle(reference)
    ours = nn.Linear(6, 3)
    load_state(ours, ref["state"])
    a = ddp.tensor(x, requires_grad=True)
    y = ours(a)
    np.testing.assert_allclose(arr(y), ref["y"], rtol=1e-5, atol=1e-6)
    (y * y).sum().backward()
    for p, q in zip((a, ours.weight, ours.bias), ref["grads"]):
        np.testing.assert_allclose(arr(p.grad), q, rtol=1e-5, atol=1e-5)


# ============================================================== Flatten, Unflatten

def test_flatten_unflatten():
    x = rand(2, 3, 4, 5)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 2)(x).shape == (24, 5)
    assert nn.Flatten(-2)(x).shape == (2, 3, 20)
    y = nn.Unflatten(1, (3, 4))(rand(2, 12))
    assert y.shape == (2, 3, 4)
    assert nn.Unflatten(-1, (2, -1))(rand(2, 12)).shape == (2, 2, 6)
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert repr(nn.Unflatten(1, (2, 5))) == "Unflatten(dim=1, unflattened_size=(2, 5))"
    x = rand(2, 3, 4)
    nn.Flatten()(x).sum().backward()
    assert x.grad.shape == (2, 3, 4)


# ============================================================== Dropout

def test_dropout_train_scales_and_eval_is_identity():
    ddp.manual_seed(0)
    x = ddp.ones(20000)
    m = nn.Dropout(0.3)
    y = arr(m(x))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.02
    m.eval()
    assert m(x) is x
    assert repr(m) == "Dropout(p=0.3, inplace=False)"


def test_dropout_gradient_uses_the_same_mask():
    ddp.manual_seed(1)
    x = rand(100)
    y = F.dropout(x, 0.5)
    y.sum().backward()
    np.testing.assert_array_equal(arr(x.grad), (arr(y) != 0) * 2.0)


def test_dropout_reproducible_from_default_generator():
    ddp.manual_seed(3)
    a = arr(F.dropout(ddp.ones(50)))
    ddp.manual_seed(3)
    b = arr(F.dropout(ddp.ones(50)))
    np.testing.assert_array_equal(a, b)


def test_dropout_edge_probabilities_and_errors():
    x = ddp.ones(10)
    assert F.dropout(x, 0.0) is x
    assert float(F.dropout(x, 1.0).abs().sum()) == 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, -0.1)


def test_dropout_inplace():
    ddp.manual_seed(0)
    x = ddp.ones(1000)
    y = F.dropout(x, 0.5, inplace=True)
    assert y is x and set(np.unique(arr(x))) <= {0.0, 2.0}


def test_dropout2d_and_dropout1d_zero_whole_channels():
    ddp.manual_seed(0)
    x = ddp.ones(8, 16, 3, 3)
    y = arr(nn.Dropout2d(0.5)(x))
    per_channel = y.reshape(8, 16, -1)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2).all(-1))
    assert 0 < (per_channel == 0).all(-1).mean() < 1
    y1 = arr(nn.Dropout1d(0.5)(ddp.ones(8, 16, 5))).reshape(8, 16, -1)
    assert np.all((y1 == 0).all(-1) | (y1 == 2).all(-1))
    y1u = arr(F.dropout1d(ddp.ones(16, 5), 0.5))  # unbatched (C, L)
    assert np.all((y1u == 0).all(-1) | (y1u == 2).all(-1))
    assert nn.Dropout2d().eval()(x) is x
    with pytest.raises(RuntimeError, match="dropout1d"):
        F.dropout1d(ddp.ones(2, 3, 4, 5))


# ============================================================== Embedding

def test_embedding_lookup_and_padding_gradient():
    ddp.manual_seed(0)
    m = nn.Embedding(6, 3, padding_idx=2)
    assert repr(m) == "Embedding(6, 3, padding_idx=2)"
    assert float(m.weight[2].abs().sum()) == 0  # the padding row starts at zero
    idx = ddp.tensor([[0, 2, 5], [2, 0, 1]])
    y = m(idx)
    np.testing.assert_array_equal(arr(y), arr(m.weight)[arr(idx)])
    (y * ddp.arange(1.0, 4.0)).sum().backward()
    g = arr(m.weight.grad)
    np.testing.assert_array_equal(g[2], 0)  # padding row: no gradient
    np.testing.assert_allclose(g[0], 2 * np.arange(1.0, 4.0))  # used twice
    np.testing.assert_allclose(g[3], 0)
    assert nn.Embedding(5, 2, padding_idx=-1).padding_idx == 4


def test_embedding_gradcheck_and_double_backward():
    w = rand(5, 3)
    idx = ddp.tensor([[1, 4, 1], [0, 3, 4]])
    # (with padding_idx the gradient is zeroed on purpose, so it is not the true derivative)
    assert gradcheck(lambda t: F.embedding(idx, t), (w,))
    assert gradgradcheck(lambda t: F.embedding(idx, t) ** 2, (w,))


def test_embedding_max_norm_and_scale_grad_by_freq():
    w = ddp.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    y = F.embedding(ddp.tensor([0, 1]), w, max_norm=1.0)
    np.testing.assert_allclose(arr(y), [[0.6, 0.8], [0.3, 0.4]], rtol=1e-5)
    np.testing.assert_allclose(arr(w)[2], [6.0, 8.0])  # rows not looked up stay
    np.testing.assert_allclose(arr(w)[0], [0.6, 0.8], rtol=1e-5)  # renormalised in place
    w = rand(4, 2)
    F.embedding(ddp.tensor([1, 1, 1, 2]), w, scale_grad_by_freq=True).sum().backward()
    np.testing.assert_allclose(arr(w.grad), [[0, 0], [1, 1], [1, 1], [0, 0]])


@pytest.mark.parametrize("padding_idx", [None, 2])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_embedding_constant_upstream_gradient(padding_idx, scale_grad_by_freq, loss):
    """y.sum() and y.mean() send one value broadcast over the output (all strides 0), which
    the embedding's backward takes as a count per row; the gradient is that of the same
    upstream gradient given as a contiguous array (the scatter of the rows)."""
    idx = ddp.tensor(np.random.default_rng(0).integers(0, 6, (5, 8)))   # repeats, row 2 too
    grads = []
    for upstream in ("broadcast", "array"):
        w = rand(6, 3)
        y = F.embedding(idx, w, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq)
        if upstream == "array":
            y.backward(ddp.full(y.shape, 1.0 if loss == "sum" else 1.0 / y.numel(),
                                dtype=y.dtype))
        else:
            (y.sum() if loss == "sum" else y.mean()).backward()
        grads.append(arr(w.grad))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-15)


def test_embedding_from_pretrained_and_errors():
    pre = ddp.tensor([[1.0, 2.0], [3.0, 4.0]])
    m = nn.Embedding.from_pretrained(pre)
    assert not m.weight.requires_grad and m(ddp.tensor([1])).tolist() == [[3.0, 4.0]]
    assert nn.Embedding.from_pretrained(pre, freeze=False).weight.requires_grad
    with pytest.raises(IndexError, match="index out of range"):
        m(ddp.tensor([2]))
    with pytest.raises(RuntimeError, match="integer indices"):
        m(ddp.tensor([1.0]))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(3, 2, padding_idx=3)


def test_embedding_torch_parity(oracle):
    idx = np.array([[1, 3, 3, 6], [0, 1, 2, 3]])
    g = np.random.default_rng(0).standard_normal((2, 4, 4)).astype(np.float32)

    def reference(torch):
        theirs = torch.nn.Embedding(7, 4, padding_idx=1)
        yt = theirs(torch.tensor(idx))
        yt.backward(torch.tensor(g))
        return {"state": state_of(theirs), "repr": repr(theirs), "y": yt.detach().numpy(),
                "gw": theirs.weight.grad.numpy()}
    ref = oracle(reference)
    ours = nn.Embedding(7, 4, padding_idx=1)
    load_state(ours, ref["state"])
    assert repr(ours) == ref["repr"]
    y = ours(ddp.tensor(idx))
    np.testing.assert_array_equal(arr(y), ref["y"])
    y.backward(ddp.tensor(g))
    np.testing.assert_allclose(arr(ours.weight.grad), ref["gw"], rtol=1e-6)


# ============================================================== one_hot, pad, normalize

def test_one_hot():
    y = F.one_hot(ddp.tensor([[0, 2], [1, 0]]), 4)
    assert y.dtype == ddp.int64 and y.shape == (2, 2, 4)
    np.testing.assert_array_equal(arr(y), np.eye(4, dtype=np.int64)[[[0, 2], [1, 0]]])
    assert F.one_hot(ddp.tensor([1, 3])).shape == (2, 4)
    with pytest.raises(RuntimeError, match="smaller than num_classes"):
        F.one_hot(ddp.tensor([5]), 3)
    with pytest.raises(RuntimeError, match="non-negative"):
        F.one_hot(ddp.tensor([-1]), 3)


@pytest.mark.parametrize("pad", [(1, 2), (0, 1, 2, 0), (1, 1, 1, 1, 1, 1), (-1, 2), (2, -1, 0, 1)])
def test_pad_constant_matches_numpy(pad):
    x = rand(2, 3, 4)
    y = F.pad(x, pad, value=1.5)
    k = len(pad) // 2
    pairs = [(0, 0)] * (3 - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)][::-1]
    ref = arr(x)
    for axis, (a, b) in enumerate(pairs):  # positive pads: np.pad; negative: crop
        widths = [(0, 0)] * 3
        widths[axis] = (max(a, 0), max(b, 0))
        ref = np.pad(ref, widths, constant_values=1.5)
        ref = np.take(ref, range(max(-a, 0), ref.shape[axis] - max(-b, 0)), axis=axis)
    np.testing.assert_array_equal(arr(y), ref)
    assert gradcheck(lambda t: F.pad(t, pad), (x,))


@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("replicate", "edge"),
                                          ("circular", "wrap")])
def test_pad_modes_match_numpy_and_gradcheck(mode, np_mode):
    x = rand(2, 2, 4, 5)
    y = F.pad(x, (2, 1, 1, 3), mode=mode)
    np.testing.assert_array_equal(arr(y), np.pad(arr(x), ((0, 0), (0, 0), (1, 3), (2, 1)),
                                                 mode=np_mode))
    assert F.pad(x[0], (1, 1), mode=mode).shape == (2, 4, 7)
    assert gradcheck(lambda t: F.pad(t, (2, 1, 1, 0), mode=mode), (rand(1, 2, 3, 4),))


def test_pad_errors():
    with pytest.raises(RuntimeError, match="reflect padding"):
        F.pad(ddp.ones(1, 1, 3), (3, 0), mode="reflect")
    with pytest.raises(ValueError, match="even"):
        F.pad(ddp.ones(2, 2), (1,))


def test_normalize():
    x = rand(3, 4)
    ref = arr(x) / np.linalg.norm(arr(x), axis=1, keepdims=True)
    np.testing.assert_allclose(arr(F.normalize(x)), ref, rtol=1e-12)
    ref1 = arr(x) / np.abs(arr(x)).sum(0, keepdims=True)
    np.testing.assert_allclose(arr(F.normalize(x, p=1, dim=0)), ref1, rtol=1e-12)
    assert float(F.normalize(ddp.zeros(2, 3)).abs().sum()) == 0  # eps guards 0/0
    assert gradcheck(F.normalize, (x,))


# ============================================================== unfold / fold, interpolate

def test_unfold_matches_numpy_and_fold_is_its_adjoint():
    x = rand(2, 3, 5, 6)
    cols = F.unfold(x, (2, 3), padding=1, stride=(2, 1), dilation=(1, 2))
    xp = np.pad(arr(x), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = []
    for i in range(0, 7 - 2 + 1, 2):
        for j in range(0, 8 - 5 + 1):
            ref.append(xp[:, :, i:i + 2, j:j + 5:2].reshape(2, -1))
    np.testing.assert_array_equal(arr(cols), np.stack(ref, axis=-1))
    # <unfold(x), c> == <x, fold(c)>
    c = rand(*cols.shape, seed=1)
    folded = F.fold(c, (5, 6), (2, 3), padding=1, stride=(2, 1), dilation=(1, 2))
    assert math.isclose(float((cols * c).sum()), float((x * folded).sum()), rel_tol=1e-12)
    assert gradcheck(lambda t: F.unfold(t, 2, stride=2), (rand(1, 2, 4, 4),))
    assert gradgradcheck(lambda t: F.unfold(t, 2) ** 2, (rand(1, 1, 3, 3),))


def test_fold_torch_parity(oracle):
    x = np.random.default_rng(0).standard_normal((2, 12, 10)).astype(np.float32)
    ours = F.fold(ddp.tensor(x), (4, 5), (2, 3), padding=(1, 0), stride=(1, 2))
    theirs = oracle(lambda torch: torch.nn.functional.fold(
        torch.tensor(x), (4, 5), (2, 3), padding=(1, 0), stride=(1, 2)).numpy())
    np.testing.assert_allclose(arr(ours), theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(scale_factor=2), dict(size=(5, 3)),
                                dict(size=(7, 4), mode="bilinear"),
                                dict(size=(7, 4), mode="bilinear", align_corners=True),
                                dict(scale_factor=1.5, mode="bilinear"),
                                dict(size=(3, 2), mode="nearest-exact")])
def test_interpolate_torch_parity(oracle, kw):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)

    def upstream(shape):
        return np.random.default_rng(1).standard_normal(tuple(shape)).astype(np.float32)

    def reference(torch):
        b = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.interpolate(b, **kw)
        yt.backward(torch.tensor(upstream(yt.shape)))
        return {"y": yt.detach().numpy(), "gx": b.grad.numpy()}
    ref = oracle(reference)
    a = ddp.tensor(x, requires_grad=True)
    y = F.interpolate(a, **kw)
    np.testing.assert_allclose(arr(y), ref["y"], rtol=1e-5, atol=1e-6)
    y.backward(ddp.tensor(upstream(y.shape)))
    np.testing.assert_allclose(arr(a.grad), ref["gx"], rtol=1e-5, atol=1e-5)


def test_interpolate_formulas_and_gradcheck():
    x = ddp.tensor([[[1.0, 2.0, 4.0]]])
    np.testing.assert_array_equal(arr(F.interpolate(x, scale_factor=2)),
                                  [[[1, 1, 2, 2, 4, 4]]])
    y = F.interpolate(x, size=5, mode="linear", align_corners=True)
    np.testing.assert_allclose(arr(y), [[[1.0, 1.5, 2.0, 3.0, 4.0]]])
    assert gradcheck(lambda t: F.interpolate(t, size=(3, 5), mode="bilinear"),
                     (rand(1, 1, 2, 3),))
    with pytest.raises(NotImplementedError, match="bicubic"):
        F.interpolate(rand(1, 1, 2, 2), scale_factor=2, mode="bicubic")


def test_functional_names_exported():
    for name in ("linear", "conv1d", "conv2d", "conv_transpose2d", "max_pool1d", "max_pool2d",
                 "avg_pool1d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm", "layer_norm",
                 "group_norm", "dropout", "dropout2d", "embedding", "one_hot", "pad",
                 "normalize", "unfold", "fold", "interpolate"):
        assert callable(getattr(F, name)), name
    for name in ("Identity", "Linear", "Flatten", "Unflatten", "Conv1d", "Conv2d",
                 "ConvTranspose2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
                 "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm",
                 "Dropout", "Dropout2d", "Embedding"):
        assert isinstance(getattr(nn, name), type), name
