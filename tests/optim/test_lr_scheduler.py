"""Learning-rate schedulers: ``ddp.optim.lr_scheduler``.

Each scheduler's learning-rate sequence over 30 steps (two param groups) equals PyTorch's
exactly (its answers recorded in tests/oracle_data/optim__test_lr_scheduler.npz through the
oracle fixture, re-checked live where torch is installed), and the common ones equal their
closed forms written here.
Also: state_dict round trips mid-schedule, ReduceLROnPlateau on scripted metrics, OneCycleLR's
momentum / beta1 cycling, no warnings in normal use, and argument errors.
"""
import copy
import math
import pickle
import warnings
from bisect import bisect_right

import numpy as np
import pytest

import ddp
from ddp.optim import lr_scheduler as S

STEPS = 30
LRS = (0.1, 0.05)


def make_optimizer(lib, kind="SGD"):
    params = [lib.nn.Parameter(lib.zeros(2)), lib.nn.Parameter(lib.zeros(3))]
    groups = [{"params": [params[0]], "lr": LRS[0]}, {"params": [params[1]], "lr": LRS[1]}]
    if kind == "SGD":
        return lib.optim.SGD(groups, lr=LRS[0], momentum=0.9)
    return lib.optim.Adam(groups, lr=LRS[0])


def _two_lambdas(e):
    return 1.0 / (e + 1)


def _decay_scale(x):
    return 0.97 ** x


# name -> (optimizer kind, factory(lr_scheduler module, optimizer))
SCHEDULERS = {
    "StepLR": ("SGD", lambda m, o: m.StepLR(o, step_size=3, gamma=0.5)),
    "MultiStepLR": ("SGD", lambda m, o: m.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3)),
    "ExponentialLR": ("SGD", lambda m, o: m.ExponentialLR(o, gamma=0.9)),
    "CosineAnnealingLR": ("SGD", lambda m, o: m.CosineAnnealingLR(o, T_max=10, eta_min=0.001)),
    "CosineAnnealingLR-T7": ("SGD", lambda m, o: m.CosineAnnealingLR(o, T_max=7)),
    "LambdaLR": ("SGD", lambda m, o: m.LambdaLR(o, lambda e: 0.95 ** e)),
    "LambdaLR-per-group": ("SGD", lambda m, o: m.LambdaLR(o, [lambda e: 0.9 ** e, _two_lambdas])),
    "MultiplicativeLR": ("SGD", lambda m, o: m.MultiplicativeLR(o, lambda e: 0.9)),
    "LinearLR": ("SGD", lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=8)),
    "LinearLR-decay": ("SGD", lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1,
                                                       total_iters=10)),
    "ConstantLR": ("SGD", lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=4)),
    "PolynomialLR": ("SGD", lambda m, o: m.PolynomialLR(o, total_iters=12, power=2.0)),
    "CosineAnnealingWarmRestarts": ("SGD", lambda m, o: m.CosineAnnealingWarmRestarts(
        o, T_0=4, T_mult=2, eta_min=0.01)),
    "OneCycleLR-cos": ("SGD", lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=STEPS)),
    "OneCycleLR-linear": ("SGD", lambda m, o: m.OneCycleLR(
        o, max_lr=[1.0, 0.5], epochs=3, steps_per_epoch=10, anneal_strategy="linear",
        pct_start=0.25)),
    "OneCycleLR-three-phase": ("SGD", lambda m, o: m.OneCycleLR(
        o, max_lr=0.8, total_steps=STEPS, three_phase=True, base_momentum=0.8,
        max_momentum=[0.9, 0.95])),
    "OneCycleLR-adam": ("Adam", lambda m, o: m.OneCycleLR(o, max_lr=0.01, total_steps=STEPS,
                                                          div_factor=10.0)),
    "OneCycleLR-no-momentum": ("Adam", lambda m, o: m.OneCycleLR(
        o, max_lr=0.01, total_steps=STEPS, cycle_momentum=False)),
    "CyclicLR": ("SGD", lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4)),
    "CyclicLR-triangular2": ("SGD", lambda m, o: m.CyclicLR(
        o, base_lr=[0.01, 0.02], max_lr=[0.1, 0.3], step_size_up=3, step_size_down=5,
        mode="triangular2", base_momentum=[0.8, 0.7], max_momentum=0.95)),
    "CyclicLR-exp_range-adam": ("Adam", lambda m, o: m.CyclicLR(
        o, base_lr=0.001, max_lr=0.01, step_size_up=3, mode="exp_range", gamma=0.9,
        base_momentum=0.8, max_momentum=0.95)),
    "CyclicLR-scale_fn": ("SGD", lambda m, o: m.CyclicLR(
        o, base_lr=0.01, max_lr=0.05, step_size_up=2, scale_fn=_decay_scale,
        scale_mode="iterations", cycle_momentum=False)),
    "SequentialLR": ("SGD", lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=20)],
        milestones=[5])),
    "SequentialLR-three": ("SGD", lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, factor=0.5, total_iters=3), m.ExponentialLR(o, gamma=0.8),
            m.StepLR(o, step_size=4)], milestones=[3, 12])),
    "ChainedScheduler": ("SGD", lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.5, total_iters=4), m.ExponentialLR(o, gamma=0.9)])),
}


