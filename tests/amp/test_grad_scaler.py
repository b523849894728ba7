"""GradScaler: scaling, unscale_ (once per step), skipped steps on inf/NaN, back-off and growth
of the scale, clipping between unscale_ and step, state_dict, enabled=False, the found-inf
reduction across ranks (with ddp.distributed's API stubbed in this single process), and the
scale/parameter trajectory against torch.amp.GradScaler."""
import pickle

import numpy as np
import pytest

import ddp
import ddp.distributed as dist
import ddp.nn.functional as F


def _setup(init_scale=2.0 ** 16, **kwargs):
    ddp.manual_seed(0)
    model = ddp.nn.Linear(3, 2)
    opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    scaler = ddp.amp.GradScaler("cpu", init_scale=init_scale, **kwargs)
    return model, opt, scaler


def _backward(model, scaler, inf=False):
    loss = model(ddp.ones(4, 3)).pow(2).mean()
    scaler.scale(loss).backward()
    if inf:
        model.weight.grad[0, 0] = float("inf")


def _params(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def test_scale_multiplies_tensors_and_nested_sequences():
    scaler = ddp.amp.GradScaler("cpu", init_scale=8.0)
    assert scaler.get_scale() == 8.0
    t = ddp.tensor([1.0, 2.0])
    assert scaler.scale(t).tolist() == [8.0, 16.0]
    out = scaler.scale([t, (ddp.tensor(3.0), [ddp.tensor(0.5)])])
    assert isinstance(out, list) and isinstance(out[1], tuple)
    assert out[0].tolist() == [8.0, 16.0] and out[1][0].item() == 24.0
    assert out[1][1][0].item() == 4.0
    assert scaler.scale(t.half()).dtype == ddp.float16  # a 0-d scale does not widen
    with pytest.raises(ValueError):
        scaler.scale(3.0)
    x = ddp.tensor([2.0], requires_grad=True)
    scaler.scale(x * 1.0).sum().backward()
    assert x.grad.item() == 8.0


def test_clean_steps_apply_unscaled_gradients():
    model, opt, scaler = _setup(init_scale=1024.0)
    ref_model, ref_opt, _ = _setup()
    for _ in range(3):
        opt.zero_grad()
        ref_opt.zero_grad()
        _backward(model, scaler)
        ref_model(ddp.ones(4, 3)).pow(2).mean().backward()
        scaler.step(opt)
        ref_opt.step()
        scaler.update()
        for a, b in zip(_params(model), _params(ref_model)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert scaler.get_scale() == 1024.0 and scaler._get_growth_tracker() == 3


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_inf_or_nan_skips_the_step_and_backs_off(bad):
    model, opt, scaler = _setup(init_scale=256.0, growth_interval=100)
    _backward(model, scaler)
    scaler.step(opt)
    scaler.update()
    assert scaler._get_growth_tracker() == 1
    before = _params(model)
    opt.zero_grad()
    _backward(model, scaler)
    model.bias.grad[1] = bad
    assert scaler.step(opt) is None
    scaler.update()
    for a, b in zip(_params(model), before):
        np.testing.assert_array_equal(a, b)
    assert scaler.get_scale() == 128.0          # times backoff_factor
    assert scaler._get_growth_tracker() == 0     # reset


def test_growth_after_growth_interval_clean_steps():
    model, opt, scaler = _setup(init_scale=4.0, growth_factor=3.0, growth_interval=3)
    scales = []
    for step in range(7):
        opt.zero_grad()
        _backward(model, scaler, inf=(step == 4))
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    # 3 clean steps -> x3; step 4 overflows -> x0.5, tracker reset; then 2 clean steps
    assert scales == [4.0, 4.0, 12.0, 12.0, 6.0, 6.0, 6.0]
    assert scaler._get_growth_tracker() == 2


def test_unscale_then_clip_then_step_uses_the_unscaled_clipped_gradients():
    model, opt, scaler = _setup(init_scale=512.0)
    before = _params(model)
    _backward(model, scaler)
    scaled = [p.grad.numpy().copy() for p in model.parameters()]
    scaler.unscale_(opt)
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    for s, g in zip(scaled, grads):
        np.testing.assert_allclose(g, s / 512.0, rtol=1e-6)
        assert g.dtype == np.float32
    total = float(np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads)))
    norm = ddp.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.1)
    assert abs(norm.item() - total) < 1e-4 * total and total > 0.1
    clipped = [g * (0.1 / (total + 1e-6)) for g in grads]
    scaler.step(opt)        # does not unscale again
    scaler.update()
    for p0, p1, g in zip(before, _params(model), clipped):
        np.testing.assert_allclose(p1, p0 - 0.1 * g, rtol=1e-5, atol=1e-7)


