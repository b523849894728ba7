"""Lazy modules (nn.LazyLinear, LazyConv*, LazyBatchNorm*, LazyInstanceNorm*): placeholders until
the first forward, shapes inferred from it, initialised as the non-lazy module, then that class;
checked against PyTorch's recorded answers (tests/oracle.py)."""
import copy
import pickle

import numpy as np
import pytest

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

# (lazy class name, args, kwargs, input shape, the bound on |weight| and |bias| of the default
# init, computed from the inferred fan-in; None: norm layers, ones and zeros)
CASES = {
    "linear": ("LazyLinear", (5,), {}, (3, 7), 1 / np.sqrt(7)),
    "conv1d": ("LazyConv1d", (6, 3), {"stride": 2}, (2, 4, 9), 1 / np.sqrt(4 * 3)),
    "conv2d": ("LazyConv2d", (6, 3), {"padding": 1, "groups": 2}, (2, 4, 5, 5),
               1 / np.sqrt(2 * 9)),
    "convt2d": ("LazyConvTranspose2d", (4, 3), {"stride": 2}, (1, 6, 4, 4),
                1 / np.sqrt(4 * 9)),
    "bn1d": ("LazyBatchNorm1d", (), {}, (8, 3), None),
    "bn2d": ("LazyBatchNorm2d", (), {"momentum": 0.3}, (4, 3, 2, 2), None),
    "in1d": ("LazyInstanceNorm1d", (), {}, (2, 3, 6), None),
    "in2d": ("LazyInstanceNorm2d", (), {}, (2, 3, 4, 4), None),
    "in3d": ("LazyInstanceNorm3d", (), {"affine": False}, (2, 3, 2, 3, 3), None),
}


