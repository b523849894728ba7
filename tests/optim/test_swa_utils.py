"""``ddp.optim.swa_utils`` against PyTorch's recorded answers (tests/oracle.py): AveragedModel
(running mean, EMA through avg_fn and multi_avg_fn, with and without buffers) over a sequence of
model states, update_bn's recomputed statistics, SWALR's rates; state_dict keys; errors.
"""
import numpy as np
import pytest

import ddp
from ddp.optim import swa_utils

RNG = np.random.default_rng(3)
STATES = [{"0.weight": RNG.standard_normal((3, 2)).astype(np.float32),
           "0.bias": RNG.standard_normal(3).astype(np.float32),
           "1.weight": RNG.uniform(0.5, 1.5, 3).astype(np.float32),
           "1.bias": RNG.standard_normal(3).astype(np.float32),
           "1.running_mean": RNG.standard_normal(3).astype(np.float32),
           "1.running_var": RNG.uniform(0.5, 2, 3).astype(np.float32),
           "1.num_batches_tracked": np.array(k, np.int64)} for k in range(4)]
BATCHES = [RNG.standard_normal((8, 2)).astype(np.float32) for _ in range(3)]


def net(lib):
    return lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.BatchNorm1d(3, momentum=0.3))


def averaging(lib, kind):
    su = lib.optim.swa_utils
    return {"swa": {}, "swa-buffers": {"use_buffers": True},
            "ema-avg_fn": {"avg_fn": su.get_ema_avg_fn(0.8)},
            "ema-multi": {"multi_avg_fn": su.get_ema_multi_avg_fn(0.9), "use_buffers": True},
            "swa-multi": {"multi_avg_fn": su.get_swa_multi_avg_fn()}}[kind]


def average_states(lib, kind):
    model = net(lib)
    averaged = lib.optim.swa_utils.AveragedModel(model, **averaging(lib, kind))
    out = []
    for state in STATES:
        model.load_state_dict({k: lib.tensor(v) for k, v in state.items()})
        averaged.update_parameters(model)
        out.append({k.replace(".", "_"): v.detach().numpy().copy()
                    for k, v in averaged.state_dict().items()})
    return {"states": out, "keys": " ".join(averaged.state_dict())}


@pytest.mark.parametrize("kind", ["swa", "swa-buffers", "ema-avg_fn", "ema-multi", "swa-multi"])
def test_averaged_model_matches_torch(oracle, kind):
    ref = oracle(lambda torch: average_states(torch, kind))
    ours = average_states(ddp, kind)
    assert ours["keys"] == ref["keys"]
    for got, want in zip(ours["states"], ref["states"]):
        assert sorted(got) == sorted(want)
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7, err_msg=key)


def recompute_bn(lib, with_labels):
    model = net(lib)
    model.load_state_dict({k: lib.tensor(v) for k, v in STATES[1].items()})
    model.eval()
    loader = ([(lib.tensor(b), lib.tensor(np.zeros(8))) for b in BATCHES] if with_labels
              else [lib.tensor(b) for b in BATCHES])
    lib.optim.swa_utils.update_bn(loader, model)
    bn = model[1]
    return {"mean": bn.running_mean.numpy().copy(), "var": bn.running_var.numpy().copy(),
            "tracked": bn.num_batches_tracked.numpy().copy(), "momentum": bn.momentum,
            "training": model.training}


@pytest.mark.parametrize("with_labels", [False, True], ids=["inputs", "input-label-pairs"])
def test_update_bn_matches_torch(oracle, with_labels):
    ref = oracle(lambda torch: recompute_bn(torch, with_labels))
    ours = recompute_bn(ddp, with_labels)
    np.testing.assert_allclose(ours["mean"], ref["mean"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours["var"], ref["var"], rtol=1e-6, atol=1e-7)
    assert int(ours["tracked"]) == int(ref["tracked"]) == len(BATCHES)
    assert ours["momentum"] == ref["momentum"] == 0.3 and ours["training"] is False


SWALR_CASES = [dict(swa_lr=0.05), dict(swa_lr=[0.01, 0.02], anneal_epochs=3),
               dict(swa_lr=0.05, anneal_epochs=4, anneal_strategy="linear"),
               dict(swa_lr=0.02, anneal_epochs=0)]


def swalr_rates(lib, kw):
    params = [lib.nn.Parameter(lib.zeros(2)), lib.nn.Parameter(lib.zeros(3))]
    opt = lib.optim.SGD([{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.2}],
                        lr=0.1)
    sched = lib.optim.swa_utils.SWALR(opt, **kw)
    rows = []
    for _ in range(14):
        rows.append(sched.get_last_lr())
        opt.step()
        sched.step()
    return {"rates": np.array(rows, np.float64), "keys": " ".join(sorted(sched.state_dict()))}


@pytest.mark.parametrize("kw", SWALR_CASES, ids=[str(i) for i in range(len(SWALR_CASES))])
def test_swalr_matches_torch(oracle, kw):
    ref = oracle(lambda torch: swalr_rates(torch, kw))
    ours = swalr_rates(ddp, kw)
    np.testing.assert_array_equal(ours["rates"], ref["rates"])
    assert ours["keys"] == ref["keys"]


def test_errors():
    model = ddp.nn.Linear(2, 1)
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn"):
        swa_utils.AveragedModel(model, avg_fn=swa_utils.get_swa_avg_fn(),
                                multi_avg_fn=swa_utils.get_swa_multi_avg_fn())
    with pytest.raises(ValueError, match=r"Invalid decay value 1.5 provided. Please provide a "
                                         r"value in \[0,1\] range."):
        swa_utils.get_ema_avg_fn(1.5)
    opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="anneal_strategy must be one of 'cos' or 'linear', "
                                         "instead got step"):
        swa_utils.SWALR(opt, 0.01, anneal_strategy="step")
    with pytest.raises(ValueError, match="anneal_epochs must be equal or greater than 0, got -1"):
        swa_utils.SWALR(opt, 0.01, anneal_epochs=-1)
    sched = swa_utils.SWALR(opt, 0.01)
    with pytest.warns(UserWarning, match="please use `get_last_lr"):
        sched.get_lr()


def test_averaged_model_forward_and_state_dict_round_trip():
    model = net(ddp)
    averaged = swa_utils.AveragedModel(model)
    for state in STATES[:3]:
        model.load_state_dict({k: ddp.tensor(v) for k, v in state.items()})
        averaged.update_parameters(model)
    x = ddp.tensor(BATCHES[0])
    averaged.eval()
    np.testing.assert_allclose(averaged(x).detach().numpy(), averaged.module(x).detach().numpy())
    other = swa_utils.AveragedModel(net(ddp))
    other.load_state_dict(averaged.state_dict())
    assert int(other.n_averaged) == 3
    mean = np.mean([s["0.weight"] for s in STATES[:3]], axis=0)
    np.testing.assert_allclose(other.module[0].weight.detach().numpy(), mean, rtol=1e-6)