def test_stage_errors():
    model, opt, scaler = _setup()
    with pytest.raises(AssertionError, match="scale"):
        scaler.step(opt)    # scale() was never called
    _backward(model, scaler)
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    scaler.update()
    opt.zero_grad()
    _backward(model, scaler)
    scaler.unscale_(opt)    # allowed again after update()
    with pytest.raises(RuntimeError, match="Closure"):
        scaler.step(opt, closure=lambda: 0.0)
    fresh = ddp.amp.GradScaler("cpu")
    fresh.scale(ddp.tensor(1.0))
    with pytest.raises(AssertionError, match="No inf checks"):
        fresh.update()          # no unscale_/step this iteration


def test_step_without_any_gradient_raises_as_torch():
    w = ddp.nn.Parameter(ddp.ones(2))
    opt, scaler = ddp.optim.SGD([w], lr=0.1), ddp.amp.GradScaler("cpu")
    scaler.scale(ddp.tensor(1.0))
    with pytest.raises(AssertionError, match="No inf checks were recorded for this optimizer"):
        scaler.step(opt)


def test_float16_gradients_are_refused():
    w = ddp.nn.Parameter(ddp.ones(2).half())
    opt = ddp.optim.SGD([w], lr=0.1)
    scaler = ddp.amp.GradScaler("cpu")
    scaler.scale(w.float().sum()).backward()
    assert w.grad.dtype == ddp.float16
    with pytest.raises(ValueError, match="FP16"):
        scaler.unscale_(opt)


def test_step_returns_the_optimizers_value_and_forwards_arguments():
    class Opt:
        def __init__(self, params):
            self.param_groups = [{"params": list(params)}]
            self.calls = []

        def step(self, *args, **kwargs):
            self.calls.append((args, kwargs))
            return "stepped"

    w = ddp.nn.Parameter(ddp.ones(2))
    opt, scaler = Opt([w]), ddp.amp.GradScaler("cpu")
    scaler.scale(w.sum()).backward()
    assert scaler.step(opt, 1, lr=2) == "stepped" and opt.calls == [((1,), {"lr": 2})]


def test_several_optimizers_one_overflowing():
    ddp.manual_seed(0)
    a, b = ddp.nn.Linear(2, 2), ddp.nn.Linear(2, 2)
    opt_a, opt_b = ddp.optim.SGD(a.parameters(), lr=0.1), ddp.optim.SGD(b.parameters(), lr=0.1)
    scaler = ddp.amp.GradScaler("cpu", init_scale=64.0)
    scaler.scale(a(ddp.ones(1, 2)).sum() + b(ddp.ones(1, 2)).sum()).backward()
    b.weight.grad[0, 0] = float("nan")
    wa, wb = a.weight.detach().numpy().copy(), b.weight.detach().numpy().copy()
    scaler.step(opt_a)
    scaler.step(opt_b)
    scaler.update()
    assert not np.array_equal(a.weight.detach().numpy(), wa)     # a stepped
    np.testing.assert_array_equal(b.weight.detach().numpy(), wb)  # b skipped
    assert scaler.get_scale() == 32.0


def test_update_with_new_scale():
    model, opt, scaler = _setup()
    _backward(model, scaler)
    scaler.update(new_scale=4.0)
    assert scaler.get_scale() == 4.0
    scaler.update(new_scale=ddp.tensor(2.0))
    assert scaler.get_scale() == 2.0
    with pytest.raises(AssertionError):
        scaler.update(new_scale=ddp.ones(2))