def _input(shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_forward_matches_torch(oracle, case):
    name, args, kwargs, shape, bound = CASES[case]
    x = _input(shape)

    def reference(torch):
        m = getattr(torch.nn, name)(*args, **kwargs)
        before = {"repr": repr(m), "keys": list(m.state_dict()),
                  "kinds": [type(v).__name__ for v in m.state_dict().values()]}
        xt = torch.tensor(x, requires_grad=True)
        y = m(xt)
        state = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
        y.sum().backward()
        return {"before": before, "class": type(m).__name__, "repr": repr(m), "state": state,
                "keys": list(state),
                "y": y.detach().numpy(), "gx": xt.grad.numpy() if xt.grad is not None else 0}

    ref = oracle(reference)
    m = getattr(nn, name)(*args, **kwargs)
    assert repr(m) == ref["before"]["repr"]
    assert list(m.state_dict()) == ref["before"]["keys"]
    assert [type(v).__name__ for v in m.state_dict().values()] == ref["before"]["kinds"]
    assert m.has_uninitialized_params() == any(k.startswith("Uninitialized")
                                               for k in ref["before"]["kinds"])

    # ddp's own lazy init: torch's shapes and dtypes, the non-lazy module's distribution
    m(ddp.tensor(x))
    assert type(m).__name__ == ref["class"] and type(m) is getattr(nn, ref["class"])
    assert repr(m) == ref["repr"]
    ours = m.state_dict()
    assert list(ours) == list(ref["keys"])
    for k, v in ref["state"].items():
        assert tuple(ours[k].shape) == v.shape and ours[k].numpy().dtype == v.dtype, k
        assert type(ours[k]) is ddp.Tensor and not is_lazy(m._parameters.get(k)), k
    if bound is not None:
        for k in ("weight", "bias"):
            w = ours[k].numpy()
            assert np.all(np.abs(w) <= bound + 1e-6) and np.abs(w).max() > bound / 4, k
    elif m.affine:
        assert np.all(ours["weight"].numpy() == 1) and np.all(ours["bias"].numpy() == 0)

    # torch's values loaded into it: torch's outputs and gradients (norm layers in training
    # normalise with the batch's statistics, not the loaded running ones)
    m.load_state_dict({k: ddp.tensor(v) for k, v in ref["state"].items()})
    xd = ddp.tensor(x, requires_grad=True)
    y = m(xd)
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), ref["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xd.grad.numpy(), ref["gx"], rtol=1e-4, atol=1e-5)


def test_load_state_dict_materialises_a_lazy_module(oracle):
    x = _input((3, 7))

    def reference(torch):
        full = torch.nn.LazyLinear(5)
        full(torch.tensor(x))
        lazy = torch.nn.LazyLinear(5)
        lazy.load_state_dict(full.state_dict())
        mid = {"class": type(lazy).__name__, "shape": list(lazy.weight.shape),
               "in_features": lazy.in_features}
        y = lazy(torch.tensor(x))
        return {"state": {k: v.numpy() for k, v in full.state_dict().items()}, "mid": mid,
                "y": y.detach().numpy(), "class": type(lazy).__name__, "repr": repr(lazy)}

    ref = oracle(reference)
    lazy = nn.LazyLinear(5)
    lazy.load_state_dict({k: ddp.tensor(v) for k, v in ref["state"].items()})
    assert type(lazy).__name__ == ref["mid"]["class"]
    assert list(lazy.weight.shape) == list(ref["mid"]["shape"])
    assert lazy.in_features == ref["mid"]["in_features"]
    y = lazy(ddp.tensor(x))
    np.testing.assert_allclose(y.detach().numpy(), ref["y"], rtol=1e-5, atol=1e-6)
    assert type(lazy).__name__ == ref["class"] and repr(lazy) == ref["repr"]


def test_uninitialized_into_uninitialized_and_into_initialized():
    lazy = nn.LazyLinear(4)
    assert lazy.load_state_dict(nn.LazyLinear(4).state_dict()) is not None
    assert lazy.has_uninitialized_params()
    with pytest.raises(RuntimeError, match="Can't access the shape of an uninitialized"):
        nn.Linear(3, 4).load_state_dict(nn.LazyLinear(4).state_dict())


def test_placeholders():
    p = UninitializedParameter()
    assert repr(p) == "<UninitializedParameter>" and p.requires_grad
    assert isinstance(p, nn.Parameter) and is_lazy(p)
    with pytest.raises(RuntimeError, match="Can't access the shape of an uninitialized"):
        p.shape
    with pytest.raises(RuntimeError, match="Can't share memory"):
        p.share_memory_()
    assert repr(copy.deepcopy(p)) == "<UninitializedParameter>"
    assert repr(pickle.loads(pickle.dumps(p))) == "<UninitializedParameter>"
    p.materialize((2, 3), dtype=ddp.float64)
    assert type(p) is nn.Parameter and p.shape == (2, 3) and p.dtype == ddp.float64
    b = UninitializedBuffer()
    assert repr(b) == "<UninitializedBuffer>" and not b.requires_grad
    b.materialize(4)
    assert type(b) is ddp.Tensor and b.shape == (4,)
    assert nn.UninitializedParameter is UninitializedParameter
    assert nn.parameter.UninitializedBuffer is nn.UninitializedBuffer


def test_optimizer_before_the_dry_run_holds_the_materialised_parameters():
    # materialize changes the object itself, so an optimizer built first still steps it
    ddp.manual_seed(0)
    m = nn.LazyLinear(2)
    opt = ddp.optim.SGD(m.parameters(), lr=0.5)
    m(ddp.ones(1, 3)).sum().backward()
    w = m.weight.detach().clone()
    opt.step()
    np.testing.assert_allclose(m.weight.detach().numpy(), w.numpy() - 0.5, rtol=1e-6)
    assert opt.param_groups[0]["params"][0] is m.weight


def test_errors():
    with pytest.raises(RuntimeError, match="Expected 3D \\(unbatched\\) or 4D \\(batched\\)"):
        nn.LazyConv2d(4, 3)(ddp.ones(2, 3))
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.LazyConv1d(4, 3, groups=2)(ddp.ones(1, 3, 8))
    m = nn.LazyLinear(3)
    m(ddp.ones(2, 5))
    with pytest.raises(RuntimeError, match="does not match in_features=5"):
        m(ddp.ones(2, 4))


def test_nested_lazy_modules_and_sequential():
    net = nn.Sequential(nn.LazyConv2d(4, 3), nn.LazyBatchNorm2d(), nn.Flatten(), nn.LazyLinear(2))
    assert list(net.state_dict())[:2] == ["0.weight", "0.bias"]
    out = net(ddp.randn(2, 3, 5, 5))
    assert out.shape == (2, 2)
    assert [type(c).__name__ for c in net] == ["Conv2d", "BatchNorm2d", "Flatten", "Linear"]
    assert net[3].in_features == 4 * 3 * 3


def test_distributed_data_parallel_refuses_uninitialized_parameters():
    dist.init_process_group()
    try:
        with pytest.raises(RuntimeError, match="uninitialized parameters can't be used with "
                                               "`DistributedDataParallel`.*'0.weight'"):
            nn.parallel.DistributedDataParallel(nn.Sequential(nn.LazyLinear(2)))
    finally:
        dist.destroy_process_group()
