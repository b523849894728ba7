"""Muon against PyTorch's recorded answers (tests/oracle.py): the bfloat16 Newton-Schulz
orthogonalization, 6-step trajectories in several settings, state_dict loading, errors."""
import numpy as np
import pytest

import ddp
import ddp.optim as optim
from ddp.optim.muon import zeropower_via_newtonschulz

RNG = np.random.default_rng(11)
START = [RNG.standard_normal((6, 4)).astype(np.float32),
         RNG.standard_normal((3, 7)).astype(np.float32)]
GRADS = [[RNG.standard_normal(x.shape).astype(np.float32) for x in START] for _ in range(6)]
COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def test_newton_schulz_matches_torch_bit_for_bit(oracle):
    matrices = [RNG.standard_normal(s).astype(np.float32) for s in [(5, 3), (3, 7), (32, 16)]]

    def reference(torch):
        from torch.optim._muon import _zeropower_via_newtonschulz
        return [_zeropower_via_newtonschulz(torch.tensor(m), COEFFICIENTS, 5, 1e-7)
                .float().numpy() for m in matrices]

    for m, want in zip(matrices, oracle(reference)):
        np.testing.assert_array_equal(zeropower_via_newtonschulz(m, COEFFICIENTS, 5, 1e-7), want)


def trajectory(lib, kw, steps=6):
    params = [lib.nn.Parameter(lib.tensor(x.copy())) for x in START]
    opt = lib.optim.Muon(params, **kw)
    rows = []
    for grads in GRADS[:steps]:
        for p, g in zip(params, grads):
            p.grad = lib.tensor(g)
        opt.step()
        rows.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
    return np.stack(rows), opt


CASES = [dict(), dict(lr=0.02), dict(lr=0.02, nesterov=False, weight_decay=0.0),
         dict(lr=0.01, momentum=0.8, adjust_lr_fn="match_rms_adamw", ns_steps=3),
         dict(lr=0.01, ns_coefficients=(2.0, -1.5, 0.5), eps=1e-3, adjust_lr_fn="original")]


@pytest.mark.parametrize("kw", CASES, ids=[str(i) for i in range(len(CASES))])
def test_trajectory_matches_torch(oracle, kw):
    def reference(torch):
        rows, opt = trajectory(torch, kw)
        return {"rows": rows, "keys": " ".join(opt.state_dict()["param_groups"][0]),
                "buffer": opt.state_dict()["state"][1]["momentum_buffer"].numpy()}

    ref = oracle(reference)
    rows, opt = trajectory(ddp, kw)
    np.testing.assert_allclose(rows, ref["rows"], rtol=1e-5, atol=1e-6)
    assert " ".join(opt.state_dict()["param_groups"][0]) == ref["keys"]
    np.testing.assert_allclose(opt.state_dict()["state"][1]["momentum_buffer"].numpy(),
                               ref["buffer"], rtol=1e-6, atol=1e-7)


def test_torch_state_dict_loads_and_continues(oracle):
    def reference(torch):
        _, opt = trajectory(torch, dict(lr=0.02), steps=3)
        sd = opt.state_dict()
        return {"buffers": [sd["state"][i]["momentum_buffer"].numpy() for i in range(2)],
                "values": [p.detach().numpy() for p in opt.param_groups[0]["params"]]}

    ref = oracle(reference)
    params = [ddp.nn.Parameter(ddp.tensor(v)) for v in ref["values"]]
    opt = optim.Muon(params, lr=0.02)
    sd = opt.state_dict()
    sd["state"] = {i: {"momentum_buffer": ddp.tensor(b)} for i, b in enumerate(ref["buffers"])}
    opt.load_state_dict(sd)
    _, straight = trajectory(ddp, dict(lr=0.02))
    for grads in GRADS[3:]:
        for p, g in zip(params, grads):
            p.grad = ddp.tensor(g)
        opt.step()
    for p, q in zip(params, straight.param_groups[0]["params"]):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)


ERRORS = [dict(lr=-1.0), dict(momentum=-0.5), dict(weight_decay=-0.1),
          dict(adjust_lr_fn="spectral")]


@pytest.mark.parametrize("kw", ERRORS, ids=[next(iter(k)) for k in ERRORS])
def test_errors_match_torch(oracle, kw):
    def message(lib):
        with pytest.raises(ValueError) as info:
            lib.optim.Muon([lib.nn.Parameter(lib.ones(2, 2))], **kw)
        return str(info.value)

    assert message(ddp) == oracle(message)


def test_only_matrices():
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters whereas we found a "
                                         r"parameter with size: ddp.Size\(\[5\]\)"):
        optim.Muon([ddp.nn.Parameter(ddp.ones(5))])
    with pytest.raises(ValueError, match="Number of steps must be less than 100"):
        zeropower_via_newtonschulz(np.ones((2, 2), np.float32), COEFFICIENTS, 100, 1e-7)