def test_state_dict_round_trip():
    model, opt, scaler = _setup(init_scale=32.0, growth_interval=4, backoff_factor=0.25)
    for step in range(3):
        opt.zero_grad()
        _backward(model, scaler, inf=(step == 0))
        scaler.step(opt)
        scaler.update()
    sd = scaler.state_dict()
    assert sd == {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.25,
                  "growth_interval": 4, "_growth_tracker": 2}
    other = ddp.amp.GradScaler("cpu")
    other.load_state_dict(sd)
    assert other.state_dict() == sd and other.get_scale() == 8.0
    # both continue identically: two more clean steps grow the scale
    for s in (scaler, other):
        for _ in range(2):
            opt.zero_grad()
            _backward(model, s)
            s.step(opt)
            s.update()
    assert scaler.get_scale() == other.get_scale() == 16.0
    clone = pickle.loads(pickle.dumps(scaler))
    assert clone.state_dict() == scaler.state_dict()
    _backward(model, scaler)
    scaler.unscale_(opt)
    with pytest.raises(AssertionError, match="pickled"):
        pickle.dumps(scaler)
    with pytest.raises(RuntimeError, match="empty"):
        other.load_state_dict({})


def test_disabled_scaler_passes_through():
    model, opt, _ = _setup()
    scaler = ddp.amp.GradScaler("cpu", enabled=False)
    loss = model(ddp.ones(4, 3)).pow(2).mean()
    assert scaler.scale(loss) is loss
    loss.backward()
    before = _params(model)
    scaler.unscale_(opt)
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    scaler.step(opt)
    scaler.update()
    for p0, p1, g in zip(before, _params(model), grads):
        np.testing.assert_allclose(p1, p0 - 0.1 * g, rtol=1e-6)
    assert not scaler.is_enabled() and scaler.get_scale() == 1.0 and scaler.state_dict() == {}
    scaler.load_state_dict({})   # a no-op


@pytest.mark.skipif(ddp.cuda.is_available(), reason="checks the no-GPU fallback")
def test_cuda_scaler_without_a_gpu_warns_and_disables():
    with pytest.warns(UserWarning, match="CUDA is not available"):
        assert not ddp.amp.GradScaler().is_enabled()
    with pytest.warns(UserWarning, match="CUDA is not available"):
        legacy = ddp.cuda.amp.GradScaler(init_scale=4.0)
    assert not legacy.is_enabled() and type(legacy).__name__ == "GradScaler"


def test_factor_validation_and_accessors():
    with pytest.raises(AssertionError):
        ddp.amp.GradScaler("cpu", growth_factor=1.0)
    with pytest.raises(AssertionError):
        ddp.amp.GradScaler("cpu", backoff_factor=1.0)
    s = ddp.amp.GradScaler("cpu", growth_factor=3.0, backoff_factor=0.1, growth_interval=7)
    assert (s.get_growth_factor(), s.get_backoff_factor(), s.get_growth_interval()) == \
        (3.0, 0.1, 7)
    s.set_growth_factor(4.0)
    s.set_backoff_factor(0.2)
    s.set_growth_interval(9)
    assert (s.get_growth_factor(), s.get_backoff_factor(), s.get_growth_interval()) == \
        (4.0, 0.2, 9)