def record(lib, name, steps=STEPS):
    """Per step: the groups' lr and momentum (or betas), and get_last_lr()."""
    kind, factory = SCHEDULERS[name]
    opt = make_optimizer(lib, kind)
    sched = factory(lib.optim.lr_scheduler, opt)
    return run_schedule(opt, sched, steps)


def run_schedule(opt, sched, steps):
    out = []
    for _ in range(steps):
        out.append(snapshot(opt, sched))
        opt.step()
        sched.step()
    out.append(snapshot(opt, sched))
    return out


def snapshot(opt, sched):
    return ([g["lr"] for g in opt.param_groups],
            [g.get("momentum", g.get("betas")) for g in opt.param_groups],
            list(sched.get_last_lr()))


def numbers(value):
    """Recorded answers hold numbers as 0-d arrays and sequences as lists or tuples: compare
    Python numbers in lists, exactly."""
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else numbers(list(value))
    if isinstance(value, (list, tuple)):
        return [numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    return value


def table(rows):
    """Per-step records (nested lists/tuples of numbers) as one float64 array, one row per step:
    one entry in the record file instead of one per number (doubles are kept exactly)."""
    def flatten(v):
        return [x for item in v for x in flatten(item)] if isinstance(v, (list, tuple)) else [v]
    return np.array([flatten(row) for row in rows], dtype=np.float64)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_matches_torch_exactly(oracle, name):
    def reference(torch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return table(record(torch, name))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ddp's schedulers are warning-free in normal use
        ours = table(record(ddp, name))
    np.testing.assert_array_equal(ours, oracle(reference))


def lrs_of(name, steps=STEPS):
    return [snap[0] for snap in record(ddp, name, steps)]


def approx(values):
    return pytest.approx(values, rel=1e-9, abs=1e-12)


def test_closed_forms():
    epochs = range(STEPS + 1)
    expected = {
        "StepLR": lambda b, e: b * 0.5 ** (e // 3),
        "MultiStepLR": lambda b, e: b * 0.3 ** bisect_right([2, 5, 5, 9], e),
        "ExponentialLR": lambda b, e: b * 0.9 ** e,
        "CosineAnnealingLR": lambda b, e: 0.001 + (b - 0.001) * (1 + math.cos(math.pi * e / 10))
        / 2,
        "CosineAnnealingLR-T7": lambda b, e: b * (1 + math.cos(math.pi * e / 7)) / 2,
        "LinearLR": lambda b, e: b * (0.25 + 0.75 * min(e, 8) / 8),
        "LinearLR-decay": lambda b, e: b * (1.0 - 0.9 * min(e, 10) / 10),
        "LambdaLR": lambda b, e: b * 0.95 ** e,
        "ConstantLR": lambda b, e: b * (0.5 if e < 4 else 1.0),
        "PolynomialLR": lambda b, e: b * (1 - min(e, 12) / 12) ** 2,
    }
    for name, formula in expected.items():
        got = lrs_of(name)
        want = [[formula(b, e) for b in LRS] for e in epochs]
        for e, (g, w) in enumerate(zip(got, want)):
            assert g == approx(w), f"{name} epoch {e}"
    for e, lrs in enumerate(lrs_of("LambdaLR-per-group")):
        assert lrs == approx([0.1 * 0.9 ** e, 0.05 / (e + 1)])


def test_initial_step_at_construction():
    opt = make_optimizer(ddp)
    sched = S.StepLR(opt, step_size=2)
    assert sched.last_epoch == 0 and sched._step_count == 1
    assert sched.base_lrs == list(LRS) and [g["initial_lr"] for g in opt.param_groups] == list(LRS)
    warm = S.LinearLR(make_optimizer(ddp), start_factor=0.5)
    assert warm.get_last_lr() == [0.05, 0.025]


def test_cosine_and_warm_restarts_shapes():
    lrs = [lr[0] for lr in lrs_of("CosineAnnealingLR")]
    assert lrs[10] == pytest.approx(0.001) and lrs[20] == pytest.approx(0.1)
    restarts = [lr[0] for lr in lrs_of("CosineAnnealingWarmRestarts")]
    assert restarts[0] == restarts[4] == restarts[12] == restarts[28] == 0.1  # periods 4, 8, 16
    assert restarts[2] == pytest.approx(0.01 + 0.09 / 2)


def test_sequential_switches_at_the_milestone():
    lrs = [lr[0] for lr in lrs_of("SequentialLR")]
    assert lrs[0] == pytest.approx(0.01) and lrs[4] == pytest.approx(0.01 + 0.09 * 4 / 5)
    assert lrs[5] == 0.1  # the cosine starts from base_lr at its own epoch 0
    assert lrs[15] == pytest.approx(0.05)


# ---------------------------------------------------------------------- OneCycleLR

def test_one_cycle_cycles_sgd_momentum():
    opt = make_optimizer(ddp, "SGD")
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=20, pct_start=0.25)
    snaps = run_schedule(opt, sched, 19)
    lrs = [s[0][0] for s in snaps]
    momenta = [s[1][0] for s in snaps]
    assert lrs[0] == pytest.approx(1.0 / 25) and momenta[0] == 0.95
    assert lrs[4] == pytest.approx(1.0) and momenta[4] == pytest.approx(0.85)  # the peak at step 4
    assert lrs[19] == pytest.approx(1.0 / 25 / 1e4) and momenta[19] == pytest.approx(0.95)
    assert all(a <= b for a, b in zip(lrs[:5], lrs[1:5]))
    assert all(a >= b for a, b in zip(momenta[:5], momenta[1:5]))
    group = opt.param_groups[0]
    assert group["max_lr"] == 1.0 and group["min_lr"] == pytest.approx(4e-6)
    assert group["max_momentum"] == 0.95 and group["base_momentum"] == 0.85


def test_one_cycle_cycles_adam_beta1_only():
    opt = make_optimizer(ddp, "Adam")
    sched = S.OneCycleLR(opt, max_lr=0.01, total_steps=10, pct_start=0.5, base_momentum=0.8,
                         max_momentum=0.9)
    betas = [s[1][0] for s in run_schedule(opt, sched, 9)]
    assert betas[0] == (0.9, 0.999) and betas[4] == pytest.approx((0.8, 0.999))
    assert betas[9] == pytest.approx((0.9, 0.999))
    assert all(b[1] == 0.999 for b in betas)


def test_one_cycle_errors():
    opt = make_optimizer(ddp)
    with pytest.raises(ValueError, match="You must define either total_steps OR"):
        S.OneCycleLR(opt, max_lr=1.0)
    with pytest.raises(ValueError, match="anneal_strategy must be one of 'cos' or 'linear'"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=5, anneal_strategy="exp")
    with pytest.raises(ValueError, match="Expected float between 0 and 1 pct_start"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=5, pct_start=2.0)
    with pytest.raises(ValueError, match="max_lr must have the same length"):
        S.OneCycleLR(opt, max_lr=[1.0], total_steps=5)
    adagrad = ddp.optim.Adagrad([ddp.nn.Parameter(ddp.zeros(1))])
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        S.OneCycleLR(adagrad, max_lr=1.0, total_steps=5)
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=2)
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match="Tried to step 3 times"):
        sched.step()


