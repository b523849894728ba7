"""SyncBatchNorm in one process equals BatchNorm; its synchronised op (run over the single-rank
communicator) matches BatchNorm to rounding; convert_sync_batchnorm."""
import copy

import numpy as np
import pytest

import ddp
import ddp.nn as nn
from ddp.distributed import SingleCommunicator
from ddp.nn.sync_batchnorm import SyncBatchNormOp, _sync_batch_norm

SHAPES = {1: [(8, 3), (6, 3, 5)], 2: [(4, 3, 5, 6)], 3: [(3, 3, 2, 3, 2)]}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
CASES = [(d, s) for d, shapes in SHAPES.items() for s in shapes]


def random_bn(d, rng, dtype=ddp.float64, **kw):
    bn = BN[d](3, **kw).to(dtype)
    if bn.affine:
        with ddp.no_grad():
            bn.weight.copy_(ddp.tensor(rng.standard_normal(3)))
            bn.bias.copy_(ddp.tensor(rng.standard_normal(3)))
    return bn


def step(module, x, gy):
    xt = ddp.tensor(x, requires_grad=True, dtype=gy.dtype)
    y = module(xt)
    (y * gy).sum().backward()
    return y.detach().numpy(), xt.grad.numpy()


def np_of(t):
    return None if t is None else t.detach().numpy()


@pytest.mark.parametrize("d,shape", CASES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_module_equals_batchnorm_exactly(d, shape, momentum):
    rng = np.random.default_rng(0)
    bn = random_bn(d, rng, momentum=momentum)
    sbn = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(bn))
    assert isinstance(sbn, nn.SyncBatchNorm)
    for _ in range(3):
        x = rng.standard_normal(shape) * 2 + 1
        gy = ddp.tensor(rng.standard_normal(shape))
        ya, gxa = step(bn, x, gy)
        yb, gxb = step(sbn, x, gy)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(gxa, gxb)
    for name in ("weight", "bias"):
        np.testing.assert_array_equal(getattr(bn, name).grad.numpy(),
                                      getattr(sbn, name).grad.numpy())
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_array_equal(np_of(getattr(bn, name)), np_of(getattr(sbn, name)))
    assert int(sbn.num_batches_tracked) == 3
    bn.eval(), sbn.eval()
    x = rng.standard_normal(shape)
    gy = ddp.tensor(rng.standard_normal(shape))
    ya, gxa = step(bn, x, gy)
    yb, gxb = step(sbn, x, gy)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(gxa, gxb)


@pytest.mark.parametrize("d,shape", CASES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype,tol", [(ddp.float64, 1e-12), (ddp.float32, 2e-5)])
def test_sync_op_over_single_communicator_matches_batchnorm(d, shape, affine, dtype, tol):
    """The op of the multi-rank path, run with one rank: the formulas equal BatchNorm's."""
    rng = np.random.default_rng(1)
    bn = random_bn(d, rng, dtype=dtype, affine=affine)
    ref = copy.deepcopy(bn)
    x = rng.standard_normal(shape) * 3 - 2
    gy = ddp.tensor(rng.standard_normal(shape), dtype=dtype)
    ya, gxa = step(ref, x, gy)
    xt = ddp.tensor(x, requires_grad=True, dtype=dtype)
    y = _sync_batch_norm(xt, bn.running_mean, bn.running_var, bn.weight, bn.bias, 0.1, 1e-5,
                         SingleCommunicator())
    assert type(y.grad_fn).__name__ == "Node" and y.grad_fn.op is SyncBatchNormOp
    assert y.dtype == dtype
    (y * gy).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), ya, rtol=tol, atol=tol)
    np.testing.assert_allclose(xt.grad.numpy(), gxa, rtol=tol, atol=tol)
    if affine:
        for name in ("weight", "bias"):
            np.testing.assert_allclose(getattr(bn, name).grad.numpy(),
                                       getattr(ref, name).grad.numpy(), rtol=tol, atol=tol)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(np_of(getattr(bn, name)), np_of(getattr(ref, name)),
                                   rtol=tol, atol=tol)