def test_with_float16_autocast_and_gradient_accumulation_style_loop():
    ddp.manual_seed(0)
    model = ddp.nn.Sequential(ddp.nn.Linear(6, 16), ddp.nn.ReLU(), ddp.nn.Linear(16, 3))
    opt = ddp.optim.SGD(model.parameters(), lr=0.5)
    scaler = ddp.amp.GradScaler("cpu", init_scale=2.0 ** 24, growth_interval=5)
    x = ddp.randn(32, 6)
    y = (x[:, 0] > 0).long()
    losses = []
    for _ in range(40):
        opt.zero_grad()
        with ddp.autocast("cpu", dtype=ddp.float16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(p.grad.dtype == ddp.float32 for p in model.parameters())
    assert scaler.get_scale() < 2.0 ** 24      # backed off from an overflowing start
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------- across ranks

class _FakeWorld:
    """ddp.distributed's API as seen by rank 0 of 2; the other rank's found-inf flag is
    ``remote``. Records each all_reduce (op, value sent)."""

    def __init__(self, monkeypatch, remote):
        self.remote, self.calls = remote, []
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        assert op == dist.ReduceOp.MAX and tensor.numel() == 1
        self.calls.append(tensor.item())
        tensor._data[...] = max(tensor.item(), self.remote)


def test_found_inf_is_reduced_across_ranks_in_unscale(monkeypatch):
    world = _FakeWorld(monkeypatch, remote=1.0)   # only the other rank overflowed
    model, opt, scaler = _setup(init_scale=64.0)
    before = _params(model)
    _backward(model, scaler)
    scaler.unscale_(opt)
    assert world.calls == [0.0]            # reduced here, before any clipping
    ddp.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert scaler.step(opt) is None        # skipped although this rank's gradients are finite
    scaler.update()
    assert world.calls == [0.0]            # once per step
    for a, b in zip(_params(model), before):
        np.testing.assert_array_equal(a, b)
    assert scaler.get_scale() == 32.0 and scaler._get_growth_tracker() == 0

    world.remote = 0.0                     # both ranks clean: the step is taken
    opt.zero_grad()
    _backward(model, scaler)
    scaler.step(opt)                       # unscale_ inside step reduces too
    scaler.update()
    assert world.calls == [0.0, 0.0]
    assert not np.array_equal(_params(model)[0], before[0])
    assert scaler._get_growth_tracker() == 1

    opt.zero_grad()                        # this rank overflows: it tells the other one
    _backward(model, scaler, inf=True)
    scaler.step(opt)
    scaler.update()
    assert world.calls == [0.0, 0.0, 1.0] and scaler.get_scale() == 16.0


def test_single_process_group_does_not_communicate(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("no all_reduce for one rank")
    monkeypatch.setattr(dist, "all_reduce", fail)
    model, opt, scaler = _setup()
    _backward(model, scaler)
    scaler.step(opt)        # not initialised
    scaler.update()
    dist.init_process_group("single")
    try:
        opt.zero_grad()
        _backward(model, scaler)
        scaler.step(opt)    # initialised with world size 1
        scaler.update()
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------- against PyTorch

def test_trajectory_matches_torch_grad_scaler(oracle):
    """The same tiny model, data and inf pattern give the same scales, growth trackers and
    parameters as torch.amp.GradScaler('cpu')."""
    rng = np.random.default_rng(0)
    w0, b0 = rng.standard_normal((2, 3)).astype(np.float32), np.zeros(2, np.float32)
    xs = rng.standard_normal((12, 5, 3)).astype(np.float32)
    inf_steps = {1, 2, 6, 9}
    kwargs = dict(init_scale=2.0 ** 10, growth_factor=3.0, backoff_factor=0.3,
                  growth_interval=2)

    def run(M, scaler):
        w = M.nn.Parameter(M.tensor(w0.copy()))
        b = M.nn.Parameter(M.tensor(b0.copy()))
        opt = M.optim.SGD([w, b], lr=0.05, momentum=0.9)
        scales, trackers = [], []
        for step, x in enumerate(xs):
            opt.zero_grad()
            loss = M.nn.functional.linear(M.tensor(x), w, b).pow(2).mean()
            scaler.scale(loss).backward()
            if step in inf_steps:
                w.grad[1, 2] = float("inf") if step % 2 else float("nan")
            scaler.unscale_(opt)
            M.nn.utils.clip_grad_norm_([w, b], 1.0)
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
            trackers.append(scaler._get_growth_tracker())
        return scales, trackers, w.detach().numpy(), b.detach().numpy()

    ours = run(ddp, ddp.amp.GradScaler("cpu", **kwargs))
    theirs = oracle(lambda torch: {
        "run": run(torch, torch.amp.GradScaler("cpu", **kwargs)),
        "keys": list(torch.amp.GradScaler("cpu", **kwargs).state_dict().keys())})
    scales, trackers, w, b = theirs["run"]
    assert ours[0] == [float(v) for v in scales]            # bit-identical float32 scales
    assert ours[1] == [int(v) for v in trackers]
    np.testing.assert_allclose(ours[2], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours[3], b, rtol=1e-5, atol=1e-6)
    assert list(ddp.amp.GradScaler("cpu", **kwargs).state_dict().keys()) == theirs["keys"]