# ---------------------------------------------------------------------- state_dict

ROUND_TRIP = ["StepLR", "MultiStepLR", "CosineAnnealingLR", "LambdaLR", "LinearLR",
              "CosineAnnealingWarmRestarts", "OneCycleLR-three-phase", "OneCycleLR-adam",
              "SequentialLR", "ChainedScheduler", "PolynomialLR", "CyclicLR-triangular2",
              "CyclicLR-exp_range-adam"]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_state_dict_round_trip_mid_schedule(name):
    kind, factory = SCHEDULERS[name]
    straight = record(ddp, name)

    opt = make_optimizer(ddp, kind)
    sched = factory(S, opt)
    first = run_schedule(opt, sched, 12)[:-1]
    saved_opt = copy.deepcopy(opt.state_dict())
    saved_sched = pickle.loads(pickle.dumps(sched.state_dict()))  # plain data: no optimizer
    assert "optimizer" not in saved_sched

    opt2 = make_optimizer(ddp, kind)
    sched2 = factory(S, opt2)
    sched2.load_state_dict(saved_sched)
    opt2.load_state_dict(saved_opt)
    rest = run_schedule(opt2, sched2, STEPS - 12)
    assert first + rest == straight


def test_state_dict_contents():
    sd = S.StepLR(make_optimizer(ddp), step_size=3).state_dict()
    assert {"base_lrs", "last_epoch", "_step_count", "_last_lr", "step_size", "gamma"} <= set(sd)
    assert "optimizer" not in sd
    sd = S.LambdaLR(make_optimizer(ddp), lambda e: 1.0).state_dict()
    assert sd["lr_lambdas"] == [None, None]


