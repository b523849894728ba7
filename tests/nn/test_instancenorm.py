"""InstanceNorm1d/2d/3d and F.instance_norm: PyTorch parity (recorded oracle) for outputs,
input and parameter gradients, running statistics after two training steps, the eval output,
state_dict keys, repr and error types, batched and unbatched, affine or not, tracked or not;
float64 gradcheck of F.instance_norm.
"""
import warnings

import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.nn.functional as F
from ddp.autograd import gradcheck
from tests.nn.test_normalization import (_load_state, _state_of, arr, check_steps, make_steps,
                                       torch_module, torch_steps)


CASES = [   # (class, input shape, keyword arguments)
    ("InstanceNorm1d", (4, 3, 6), dict()),
    ("InstanceNorm1d", (3, 6), dict(affine=True)),                       # unbatched (C, L)
    ("InstanceNorm1d", (4, 3, 5), dict(affine=True, track_running_stats=True)),
    ("InstanceNorm2d", (2, 3, 4, 5), dict(track_running_stats=True, momentum=0.3)),
    ("InstanceNorm2d", (3, 4, 5), dict(affine=True, track_running_stats=True)),  # (C, H, W)
    ("InstanceNorm2d", (2, 3, 4, 4), dict(affine=True, bias=False, eps=1e-3)),
    ("InstanceNorm2d", (2, 3, 4, 4), dict(track_running_stats=True, momentum=None)),
    ("InstanceNorm3d", (2, 3, 2, 3, 4), dict(affine=True, track_running_stats=True)),
    ("InstanceNorm3d", (3, 2, 3, 4), dict()),                            # (C, D, H, W)
]


@pytest.mark.parametrize("cls,shape,kw", CASES)
def test_instancenorm_torch_parity_train_then_eval(oracle, cls, shape, kw):
    steps = make_steps(shape, 3)   # two training steps, then eval

    def reference(torch):
        theirs = torch_module(torch, cls, kw)
        return {"repr": repr(theirs), "keys": list(theirs.state_dict()),
                "state": _state_of(theirs),
                "steps": torch_steps(torch, theirs, steps)}

    want = oracle(reference)
    ours = getattr(nn, cls)(3, **kw)
    assert repr(ours) == want["repr"]
    assert list(ours.state_dict()) == list(want["keys"])
    _load_state(ours, want["state"])
    check_steps(ours, steps, want["steps"])


