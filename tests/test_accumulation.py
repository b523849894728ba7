"""GradientAccumulator in one process: k micro-batches give the step of the full batch."""
import numpy as np
import pytest

import ddp
import ddp.nn as nn


def model_and_data(seed=0, n=12):
    ddp.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    rng = np.random.default_rng(seed)
    return model, ddp.tensor(rng.standard_normal((n, 4))), ddp.tensor(rng.standard_normal((n, 2)))


def params(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_k_micro_batches_equal_one_full_batch_step(k):
    ref, x, y = model_and_data(n=12)
    opt = ddp.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        nn.MSELoss()(ref(x), y).backward()
        opt.step()

    model, x, y = model_and_data(n=12)
    opt = ddp.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    acc = ddp.GradientAccumulator(model, opt, steps=k)
    size = 12 // k
    batches = [(x[i:i + size], y[i:i + size]) for i in range(0, 12, size)]
    for _ in range(2):
        for xb, yb in acc.micro_batches(batches):
            with acc.accumulate():
                acc.backward(nn.MSELoss()(model(xb), yb))
    assert acc.optimizer_steps == 2
    for a, b in zip(params(model), params(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_last_partial_group_steps_with_the_mean_of_what_it_had():
    model, x, y = model_and_data(n=10)
    opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    acc = ddp.GradientAccumulator(model, opt, steps=4)
    batches = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 10, 2)]   # 5 micro-batches
    steps_seen = []
    for i, (xb, yb) in enumerate(acc.micro_batches(batches)):
        with acc.accumulate():
            acc.backward(nn.MSELoss()(model(xb), yb))
        steps_seen.append(acc.optimizer_steps)
    assert steps_seen == [0, 0, 0, 1, 2]     # after micro-batch 4, then the partial group of 1
    ref, x, y = model_and_data(n=10)
    opt = ddp.optim.SGD(ref.parameters(), lr=0.1)
    for xb, yb in [(x[:8], y[:8]), (x[8:], y[8:])]:
        opt.zero_grad()
        nn.MSELoss()(ref(xb), yb).backward()
        opt.step()
    for a, b in zip(params(model), params(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_scheduler_and_clipping_step_once_per_group():
    model, x, y = model_and_data(n=8)
    opt = ddp.optim.SGD(model.parameters(), lr=1.0)
    sched = ddp.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    acc = ddp.GradientAccumulator(model, opt, steps=2, scheduler=sched, max_grad_norm=1e-3)
    for xb, yb in acc.micro_batches([(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]):
        before = params(model)
        with acc.accumulate():
            acc.backward(nn.MSELoss()(model(xb), yb))
        if acc.micro_step == 0:   # a step happened: clipped to norm 1e-3 at lr <= 1
            moved = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(params(model), before)))
            assert moved <= 1e-3 * 1.0001
    assert acc.optimizer_steps == 2
    assert sched.get_last_lr() == [0.25]


def test_state_dict_round_trip():
    model, _, _ = model_and_data()
    acc = ddp.GradientAccumulator(model, ddp.optim.SGD(model.parameters(), lr=0.1), steps=3)
    acc.micro_step, acc.optimizer_steps = 2, 7
    other = ddp.GradientAccumulator(model, ddp.optim.SGD(model.parameters(), lr=0.1), steps=3)
    other.load_state_dict(acc.state_dict())
    assert (other.micro_step, other.optimizer_steps) == (2, 7)
    with pytest.raises(ValueError, match="accumulated over 3"):
        ddp.GradientAccumulator(model, ddp.optim.SGD(model.parameters(), lr=0.1),
                                steps=2).load_state_dict(acc.state_dict())