def test_lambda_objects_keep_their_attributes():
    class Decay:
        def __init__(self, rate):
            self.rate = rate

        def __call__(self, epoch):
            return self.rate ** epoch

    sched = S.LambdaLR(make_optimizer(ddp), Decay(0.5))
    sched.step()
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [{"rate": 0.5}, {"rate": 0.5}]
    other = S.LambdaLR(make_optimizer(ddp), [Decay(0.9), Decay(0.8)])
    other.load_state_dict(sd)
    assert [fn.rate for fn in other.lr_lambdas] == [0.5, 0.5] and other.last_epoch == 1


def test_torch_scheduler_state_dict_loads(oracle):
    def reference(torch):
        topt = make_optimizer(torch)
        tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=10)
        for _ in range(4):
            topt.step()
            tsched.step()
        saved = {"scheduler": tsched.state_dict(), "optimizer": topt.state_dict()}
        lrs = []
        for _ in range(6):
            topt.step()
            tsched.step()
            lrs.append(tsched.get_last_lr())
        return {"saved": saved, "lrs": lrs}

    ref = oracle(reference)
    saved = numbers(ref["saved"])  # no tensors in an SGD state without steps taken
    saved["optimizer"]["state"] = {}
    opt = make_optimizer(ddp)
    sched = S.CosineAnnealingLR(opt, T_max=10)
    sched.load_state_dict(saved["scheduler"])
    opt.load_state_dict(saved["optimizer"])
    lrs = []
    for _ in range(6):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())
    assert lrs == numbers(ref["lrs"])


# ---------------------------------------------------------------------- ReduceLROnPlateau

def test_reduce_on_plateau_scripted_metrics():
    opt = ddp.optim.SGD([ddp.nn.Parameter(ddp.zeros(1))], lr=1.0)
    sched = S.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=0.1, cooldown=1, min_lr=0.2)
    metrics = [10, 8, 8, 8, 8, 8, 8, 8, 8, 8, 5, 5, 5, 5, 5, 5, 5, 5]
    expected = [1, 1, 1, 1, .5, .5, .5, .5, .25, .25, .25, .25, .25, .2, .2, .2, .2, .2]
    got = []
    for m in metrics:
        sched.step(ddp.tensor(float(m)))
        got.append(sched.get_last_lr()[0])
    assert got == expected
    assert sched.best == 5 and sched.last_epoch == len(metrics)


PLATEAU = [
    dict(mode="max", factor=0.5, patience=1, threshold=0.5, threshold_mode="abs"),
    dict(mode="min", factor=0.3, patience=0, threshold=0.0, cooldown=2, min_lr=[0.01, 0.02]),
    dict(mode="max", patience=3, threshold=0.01),
    dict(mode="min", factor=0.9, patience=0, threshold_mode="abs", eps=0.02),
]


@pytest.mark.parametrize("kw", PLATEAU, ids=[str(i) for i in range(len(PLATEAU))])
def test_reduce_on_plateau_matches_torch(oracle, kw):
    metrics = list(np.random.default_rng(3).uniform(0, 1, 40).cumsum() % 3.0)

    def lrs(lib):
        opt = make_optimizer(lib)
        sched = lib.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
        out = []
        for m in metrics:
            opt.step()
            sched.step(m)
            out.append((sched.get_last_lr(), sched.num_bad_epochs, sched.cooldown_counter))
        return table(out)

    np.testing.assert_array_equal(lrs(ddp), oracle(lrs))


