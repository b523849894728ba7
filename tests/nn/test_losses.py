"""Losses: ``ddp.nn.functional`` losses and their modules.

Each loss is checked against a NumPy formula for every reduction and option, by gradcheck in
float64 (gradgradcheck for the fused ones), and, when PyTorch is installed, against ``torch``
for values and gradients over the option grid. Also: stability at +-1e4 and the errors raised
for bad targets and shapes.
"""
import warnings

import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.nn.functional as F
from ddp.autograd import gradcheck, gradgradcheck

RNG = np.random.default_rng(1)
REDUCTIONS = ["none", "mean", "sum"]


def arr(t):
    return t.detach().numpy()


def reduce_np(loss, reduction):
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def close(t, expected, rtol=1e-12, atol=1e-14):
    np.testing.assert_allclose(arr(t), expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- regression

X = RNG.standard_normal((3, 4))
Y = RNG.standard_normal((3, 4))
W = RNG.random((3, 4))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses_match_numpy(reduction):
    x, y, d = ddp.tensor(X), ddp.tensor(Y), X - Y
    a = np.abs(d)
    close(F.mse_loss(x, y, reduction=reduction), reduce_np(d * d, reduction))
    close(F.l1_loss(x, y, reduction=reduction), reduce_np(a, reduction))
    for beta in (0.5, 1.0, 2.0):
        ref = np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)
        close(F.smooth_l1_loss(x, y, reduction=reduction, beta=beta), reduce_np(ref, reduction))
        ref = np.where(a < beta, 0.5 * d * d, beta * (a - 0.5 * beta))
        close(F.huber_loss(x, y, reduction=reduction, delta=beta), reduce_np(ref, reduction))
    close(F.smooth_l1_loss(x, y, reduction=reduction, beta=0.0), reduce_np(a, reduction))


def test_weighted_regression_losses_match_numpy():
    x, y, w, d = ddp.tensor(X), ddp.tensor(Y), ddp.tensor(W), X - Y
    close(F.mse_loss(x, y, weight=w), (W * d * d).sum() / W.sum())
    close(F.l1_loss(x, y, weight=w, reduction="sum"), (W * np.abs(d)).sum())
    close(F.huber_loss(x, y, weight=w), (W * np.where(np.abs(d) < 1, 0.5 * d * d,
                                                      np.abs(d) - 0.5)).mean())
    close(F.mse_loss(x, y, weight=w, reduction="none"), W * d * d)


@pytest.mark.parametrize("name,kwargs", [("mse_loss", {}), ("l1_loss", {}),
                                         ("smooth_l1_loss", {"beta": 0.7}),
                                         ("huber_loss", {"delta": 0.7}),
                                         ("mse_loss", {"reduction": "sum"}),
                                         ("huber_loss", {"reduction": "none"})])
def test_regression_gradcheck(name, kwargs):
    x = ddp.tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    y = ddp.tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    assert gradcheck(lambda a, b: getattr(F, name)(a, b, **kwargs), (x, y))


def test_broadcast_target_warns_and_mismatch_raises():
    with pytest.warns(UserWarning, match="different to the input size"):
        out = F.mse_loss(ddp.tensor(X), ddp.tensor(Y[0]))
    close(out, ((X - Y[0]) ** 2).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=r"mse_loss.*\(3,\).*\(4,\)"):
            F.mse_loss(ddp.ones(3), ddp.ones(4))
        with pytest.raises(RuntimeError, match="l1_loss"):
            nn.L1Loss()(ddp.ones(2, 3), ddp.ones(3, 2))
    with pytest.raises(ValueError, match="Weights and input must have the same size"):
        F.mse_loss(ddp.ones(3), ddp.ones(3), weight=ddp.ones(2))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.mse_loss(ddp.ones(3), ddp.ones(3), reduction="avg")


# --------------------------------------------------------------------------- binary