def test_sync_op_against_numpy_formula():
    """Forward and input gradient against a NumPy transcription of the definition."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 2, 3))
    w, b = rng.standard_normal(2), rng.standard_normal(2)
    gy = rng.standard_normal(x.shape)
    xt = ddp.tensor(x, requires_grad=True)
    wt, bt = ddp.tensor(w, requires_grad=True), ddp.tensor(b, requires_grad=True)
    rm, rv = ddp.zeros(2, dtype=ddp.float64), ddp.ones(2, dtype=ddp.float64)
    y = _sync_batch_norm(xt, rm, rv, wt, bt, 0.5, 1e-3, SingleCommunicator())
    (y * ddp.tensor(gy)).sum().backward()
    mean = x.mean(axis=(0, 2), keepdims=True)
    var = x.var(axis=(0, 2), keepdims=True)
    xhat = (x - mean) / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(y.detach().numpy(), xhat * w[:, None] + b[:, None], rtol=1e-12)
    gxhat = gy * w[:, None]
    gx = (gxhat - gxhat.mean(axis=(0, 2), keepdims=True)
          - xhat * (gxhat * xhat).mean(axis=(0, 2), keepdims=True)) / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(xt.grad.numpy(), gx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wt.grad.numpy(), (gy * xhat).sum(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(bt.grad.numpy(), gy.sum(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(rm.numpy(), 0.5 * mean.ravel(), rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), 0.5 + 0.5 * var.ravel() * 15 / 14, rtol=1e-12)


def test_sync_op_needs_more_than_one_value():
    with pytest.raises(ValueError, match="more than 1 value"):
        _sync_batch_norm(ddp.randn(1, 3), None, None, None, None, 0.1, 1e-5,
                         SingleCommunicator())


def test_sync_op_refuses_double_backward():
    xt = ddp.randn(4, 3, dtype=ddp.float64, requires_grad=True)
    y = _sync_batch_norm(xt, None, None, None, None, 0.1, 1e-5, SingleCommunicator())
    (g,) = ddp.autograd.grad((y ** 3).sum(), xt, create_graph=False)
    assert g.shape == xt.shape
    y = _sync_batch_norm(xt, None, None, None, None, 0.1, 1e-5, SingleCommunicator())
    with pytest.raises(RuntimeError, match="double backward"):
        ddp.autograd.grad((y ** 3).sum(), xt, create_graph=True)


def test_no_running_stats_and_eval_without_them():
    rng = np.random.default_rng(3)
    bn = random_bn(2, rng, track_running_stats=False)
    sbn = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(bn))
    assert sbn.running_mean is None and sbn.num_batches_tracked is None
    x = rng.standard_normal((4, 3, 2, 2))
    gy = ddp.tensor(rng.standard_normal(x.shape))
    for mode in (True, False):
        bn.train(mode), sbn.train(mode)
        ya, gxa = step(bn, x, gy)
        yb, gxb = step(sbn, x, gy)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(gxa, gxb)


def test_input_dims():
    sbn = nn.SyncBatchNorm(3)
    for shape in [(4, 3), (4, 3, 2), (4, 3, 2, 2), (4, 3, 2, 2, 2)]:
        assert sbn(ddp.randn(*shape)).shape == shape
    with pytest.raises(ValueError, match="at least 2D"):
        sbn(ddp.randn(3))


def test_state_dict_interchangeable_with_batchnorm():
    bn = nn.BatchNorm2d(4)
    bn(ddp.randn(3, 4, 2, 2))
    sbn = nn.SyncBatchNorm(4)
    sbn.load_state_dict(bn.state_dict())
    assert list(sbn.state_dict()) == list(bn.state_dict())
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(sbn.state_dict()[k].numpy(), v.numpy())
    assert repr(sbn) == "SyncBatchNorm(4, eps=1e-05, momentum=0.1, affine=True, bias=True, " \
                        "track_running_stats=True)"


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, momentum=None)
        self.inner = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6),
                                   nn.ReLU())

    def forward(self, x):
        return self.inner(self.bn(self.conv(x)).relu())


def test_convert_sync_batchnorm_recursive_shares_state():
    ddp.manual_seed(0)
    model = nn.Sequential(Block(), nn.Linear(6, 2), nn.BatchNorm1d(2, affine=False))
    model[0].bn.eval()
    ref = copy.deepcopy(model)
    old = {name: m for name, m in model.named_modules()}
    params = list(model.parameters())
    buffers = list(model.buffers())
    conv = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=None)
    assert conv is model                          # containers are converted in place
    kinds = {name: type(m).__name__ for name, m in conv.named_modules()}
    for name in ("0.bn", "0.inner.2", "2"):
        assert kinds[name] == "SyncBatchNorm"
        new = dict(conv.named_modules())[name]
        assert new.momentum == old[name].momentum and new.eps == old[name].eps
        assert new.affine == old[name].affine and new.training == old[name].training
        assert new.process_group is None
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in conv.modules())
    # the very same Parameter and buffer objects, as in PyTorch (optimizers keep working)
    assert all(a is b for a, b in zip(params, conv.parameters()))
    assert all(a is b for a, b in zip(buffers, conv.buffers()))
    assert list(conv.state_dict()) == list(ref.state_dict())
    x = ddp.randn(5, 2, 4, 4)
    np.testing.assert_array_equal(conv(x).detach().numpy(), ref(x).detach().numpy())
    for (k, a), b in zip(conv.state_dict().items(), ref.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_convert_a_bare_batchnorm():
    bn = nn.BatchNorm1d(3, eps=1e-3, momentum=0.3, bias=False)
    sbn = nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    assert isinstance(sbn, nn.SyncBatchNorm) and sbn.bias is None and sbn.weight is bn.weight
    assert (sbn.eps, sbn.momentum) == (1e-3, 0.3)