def test_reduce_on_plateau_state_and_errors():
    opt = make_optimizer(ddp)
    sched = S.ReduceLROnPlateau(opt, mode="max", patience=1)
    for m in [1.0, 0.5]:
        sched.step(m)
    sd = copy.deepcopy(sched.state_dict())
    other = S.ReduceLROnPlateau(make_optimizer(ddp))
    other.load_state_dict(sd)
    assert other.mode == "max" and other.best == 1.0 and other.num_bad_epochs == 1
    assert isinstance(sched, S.LRScheduler)
    with pytest.raises(ValueError, match="Factor should be < 1.0."):
        S.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="expected 2 min_lrs, got 1"):
        S.ReduceLROnPlateau(opt, min_lr=[0.1])
    with pytest.raises(ValueError, match="mode avg is unknown!"):
        S.ReduceLROnPlateau(opt, mode="avg")
    with pytest.raises(ValueError, match="threshold mode rel2 is unknown!"):
        S.ReduceLROnPlateau(opt, threshold_mode="rel2")


# ---------------------------------------------------------------------- errors and aliases

def test_errors():
    opt = make_optimizer(ddp)
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        S.StepLR([], step_size=1)
    fresh = ddp.optim.SGD([ddp.nn.Parameter(ddp.zeros(1))], lr=0.1)
    with pytest.raises(KeyError, match="param 'initial_lr' is not specified in param_groups"):
        S.StepLR(fresh, step_size=1, last_epoch=3)
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 3"):
        S.LambdaLR(opt, [lambda e: 1.0] * 3)
    with pytest.raises(ValueError, match="Constant multiplicative factor expected"):
        S.ConstantLR(opt, factor=2.0)
    with pytest.raises(ValueError, match="Starting multiplicative factor expected"):
        S.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="Sequential Schedulers expects number of schedulers"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.StepLR(opt, 3)], milestones=[])
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        S.ChainedScheduler([S.ReduceLROnPlateau(opt)])
    with pytest.raises(ValueError, match="Expected positive integer T_0"):
        S.CosineAnnealingWarmRestarts(opt, T_0=0)


def test_resume_with_last_epoch():
    opt = make_optimizer(ddp)
    S.StepLR(opt, step_size=3, gamma=0.5)  # sets initial_lr
    resumed = S.StepLR(opt, step_size=3, gamma=0.5, last_epoch=5)
    assert resumed.last_epoch == 6 and resumed.base_lrs == list(LRS)


def test_epoch_argument_uses_the_closed_form_with_a_deprecation_warning():
    opt = make_optimizer(ddp)
    sched = S.StepLR(opt, step_size=3, gamma=0.5)
    with pytest.warns(UserWarning, match="epoch parameter"):
        sched.step(7)
    assert sched.get_last_lr() == pytest.approx([0.1 * 0.25, 0.05 * 0.25])


def test_lr_scheduler_alias_and_custom_subclass():
    assert issubclass(S._LRScheduler, S.LRScheduler)

    class Halving(S._LRScheduler):
        def get_lr(self):
            return [b * 0.5 ** self.last_epoch for b in self.base_lrs]

    sched = Halving(make_optimizer(ddp))
    sched.step()
    sched.step()
    assert sched.get_last_lr() == [0.025, 0.0125]


def test_exported_names():
    assert set(S.__all__) <= set(dir(S))
    assert ddp.optim.lr_scheduler is S


def test_cyclic_lr_saves_a_callable_scale_object_but_not_a_function():
    class Scale:
        def __init__(self, rate):
            self.rate = rate

        def __call__(self, x):
            return self.rate ** x

    opt = make_optimizer(ddp)
    sched = S.CyclicLR(opt, 0.01, 0.1, step_size_up=2, scale_fn=Scale(0.5))
    sd = sched.state_dict()
    assert sd["_scale_fn_custom"] == {"rate": 0.5} and sd["scale_mode"] == "cycle"
    other = S.CyclicLR(make_optimizer(ddp), 0.01, 0.1, step_size_up=2, scale_fn=Scale(0.9))
    other.load_state_dict(sd)
    assert other._scale_fn_custom.rate == 0.5
    assert S.CyclicLR(make_optimizer(ddp), 0.01, 0.1, scale_fn=_decay_scale
                      ).state_dict()["_scale_fn_custom"] is None
    with pytest.raises(ValueError, match="mode is invalid and scale_fn is None"):
        S.CyclicLR(make_optimizer(ddp), 0.01, 0.1, mode="sawtooth")
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        S.CyclicLR(ddp.optim.Rprop([ddp.nn.Parameter(ddp.ones(1))]), 0.01, 0.1)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_state_dict_keys_match_torch(oracle, name):
    def keys(lib):
        kind, factory = SCHEDULERS[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched = factory(lib.optim.lr_scheduler, make_optimizer(lib, kind))
            sched.optimizer.step()
            sched.step()
        return " ".join(sorted(sched.state_dict()))  # one record entry

    assert keys(ddp) == oracle(keys)