P = RNG.uniform(0.05, 0.95, (3, 4))
T = RNG.random((3, 4))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_matches_numpy(reduction):
    ref = -(T * np.log(P) + (1 - T) * np.log(1 - P))
    close(F.binary_cross_entropy(ddp.tensor(P), ddp.tensor(T), reduction=reduction),
          reduce_np(ref, reduction))
    w = RNG.random(4)
    close(F.binary_cross_entropy(ddp.tensor(P), ddp.tensor(T), weight=ddp.tensor(w),
                                 reduction=reduction), reduce_np(w * ref, reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_numpy(reduction):
    s = 1 / (1 + np.exp(-X))
    pw, w = RNG.random(4) * 3, RNG.random((3, 4))
    ref = -(pw * T * np.log(s) + (1 - T) * np.log(1 - s))
    out = F.binary_cross_entropy_with_logits(ddp.tensor(X), ddp.tensor(T), weight=ddp.tensor(w),
                                             pos_weight=ddp.tensor(pw), reduction=reduction)
    close(out, reduce_np(w * ref, reduction), rtol=1e-10)
    ref = -(T * np.log(s) + (1 - T) * np.log(1 - s))
    close(F.binary_cross_entropy_with_logits(ddp.tensor(X), ddp.tensor(T), reduction=reduction),
          reduce_np(ref, reduction), rtol=1e-10)


def test_bce_clamps_log_at_minus_100():
    x = ddp.tensor([0.0, 1.0, 0.0], requires_grad=True)
    out = F.binary_cross_entropy(x, ddp.tensor([1.0, 0.0, 0.0]), reduction="none")
    close(out, [100.0, 100.0, 0.0])
    out.sum().backward()
    assert bool(x.grad.isfinite().all())  # (x - t) / max(x (1 - x), 1e-12)
    close(x.grad, [-1e12, 1e12, 0.0], rtol=1e-6)


def test_bce_with_logits_stable_at_1e4():
    x = ddp.tensor([1e4, -1e4, 1e4, -1e4], requires_grad=True)
    t = ddp.tensor([1.0, 0.0, 0.0, 1.0])
    out = F.binary_cross_entropy_with_logits(x, t, reduction="none",
                                             pos_weight=ddp.tensor([2.0, 2.0, 2.0, 2.0]))
    close(out, [0.0, 0.0, 1e4, 2e4])
    out.sum().backward()
    close(x.grad, [0.0, 0.0, 1.0, -2.0])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_gradcheck(reduction):
    p = ddp.tensor(RNG.uniform(0.1, 0.9, (2, 3)), requires_grad=True)
    t = ddp.tensor(RNG.random((2, 3)), requires_grad=True)
    x = ddp.tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    w, pw = ddp.tensor(RNG.random(3)), ddp.tensor(RNG.random(3) * 2)
    bce = lambda a, b: F.binary_cross_entropy(a, b, weight=w, reduction=reduction)  # noqa: E731
    assert gradcheck(bce, (p, t)) and gradgradcheck(bce, (p, t))
    bcel = lambda a, b: F.binary_cross_entropy_with_logits(  # noqa: E731
        a, b, weight=w, pos_weight=pw, reduction=reduction)
    assert gradcheck(bcel, (x, t)) and gradgradcheck(bcel, (x, t))


def test_binary_errors():
    with pytest.raises(ValueError, match="binary_cross_entropy.*different to the input size"):
        F.binary_cross_entropy(ddp.ones(3) * 0.5, ddp.ones(4))
    with pytest.raises(ValueError, match="binary_cross_entropy_with_logits"):
        nn.BCEWithLogitsLoss()(ddp.ones(3), ddp.ones(3, 1))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(ddp.tensor([1.5]), ddp.tensor([1.0]))


# --------------------------------------------------------------------------- KL divergence

@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_numpy(reduction, log_target):
    logq = np_log_softmax(X, 1)
    p = np.exp(np_log_softmax(Y, 1))
    if not log_target:
        p[0, 0] = 0.0  # xlogy(0, 0) = 0 (a log target of -inf gives NaN, as PyTorch's)
    target = np.log(p) if log_target else p
    ref = p * (np.log(np.where(p == 0, 1, p)) - logq)
    expected = ref.sum() / 3 if reduction == "batchmean" else reduce_np(ref, reduction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'mean' warns, as PyTorch's
        out = F.kl_div(ddp.tensor(logq), ddp.tensor(target), reduction=reduction,
                       log_target=log_target)
    close(out, expected, rtol=1e-10)


def test_kl_div_gradcheck_and_mean_warning():
    x = ddp.tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    t = ddp.tensor(RNG.random((2, 3)), requires_grad=True)
    assert gradcheck(lambda a, b: F.kl_div(a, b, reduction="batchmean"), (x, t))
    assert gradcheck(lambda a, b: F.kl_div(a, b, reduction="sum", log_target=True), (x, t))
    with pytest.warns(UserWarning, match="batchmean"):
        F.kl_div(x, t)


# --------------------------------------------------------------------------- class losses

def np_cross_entropy(x, y, weight=None, ignore_index=-100, label_smoothing=0.0,
                     reduction="mean"):
    """Reference for class-index targets, input (N, C, d...) or (C,); PyTorch's semantics."""
    if x.ndim == 1:
        x, y = x[None], np.asarray(y)[None]
        squeeze = True
    else:
        squeeze = False
    c = x.shape[1]
    logp = np.moveaxis(np_log_softmax(x, 1), 1, -1).reshape(-1, c)
    yf = y.reshape(-1)
    w = np.ones(c) if weight is None else weight
    valid = yf != ignore_index
    safe = np.where(valid, yf, 0)
    nll = -logp[np.arange(len(yf)), safe] * w[safe] * valid
    smooth = -(logp * w).sum(1) * valid
    loss = (1 - label_smoothing) * nll + label_smoothing / c * smooth
    if reduction == "mean":
        return loss.sum() / (w[safe] * valid).sum()
    if reduction == "sum":
        return loss.sum()
    return loss.reshape(()) if squeeze else loss.reshape(y.shape)


def class_problem(shape, classes=4, ignore=None, rng=RNG):
    """Logits of ``shape`` (classes at dim 1, or (C,)) and a matching int64 target."""
    x = rng.standard_normal(shape)
    tshape = () if len(shape) == 1 else (shape[0],) + tuple(shape[2:])
    y = rng.integers(0, classes, tshape)
    if ignore is not None and y.ndim:
        y.reshape(-1)[::3] = ignore
    return x, y


CE_OPTIONS = [dict(), dict(weight=True), dict(ignore_index=1), dict(label_smoothing=0.2),
              dict(weight=True, ignore_index=2, label_smoothing=0.1)]
SHAPES = [(5, 4), (2, 4, 3), (2, 4, 3, 2), (4,)]


def _weight(opts, classes=4, rng=RNG):
    return rng.random(classes) + 0.1 if opts.get("weight") else None


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opts", CE_OPTIONS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_class_indices_match_numpy(shape, opts, reduction):
    ignore = opts.get("ignore_index", -100)
    x, y = class_problem(shape, ignore=ignore if "ignore_index" in opts else None)
    w = _weight(opts)
    kwargs = dict(ignore_index=ignore, label_smoothing=opts.get("label_smoothing", 0.0),
                  reduction=reduction, weight=None if w is None else ddp.tensor(w))
    out = F.cross_entropy(ddp.tensor(x), ddp.tensor(y), **kwargs)
    kwargs["weight"] = w
    close(out, np_cross_entropy(x, y, **kwargs), rtol=1e-10)
    if not kwargs["label_smoothing"]:  # nll_loss of log-probabilities is the same loss
        kwargs.pop("label_smoothing")
        kwargs["weight"] = None if w is None else ddp.tensor(w)
        nll = F.nll_loss(ddp.tensor(np_log_softmax(x, 0 if x.ndim == 1 else 1)), ddp.tensor(y),
                         **kwargs)
        np.testing.assert_allclose(arr(nll), arr(out), rtol=1e-10)


@pytest.mark.parametrize("opts", [dict(), dict(weight=True), dict(label_smoothing=0.3),
                                  dict(weight=True, label_smoothing=0.3)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probability_targets_match_numpy(opts, reduction):
    x = RNG.standard_normal((3, 4, 2))
    p = RNG.random((3, 4, 2))
    p /= p.sum(1, keepdims=True)
    w = _weight(opts)
    eps = opts.get("label_smoothing", 0.0)
    t = p * (1 - eps) + eps / 4
    loss = -(np_log_softmax(x, 1) * t * (1 if w is None else w[:, None])).sum(1)
    expected = {"none": loss, "sum": loss.sum(), "mean": loss.sum() / 6}[reduction]
    out = F.cross_entropy(ddp.tensor(x), ddp.tensor(p), weight=None if w is None else
                          ddp.tensor(w), label_smoothing=eps, reduction=reduction)
    close(out, expected, rtol=1e-10)


def test_cross_entropy_all_ignored_mean_is_nan():
    out = F.cross_entropy(ddp.randn(2, 3), ddp.tensor([-100, -100]))
    assert np.isnan(float(out))


@pytest.mark.parametrize("opts", CE_OPTIONS)
def test_class_losses_gradcheck(opts):
    x, y = class_problem((3, 4, 2), ignore=opts.get("ignore_index"))
    w = _weight(opts)
    kwargs = dict(ignore_index=opts.get("ignore_index", -100),
                  weight=None if w is None else ddp.tensor(w))
    xt = ddp.tensor(x, requires_grad=True)
    yt = ddp.tensor(y)
    ce = lambda a: F.cross_entropy(a, yt, label_smoothing=opts.get("label_smoothing", 0.0),  # noqa
                                   **kwargs)
    assert gradcheck(ce, (xt,)) and gradgradcheck(ce, (xt,))
    assert gradcheck(lambda a: F.nll_loss(a, yt, reduction="sum", **kwargs), (xt,))


def test_probability_targets_gradcheck_includes_target():
    x = ddp.tensor(RNG.standard_normal((3, 4)), requires_grad=True)
    p = ddp.tensor(RNG.random((3, 4)), requires_grad=True)
    w = ddp.tensor(RNG.random(4))
    ce = lambda a, b: F.cross_entropy(a, b, weight=w, label_smoothing=0.1)  # noqa: E731
    assert gradcheck(ce, (x, p)) and gradgradcheck(ce, (x, p))


@pytest.mark.parametrize("dtype", [ddp.float32, ddp.float64])
def test_cross_entropy_stable_at_1e4(dtype):
    x = ddp.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype, requires_grad=True)
    out = F.cross_entropy(x, ddp.tensor([0, 0]), reduction="none")
    close(out, [0.0, 2e4 + np.log(2)], rtol=1e-6)
    out.sum().backward()
    close(x.grad, [[0, 0, 0], [-1, 0.5, 0.5]], atol=1e-7)
    out = F.cross_entropy(x, ddp.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=dtype))
    assert bool(out.isfinite())


def test_cross_entropy_error_messages():
    x = ddp.randn(3, 5)
    with pytest.raises(RuntimeError, match=r"cross_entropy.*Long.*float32.*\(3,\)"):
        F.cross_entropy(x, ddp.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(RuntimeError, match=r"nll_loss.*Long.*float32"):
        nn.NLLLoss()(x, ddp.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(IndexError, match=r"cross_entropy: Target 7 is out of bounds"):
        nn.CrossEntropyLoss()(x, ddp.tensor([0, 7, 1]))
    with pytest.raises(IndexError, match=r"nll_loss: Target -1 is out of bounds"):
        F.nll_loss(x, ddp.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match=r"batch_size \(3\) to match target batch_size \(2\)"):
        F.cross_entropy(x, ddp.tensor([0, 1]))
    with pytest.raises(RuntimeError, match=r"Expected target size \[3, 4\], got \[3, 5\]"):
        F.cross_entropy(ddp.randn(3, 2, 4), ddp.zeros(3, 5, dtype=ddp.int64))
    with pytest.raises(RuntimeError, match="Expected floating point type for target"):
        F.cross_entropy(x, ddp.zeros(3, 5, dtype=ddp.int64))
    with pytest.raises(RuntimeError, match="weight tensor should be defined"):
        F.cross_entropy(x, ddp.tensor([0, 1, 2]), weight=ddp.ones(4))
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, ddp.tensor([0, 1, 2]), label_smoothing=1.5)


def test_ignore_index_may_be_out_of_range():
    x = RNG.standard_normal((3, 4))
    out = F.cross_entropy(ddp.tensor(x), ddp.tensor([0, 255, 2]), ignore_index=255)
    close(out, np_cross_entropy(x, np.array([0, 255, 2]), ignore_index=255), rtol=1e-10)


# --------------------------------------------------------------------------- modules

def test_loss_modules_call_functional():
    x, y = ddp.tensor(X), ddp.tensor(Y)
    p, t = ddp.tensor(P), ddp.tensor(T)
    c, cy = ddp.tensor(RNG.standard_normal((3, 4))), ddp.tensor([0, 3, 1])
    w = ddp.tensor(RNG.random(4))
    pairs = [
        (nn.MSELoss(reduction="sum")(x, y), F.mse_loss(x, y, reduction="sum")),
        (nn.L1Loss()(x, y), F.l1_loss(x, y)),
        (nn.SmoothL1Loss(beta=0.5)(x, y), F.smooth_l1_loss(x, y, beta=0.5)),
        (nn.HuberLoss(delta=0.5)(x, y), F.huber_loss(x, y, delta=0.5)),
        (nn.BCELoss(weight=w)(p, t), F.binary_cross_entropy(p, t, weight=w)),
        (nn.BCEWithLogitsLoss(pos_weight=w)(x, t),
         F.binary_cross_entropy_with_logits(x, t, pos_weight=w)),
        (nn.KLDivLoss(reduction="batchmean", log_target=True)(x, y),
         F.kl_div(x, y, reduction="batchmean", log_target=True)),
        (nn.CrossEntropyLoss(weight=w, ignore_index=3, label_smoothing=0.1)(c, cy),
         F.cross_entropy(c, cy, weight=w, ignore_index=3, label_smoothing=0.1)),
        (nn.NLLLoss(weight=w, reduction="none")(c, cy), F.nll_loss(c, cy, weight=w,
                                                                   reduction="none")),
    ]
    for got, expected in pairs:
        np.testing.assert_array_equal(arr(got), arr(expected))


def test_loss_module_buffers_and_legacy_reduction():
    w = ddp.ones(3)
    assert list(nn.CrossEntropyLoss(weight=w).state_dict()) == ["weight"]
    assert list(nn.CrossEntropyLoss().state_dict()) == []
    assert list(nn.BCEWithLogitsLoss(pos_weight=w).state_dict()) == ["pos_weight"]
    assert nn.CrossEntropyLoss().reduction == "mean"
    with pytest.warns(UserWarning):
        assert nn.MSELoss(size_average=False).reduction == "sum"
    with pytest.warns(UserWarning):
        assert nn.L1Loss(reduce=False).reduction == "none"
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"


def test_loss_module_moves_weight_with_dtype():
    m = nn.CrossEntropyLoss(weight=ddp.ones(3)).double()
    assert m.weight.dtype == ddp.float64


# --------------------------------------------------------------------------- torch parity

def _run_case(lib, fn, values, grads, seed):
    """One loss case on ``lib`` (ddp or torch): its value, and the gradients of the inputs that
    need them for a random upstream gradient drawn from NumPy (seeded per case)."""
    ins = [lib.tensor(v, requires_grad=g) for v, g in zip(values, grads)]
    out = fn(lib, *ins)
    out.backward(lib.tensor(np.random.default_rng(seed).standard_normal(tuple(out.shape))))
    return {"out": out.detach().numpy(),
            "grads": [t.grad.numpy() for t, need in zip(ins, grads) if need]}


def _compare(oracle, cases):
    """``cases``: (fn(lib, *inputs), input values, which inputs need gradients) each; ddp's
    values and gradients equal PyTorch's recorded ones."""
    want = oracle(lambda torch: [_run_case(torch, *c, seed=i) for i, c in enumerate(cases)])
    assert len(want) == len(cases)
    for i, (case, ref) in enumerate(zip(cases, want)):
        got = _run_case(ddp, *case, seed=i)
        np.testing.assert_allclose(got["out"], ref["out"], rtol=1e-10, atol=1e-12, err_msg=i)
        assert len(got["grads"]) == len(ref["grads"])
        for a, b in zip(got["grads"], ref["grads"]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=i)


def _F(lib):
    return lib.nn.functional


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_and_binary_losses_match_torch(oracle, reduction):
    rng = np.random.default_rng(1)
    w = rng.random((3, 4))
    cases = []
    for name, kw in [("mse_loss", {}), ("l1_loss", {}), ("smooth_l1_loss", {"beta": 0.5}),
                     ("smooth_l1_loss", {"beta": 0.0}), ("huber_loss", {"delta": 1.5})]:
        cases.append((lambda lib, a, b, name=name, kw=kw:
                      getattr(_F(lib), name)(a, b, reduction=reduction, **kw),
                      [X, Y], [True, True]))
    for name in ("mse_loss", "l1_loss", "huber_loss"):
        cases.append((lambda lib, a, b, name=name: getattr(_F(lib), name)(
            a, b, reduction=reduction, weight=lib.tensor(w)), [X, Y], [True, True]))
    wb, pw = rng.random(4), rng.random(4) * 3
    cases.append((lambda lib, a, b: _F(lib).binary_cross_entropy(a, b, lib.tensor(wb),
                                                                 reduction=reduction),
                  [P, T], [True, True]))
    cases.append((lambda lib, a, b: _F(lib).binary_cross_entropy_with_logits(
        a, b, lib.tensor(w), reduction=reduction, pos_weight=lib.tensor(pw)),
        [X * 10, T], [True, True]))
    for log_target in (False, True):
        red = "batchmean" if reduction == "mean" else reduction
        cases.append((lambda lib, a, b, log_target=log_target: _F(lib).kl_div(
            a, b, reduction=red, log_target=log_target),
            [np_log_softmax(X, 1), np_log_softmax(Y, 1) if log_target else T], [True, True]))
    _compare(oracle, cases)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opts", CE_OPTIONS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_losses_match_torch(oracle, shape, opts, reduction):
    rng = np.random.default_rng(1)
    ignore = opts.get("ignore_index", -100)
    x, y = class_problem(shape, ignore=ignore if "ignore_index" in opts else None, rng=rng)
    w = _weight(opts, rng=rng)
    eps = opts.get("label_smoothing", 0.0)

    def loss(kind):
        return lambda lib, a: getattr(_F(lib), kind)(
            a, lib.tensor(y), weight=None if w is None else lib.tensor(w), ignore_index=ignore,
            reduction=reduction, **({"label_smoothing": eps} if kind[0] == "c" else {}))
    # and probability targets of the input's shape
    p = rng.random(shape)
    _compare(oracle, [
        (loss("cross_entropy"), [x], [True]),
        (loss("nll_loss"), [x], [True]),
        (lambda lib, a, b: _F(lib).cross_entropy(a, b, weight=None if w is None else lib.tensor(w),
                                                 reduction=reduction, label_smoothing=eps),
         [x, p], [True, True])])


def test_float32_losses_match_torch(oracle):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 10)).astype(np.float32) * 5
    y = rng.integers(0, 10, 8)

    def run(lib):
        a = lib.tensor(x, requires_grad=True)
        out = _F(lib).cross_entropy(a, lib.tensor(y), label_smoothing=0.1)
        out.backward()
        return {"dtype": str(out.dtype).split(".")[-1], "loss": out.item(),
                "grad": a.grad.numpy()}
    ours, ref = run(ddp), oracle(run)
    assert ours["dtype"] == "float32"
    np.testing.assert_allclose(ours["loss"], ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(ours["grad"], ref["grad"], rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
def test_gpu_matches_cpu():
    x, y = RNG.standard_normal((4, 5, 3)), RNG.integers(0, 5, (4, 3))
    w = RNG.random(5)
    p, t = RNG.uniform(0.1, 0.9, (4, 5)), RNG.random((4, 5))

    def run(device):
        dev = dict(device=device)
        a = ddp.tensor(x, requires_grad=True, **dev)
        b = ddp.tensor(p, requires_grad=True, **dev)
        losses = [F.cross_entropy(a, ddp.tensor(y, **dev), weight=ddp.tensor(w, **dev),
                                  ignore_index=2, label_smoothing=0.1),
                  F.nll_loss(a, ddp.tensor(y, **dev), reduction="sum"),
                  F.binary_cross_entropy(b, ddp.tensor(t, **dev)),
                  F.binary_cross_entropy_with_logits(a[:, :, 0], ddp.tensor(t, **dev)),
                  F.mse_loss(b, ddp.tensor(t, **dev)), F.huber_loss(b, ddp.tensor(t, **dev)),
                  F.kl_div(b.log(), ddp.tensor(t, **dev), reduction="batchmean")]
        sum(losses).backward()
        return [float(v) for v in losses], a.grad.cpu().numpy(), b.grad.cpu().numpy()
    cpu, gpu = run("cpu"), run("cuda")
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-12)
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gpu[2], cpu[2], rtol=1e-10, atol=1e-14)
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(ddp.randn(2, 3, device="cuda"), ddp.tensor([0, 3], device="cuda"))