def test_functional_instance_norm_torch_parity(oracle):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 4, 7)) * 2 + 1).astype(np.float32)
    w, b = (rng.uniform(0.5, 1.5, 4).astype(np.float32) for _ in range(2))
    rm, rv = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)

    def reference(torch):
        F_ = torch.nn.functional
        out = {}
        mean, var = torch.tensor(rm), torch.tensor(rv)
        xt = torch.tensor(x, requires_grad=True)
        y = F_.instance_norm(xt, mean, var, torch.tensor(w), torch.tensor(b), momentum=0.2,
                             eps=1e-3)
        y.sum().backward()
        out["train"] = [y.detach().numpy(), xt.grad.numpy(), mean.numpy(), var.numpy()]
        out["eval"] = F_.instance_norm(torch.tensor(x), mean, var, use_input_stats=False).numpy()
        out["eval_2d"] = F_.instance_norm(torch.tensor(x[:, :, 0]), mean, var,
                                          use_input_stats=False).numpy()
        out["plain"] = F_.instance_norm(torch.tensor(x)).numpy()
        return out

    want = oracle(reference)
    mean, var = ddp.tensor(rm), ddp.tensor(rv)
    a = ddp.tensor(x, requires_grad=True)
    y = F.instance_norm(a, mean, var, ddp.tensor(w), ddp.tensor(b), momentum=0.2, eps=1e-3)
    y.sum().backward()
    for got, ref in zip([y, a.grad, mean, var], want["train"]):
        np.testing.assert_allclose(arr(got), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(arr(F.instance_norm(ddp.tensor(x), mean, var,
                                                   use_input_stats=False)),
                               want["eval"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(arr(F.instance_norm(ddp.tensor(x[:, :, 0]), mean, var,
                                                   use_input_stats=False)),
                               want["eval_2d"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(arr(F.instance_norm(ddp.tensor(x))), want["plain"],
                               rtol=1e-5, atol=1e-5)


ERRORS = {   # name -> (function of the framework module, its nn and its functional)
    "1d_rank": lambda t, nn_, F_: nn_.InstanceNorm1d(3)(t.randn(3)),
    "1d_rank4": lambda t, nn_, F_: nn_.InstanceNorm1d(3)(t.randn(2, 3, 4, 4)),
    "2d_rank": lambda t, nn_, F_: nn_.InstanceNorm2d(3)(t.randn(3, 4)),
    "3d_rank": lambda t, nn_, F_: nn_.InstanceNorm3d(3)(t.randn(2, 3, 4, 4, 4, 2)),
    "affine_features": lambda t, nn_, F_: nn_.InstanceNorm2d(3, affine=True)(
        t.randn(2, 4, 3, 3)),
    "one_spatial": lambda t, nn_, F_: F_.instance_norm(t.randn(2, 3)),
    "one_spatial_1": lambda t, nn_, F_: F_.instance_norm(t.randn(2, 3, 1, 1)),
    "no_running": lambda t, nn_, F_: F_.instance_norm(t.randn(2, 3, 4), use_input_stats=False),
    "weight_size": lambda t, nn_, F_: F_.instance_norm(t.randn(2, 3, 4), weight=t.ones(2)),
    "running_size": lambda t, nn_, F_: F_.instance_norm(t.randn(2, 3, 4), t.zeros(2),
                                                        t.ones(2)),
}


def _error_types(t, nn_, F_):
    out = {}
    for name, fn in ERRORS.items():
        try:
            fn(t, nn_, F_)
            out[name] = "none"
        except Exception as e:   # the type is the answer
            out[name] = type(e).__name__
    return out


def test_instancenorm_error_types_torch_parity(oracle):
    want = oracle(lambda torch: _error_types(torch, torch.nn, torch.nn.functional))
    assert all(v != "none" for v in want.values())
    assert _error_types(ddp, nn, F) == dict(want)


def test_num_features_mismatch_without_affine_warns(oracle):
    def run(t, nn_):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = nn_.InstanceNorm1d(3)(t.ones(2, 4, 5))
        return [str(w.message) for w in caught], tuple(y.shape)

    want = oracle(lambda torch: run(torch, torch.nn))
    messages, shape = run(ddp, nn)
    assert messages == list(want[0]) and shape == tuple(want[1])


@pytest.mark.parametrize("shape,affine,stats", [
    ((2, 3, 5), True, False),
    ((2, 2, 3, 3), False, False),
    ((1, 2, 2, 2, 3), True, True),
    ((3, 2, 4), True, True),
])
def test_instance_norm_gradcheck(shape, affine, stats):
    rng = np.random.default_rng(2)
    x = ddp.tensor(rng.standard_normal(shape), requires_grad=True)
    c = shape[1]
    inputs = [x]
    if affine:
        inputs += [ddp.tensor(rng.uniform(0.5, 1.5, c), requires_grad=True),
                   ddp.tensor(rng.standard_normal(c), requires_grad=True)]
    running = (ddp.tensor(rng.standard_normal(c)), ddp.tensor(rng.uniform(0.5, 2, c)))

    def fn(x, *wb):
        rm, rv = (running if stats else (None, None))
        return F.instance_norm(x, rm, rv, *wb, use_input_stats=True)

    assert gradcheck(fn, tuple(inputs))
    if stats:   # the running statistics as constants (eval)
        assert gradcheck(lambda x, *wb: F.instance_norm(x, *running, *wb, use_input_stats=False),
                         tuple(inputs))


def test_instance_norm_is_group_norm_with_a_group_per_channel():
    x = ddp.randn(2, 4, 3, 3)
    np.testing.assert_allclose(arr(F.instance_norm(x)), arr(F.group_norm(x, 4)), atol=1e-6)


def test_unbatched_matches_batched():
    x = ddp.randn(3, 4, 5)
    m = nn.InstanceNorm2d(3, affine=True)
    np.testing.assert_allclose(arr(m(x)), arr(m(x.unsqueeze(0)).squeeze(0)), atol=1e-6)


def test_untracked_load_drops_pre_0_4_running_stats():
    m = nn.InstanceNorm1d(3)
    sd = {"running_mean": ddp.zeros(3), "running_var": ddp.ones(3)}
    sd = type("SD", (dict,), {})(sd)
    sd._metadata = {"": {}}   # a checkpoint without a version
    with pytest.raises(RuntimeError, match="Unexpected running stats buffer"):
        m.load_state_dict(sd)
