"""Optimizers: ``ddp.optim`` SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam,
ASGD, Rprop and Adafactor (LBFGS and SparseAdam: test_lbfgs_sparse_adam.py; Muon: test_muon.py;
swa_utils: test_swa_utils.py).

Trajectories (10 steps on a small quadratic whose gradient is ``h * x + r_t``, with fixed random
``h`` and ``r_t``) are checked against the published update formulas written here in NumPy
(float64, tight tolerance) for every option, and against ``torch.optim`` in float32 and float64
through the recorded oracle (tests/oracle.py: PyTorch's answers are in
tests/oracle_data/optim__test_optimizers.npz, re-checked live where torch is installed). Also:
param groups, add_param_group, argument errors (PyTorch's messages), zero_grad, state_dict round
trips (bit-identical continuation, PyTorch's layout, PyTorch's state loaded into ours and ours
into PyTorch's), hooks, closures and printing.
"""
import copy
import pickle

import numpy as np
import pytest

import ddp
import ddp.optim as optim

STEPS = 10
SHAPES = [(3, 4), (5,)]
RNG = np.random.default_rng(1234)
X0 = [RNG.standard_normal(s) for s in SHAPES]
H = [RNG.uniform(0.5, 2.0, s) for s in SHAPES]          # curvature of the quadratic
R = [[RNG.standard_normal(s) for s in SHAPES] for _ in range(2 * STEPS)]  # gradient noise


def gradient(i, t, x):
    """The gradient of parameter ``i`` at step ``t`` (0-based) and value ``x``."""
    return (H[i] * x + R[t][i]).astype(x.dtype)


# ---------------------------------------------------------------------- reference formulas
# The update rules as published (PyTorch's documentation pseudo-code), one step on float64
# NumPy arrays; ``s`` is a dict of per-parameter state, ``t`` the 1-based step number.

def ref_sgd(x, g, s, t, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
            maximize=False):
    g = -g if maximize else g
    g = g + weight_decay * x
    if momentum:
        s["b"] = g.copy() if t == 1 else momentum * s["b"] + (1 - dampening) * g
        g = g + momentum * s["b"] if nesterov else s["b"]
    return x - lr * g


def ref_adam(x, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
             maximize=False, decoupled=False):
    b1, b2 = betas
    g = -g if maximize else g
    if decoupled:
        x = x * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * x
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    v = s["v"]
    if amsgrad:
        v = s["vmax"] = np.maximum(s.get("vmax", 0), s["v"])
    m_hat = s["m"] / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    return x - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(x, g, s, t, weight_decay=1e-2, **kw):
    return ref_adam(x, g, s, t, weight_decay=weight_decay, decoupled=True, **kw)


def ref_rmsprop(x, g, s, t, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                centered=False, maximize=False):
    g = -g if maximize else g
    g = g + weight_decay * x
    s["v"] = alpha * s.get("v", 0) + (1 - alpha) * g * g
    v = s["v"]
    if centered:
        s["ga"] = alpha * s.get("ga", 0) + (1 - alpha) * g
        v = v - s["ga"] ** 2
    if momentum > 0:
        s["b"] = momentum * s.get("b", 0) + g / (np.sqrt(v) + eps)
        return x - lr * s["b"]
    return x - lr * g / (np.sqrt(v) + eps)


def ref_adagrad(x, g, s, t, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                eps=1e-10, maximize=False):
    g = -g if maximize else g
    g = g + weight_decay * x
    clr = lr / (1 + (t - 1) * lr_decay)
    s["sum"] = s.get("sum", initial_accumulator_value) + g * g
    return x - clr * g / (np.sqrt(s["sum"]) + eps)


def ref_adadelta(x, g, s, t, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False):
    g = -g if maximize else g
    g = g + weight_decay * x
    s["v"] = rho * s.get("v", 0) + (1 - rho) * g * g
    delta = np.sqrt(s.get("u", 0) + eps) / np.sqrt(s["v"] + eps) * g
    s["u"] = rho * s.get("u", 0) + (1 - rho) * delta * delta
    return x - lr * delta


def ref_adamax(x, g, s, t, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
               maximize=False):
    b1, b2 = betas
    g = -g if maximize else g
    g = g + weight_decay * x
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["u"] = np.maximum(b2 * s.get("u", 0), np.abs(g) + eps)
    return x - lr / (1 - b1 ** t) * s["m"] / s["u"]


def _f32(v):
    """PyTorch keeps NAdam's mu_product and ASGD's eta and mu in 0-d tensors of the default
    dtype (float32), also for float64 parameters: the reference rounds them the same way."""
    return float(np.float32(v))


def ref_nadam(x, g, s, t, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
              momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False):
    b1, b2 = betas
    g = -g if maximize else g
    if decoupled_weight_decay:
        x = x * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * x
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    s["mu_product"] = _f32(s.get("mu_product", 1.0) * _f32(mu))
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    denom = np.sqrt(s["v"] / (1 - b2 ** t)) + eps
    return (x - lr * (1 - mu) / (1 - s["mu_product"]) * g / denom
            - lr * mu_next / (1 - s["mu_product"] * mu_next) * s["m"] / denom)


def ref_radam(x, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
              decoupled_weight_decay=False, maximize=False):
    b1, b2 = betas
    g = -g if maximize else g
    if decoupled_weight_decay:
        x = x * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * x
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    m_hat = s["m"] / (1 - b1 ** t)
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    if rho <= 5:
        return x - lr * m_hat
    rect = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    return x - lr * m_hat * rect * np.sqrt(1 - b2 ** t) / (np.sqrt(s["v"]) + eps)


def ref_asgd(x, g, s, t, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0,
             maximize=False):
    g = -g if maximize else g
    g = g + weight_decay * x
    eta, mu = s.get("eta", _f32(lr)), s.get("mu", 1.0)
    x = x * (1 - lambd * eta) - eta * g
    s["ax"] = x.copy() if mu == 1 else s["ax"] + mu * (x - s["ax"])
    s["eta"] = _f32(lr / (1 + lambd * lr * t) ** alpha)
    s["mu"] = _f32(1 / max(1, t - t0))
    return x


def ref_rprop(x, g, s, t, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False):
    g = -g if maximize else g
    product = g * s.get("prev", 0)
    s["size"] = np.clip(s.get("size", np.full_like(x, lr))
                        * np.where(product > 0, etas[1], np.where(product < 0, etas[0], 1)),
                        *step_sizes)
    g = np.where(product < 0, 0, g)   # a sign flip: no step now, and no flip test next time
    s["prev"] = g
    return x - np.sign(g) * s["size"]


def ref_adafactor(x, g, s, t, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                  weight_decay=0.0, maximize=False):
    g = -g if maximize else g
    eps1 = np.finfo(x.dtype).eps if eps[0] is None else eps[0]
    beta = t ** beta2_decay
    alpha = max(eps[1], np.sqrt(np.mean(x * x))) * min(lr, 1 / np.sqrt(t))
    x = x * (1 - lr * weight_decay)
    if g.ndim > 1:   # the second moment factored into row and column means
        s["r"] = (1 - beta) * s.get("r", 0) + beta * np.mean(g * g, axis=-1, keepdims=True)
        s["c"] = (1 - beta) * s.get("c", 0) + beta * np.mean(g * g, axis=-2, keepdims=True)
        v = s["r"] @ s["c"] / np.maximum(np.mean(s["r"], axis=-2, keepdims=True), eps1)
    else:
        s["v"] = (1 - beta) * s.get("v", 0) + beta * g * g
        v = s["v"]
    u = g / np.sqrt(np.maximum(v, eps1 ** 2))
    return x - alpha / max(1, np.sqrt(np.mean(u * u)) / d) * u


REFERENCES = {"SGD": ref_sgd, "Adam": ref_adam, "AdamW": ref_adamw, "RMSprop": ref_rmsprop,
              "Adagrad": ref_adagrad, "Adadelta": ref_adadelta, "Adamax": ref_adamax,
              "NAdam": ref_nadam, "RAdam": ref_radam, "ASGD": ref_asgd, "Rprop": ref_rprop,
              "Adafactor": ref_adafactor}

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.1)),
    ("SGD", dict(lr=0.1, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True)),
    ("Adam", dict(lr=0.1)),
    ("Adam", dict(lr=0.1, weight_decay=0.1)),
    ("Adam", dict(lr=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.1, maximize=True)),
    ("Adam", dict(lr=0.05, betas=(0.3, 0.5), eps=1e-3)),  # 1 - beta1 >= 0.5: lerp's other branch
    ("Adam", dict(lr=0.1, betas=(0.8, 0.9), weight_decay=0.05, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.1)),
    ("AdamW", dict(lr=0.1, weight_decay=0.0)),
    ("AdamW", dict(lr=0.1, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.5)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1,
                     maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-3)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.05, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.5)),
    ("Adadelta", dict(weight_decay=0.1, eps=1e-4)),
    ("Adadelta", dict(lr=0.9, rho=0.8, weight_decay=0.05, maximize=True)),
    ("Adamax", dict()),
    ("Adamax", dict(lr=0.1)),
    ("Adamax", dict(lr=0.1, weight_decay=0.1)),
    ("Adamax", dict(lr=0.1, maximize=True)),
    ("Adamax", dict(lr=0.05, betas=(0.3, 0.5), eps=1e-3, weight_decay=0.05, maximize=True)),
    ("NAdam", dict()),
    ("NAdam", dict(lr=0.1)),
    ("NAdam", dict(lr=0.1, weight_decay=0.1)),
    ("NAdam", dict(lr=0.1, weight_decay=0.1, decoupled_weight_decay=True)),
    ("NAdam", dict(lr=0.1, momentum_decay=0.1, maximize=True)),
    ("NAdam", dict(lr=0.05, betas=(0.3, 0.5), eps=1e-3)),
    ("RAdam", dict()),                                    # rho_t > 5 from step 6 on
    ("RAdam", dict(lr=0.1, weight_decay=0.1)),
    ("RAdam", dict(lr=0.1, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3)),
    ("ASGD", dict()),
    ("ASGD", dict(lr=0.1)),
    ("ASGD", dict(lr=0.05, lambd=0.01, alpha=0.5, t0=3)),  # averaging starts at step 4
    ("ASGD", dict(lr=0.05, t0=2, weight_decay=0.1, maximize=True)),
    ("Rprop", dict()),
    ("Rprop", dict(lr=0.1)),
    ("Rprop", dict(lr=0.1, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2))),  # both bounds are hit
    ("Rprop", dict(lr=0.05, maximize=True)),
    ("Adafactor", dict()),
    ("Adafactor", dict(lr=0.05, weight_decay=0.1)),
    ("Adafactor", dict(lr=0.1, eps=(1e-4, 1e-2), d=1.5, beta2_decay=-0.5, maximize=True)),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
            for name, kw in CASES]


def make_params(lib, dtype, values=X0):
    return [lib.nn.Parameter(lib.tensor(np.array(x, dtype=dtype))) for x in values]


def values(params):
    return [np.array(p.detach().numpy(), copy=True) for p in params]


def run(lib, opt, params, steps, start=0):
    """``steps`` steps of ``opt`` with the fixed gradients; returns the values after each."""
    trajectory = []
    for t in range(start, start + steps):
        for i, p in enumerate(params):
            p.grad = lib.tensor(gradient(i, t, p.detach().numpy()))
        opt.step()
        trajectory.append(values(params))
    return trajectory


def flat(trajectory):
    """A trajectory as one (steps, numel) array: one record entry instead of one per value."""
    return np.stack([np.concatenate([v.ravel() for v in step]) for step in trajectory])


def reference_trajectory(name, kw):
    xs = [x.copy() for x in X0]
    states = [{} for _ in xs]
    out = []
    for t in range(STEPS):
        xs = [REFERENCES[name](x, gradient(i, t, x), s, t + 1, **kw)
              for i, (x, s) in enumerate(zip(xs, states))]
        out.append([x.copy() for x in xs])
    return out


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_trajectory_matches_published_formulas(name, kw):
    params = make_params(ddp, np.float64)
    ours = run(ddp, getattr(optim, name)(params, **kw), params, STEPS)
    for step, (got, want) in enumerate(zip(ours, reference_trajectory(name, kw))):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("dtype,rtol,atol", [(np.float32, 2e-5, 2e-6), (np.float64, 1e-11, 1e-13)],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_trajectory_matches_torch(oracle, name, kw, dtype, rtol, atol):
    def reference(torch):
        tparams = make_params(torch, dtype)
        return flat(run(torch, getattr(torch.optim, name)(tparams, **kw), tparams, STEPS))

    theirs = oracle(reference)
    params = make_params(ddp, dtype)
    ours = flat(run(ddp, getattr(optim, name)(params, **kw), params, STEPS))
    assert ours.dtype == theirs.dtype
    for step, (got, want) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"step {step + 1}")


def test_float32_state_stays_float32():
    params = make_params(ddp, np.float32)
    opt = optim.Adam(params, lr=0.1, amsgrad=True)
    run(ddp, opt, params, 2)
    state = opt.state[params[0]]
    assert state["step"].dtype == ddp.float32 and state["step"].shape == ()
    assert state["step"].device.type == "cpu" and state["step"].item() == 2.0
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert state[key].dtype == ddp.float32 and state[key].shape == params[0].shape
    assert all(p.dtype == ddp.float32 for p in params)


def test_step_bumps_the_version_and_skips_params_without_grad():
    a, b = make_params(ddp, np.float32)
    opt = optim.SGD([a, b], lr=0.1)
    a.grad = ddp.ones_like(a)
    before_a, before_b, version = values([a])[0], values([b])[0], a._version
    opt.step()
    np.testing.assert_allclose(values([a])[0], before_a - 0.1, rtol=1e-6)
    np.testing.assert_array_equal(values([b])[0], before_b)
    assert a._version > version
    assert b not in opt.state


# ---------------------------------------------------------------------- param groups

def test_param_groups_with_different_lrs():
    a, b = make_params(ddp, np.float64)
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.01}], lr=0.1, momentum=0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert opt.param_groups[1]["momentum"] == 0.5 and opt.param_groups[1]["params"] == [b]
    a.grad, b.grad = ddp.ones_like(a), ddp.ones_like(b)
    opt.step()
    np.testing.assert_allclose(a.detach().numpy(), X0[0] - 0.1)
    np.testing.assert_allclose(b.detach().numpy(), X0[1] - 0.01)


def test_add_param_group_fills_defaults_and_steps_the_new_group():
    a, b = make_params(ddp, np.float64)
    opt = optim.Adam([a], lr=0.1, betas=(0.8, 0.9))
    opt.add_param_group({"params": b, "lr": 0.5})
    group = opt.param_groups[1]
    assert group["lr"] == 0.5 and group["betas"] == (0.8, 0.9) and group["params"] == [b]
    b.grad = ddp.ones_like(b)
    opt.step()
    np.testing.assert_allclose(b.detach().numpy(), X0[1] - 0.5, atol=1e-7)  # lr * sign(grad)
    assert a not in opt.state


def test_named_parameters_keep_their_names():
    model = ddp.nn.Linear(2, 1)
    opt = optim.SGD(model.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]


def test_parameter_in_two_groups_is_an_error():
    a, b = make_params(ddp, np.float32)
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        optim.SGD([{"params": [a, b]}, {"params": [a]}], lr=0.1)
    opt = optim.SGD([a], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [b, a]})
    assert len(opt.param_groups) == 1


def test_duplicate_parameter_in_a_group_warns():
    a, _ = make_params(ddp, np.float32)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        optim.SGD([a, a], lr=0.1)


@pytest.mark.parametrize("params,error,message", [
    ([], ValueError, "optimizer got an empty parameter list"),
    ([3.0], TypeError, "optimizer can only optimize Tensors, but one of the params is float"),
    ([{"params": {ddp.ones(1, requires_grad=True)}}], TypeError, "ordered collections"),
], ids=["empty", "non-tensor", "set"])
def test_bad_params(params, error, message):
    with pytest.raises(error, match=message):
        optim.SGD(params, lr=0.1)


def test_tensor_and_non_leaf_params_are_errors():
    x = ddp.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts, but got "
                                        "ddp.FloatTensor"):
        optim.SGD(x, lr=0.1)
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        optim.SGD([x * 2], lr=0.1)
    with pytest.raises(TypeError, match="param_group must be a dict"):
        optim.SGD([x], lr=0.1).add_param_group([x])


def test_required_default():
    from ddp.optim.optimizer import required

    class Plain(optim.Optimizer):
        def __init__(self, params, lr=required):
            super().__init__(params, {"lr": lr})

    x = ddp.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="didn't specify a value of required optimization "
                                         "parameter lr"):
        Plain([x])
    assert Plain([{"params": [x], "lr": 0.5}]).param_groups[0]["lr"] == 0.5


INVALID = [
    ("SGD", dict(lr=-1), "Invalid learning rate: -1"),
    ("SGD", dict(lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
    ("SGD", dict(lr=0.1, weight_decay=-1e-4), "Invalid weight_decay value: -0.0001"),
    ("SGD", dict(lr=0.1, nesterov=True),
     "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov momentum requires"),
    ("Adam", dict(lr=-0.1), "Invalid learning rate: -0.1"),
    ("Adam", dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
    ("Adam", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    ("Adam", dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    ("Adam", dict(weight_decay=-1), "Invalid weight_decay value: -1"),
    ("AdamW", dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
    ("RMSprop", dict(alpha=-0.1), "Invalid alpha value: -0.1"),
    ("RMSprop", dict(momentum=-1), "Invalid momentum value: -1"),
    ("RMSprop", dict(eps=-1), "Invalid epsilon value: -1"),
    ("Adagrad", dict(lr_decay=-1), "Invalid lr_decay value: -1"),
    ("Adagrad", dict(initial_accumulator_value=-1), "Invalid initial_accumulator_value value: -1"),
    ("Adagrad", dict(eps=-1), "Invalid epsilon value: -1"),
    ("Adadelta", dict(rho=1.5), "Invalid rho value: 1.5"),
    ("Adadelta", dict(weight_decay=-1), "Invalid weight_decay value: -1"),
    ("Adamax", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("Adamax", dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    ("Adamax", dict(eps=-1), "Invalid epsilon value: -1"),
    ("NAdam", dict(momentum_decay=-0.5), "Invalid momentum_decay value: -0.5"),
    ("NAdam", dict(weight_decay=-1), "Invalid weight_decay value: -1"),
    ("RAdam", dict(betas=(-0.1, 0.9)), "Invalid beta parameter at index 0: -0.1"),
    ("RAdam", dict(eps=-1e-3), "Invalid epsilon value: -0.001"),
    ("ASGD", dict(lr=-0.5), "Invalid learning rate: -0.5"),
    ("ASGD", dict(weight_decay=-2), "Invalid weight_decay value: -2"),
    ("Rprop", dict(etas=(1.5, 1.2)), "Invalid eta values: 1.5, 1.2"),
    ("Rprop", dict(etas=(0.5, 0.9)), "Invalid eta values: 0.5, 0.9"),
    ("Rprop", dict(lr=-0.1), "Invalid learning rate: -0.1"),
    ("SparseAdam", dict(lr=0.0), "Invalid learning rate: 0.0"),          # must be positive
    ("SparseAdam", dict(eps=0.0), "Invalid epsilon value: 0.0"),
    ("SparseAdam", dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    ("LBFGS", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("Adafactor", dict(lr=-1.0), "Learning rate should be >= 0 but is: -1.0"),
    ("Adafactor", dict(beta2_decay=0.5), "beta2_decay should be <= 0 but is: 0.5"),
    ("Adafactor", dict(eps=(-1.0, 1e-3)), "epsilon1 should be >= 0 but is: -1.0"),
    ("Adafactor", dict(d=0.5), "Clipping threshold d should be >= 1 but is: 0.5"),
]


@pytest.mark.parametrize("name,kw,message", INVALID, ids=[m for _, _, m in INVALID])
def test_invalid_arguments(oracle, name, kw, message):
    def reference(torch):
        with pytest.raises(ValueError) as info:
            getattr(torch.optim, name)([torch.ones(2, requires_grad=True)], **kw)
        return str(info.value)

    x = ddp.ones(2, requires_grad=True)
    with pytest.raises(ValueError) as info:
        getattr(optim, name)([x], **kw)
    assert message in str(info.value)
    assert str(info.value) == oracle(reference)  # PyTorch says the same


def test_differentiable_is_refused():
    with pytest.raises(NotImplementedError, match="differentiable"):
        optim.Adam([ddp.ones(2, requires_grad=True)], differentiable=True)


# ---------------------------------------------------------------------- zero_grad

def test_zero_grad_set_to_none_and_in_place():
    a, b = make_params(ddp, np.float32)
    opt = optim.SGD([a, b], lr=0.1)
    a.grad, b.grad = ddp.ones_like(a), None
    grad = a.grad
    opt.zero_grad(set_to_none=False)
    assert a.grad is grad and float(grad.abs().sum()) == 0.0 and b.grad is None
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_zero_grad_detaches_a_grad_with_history():
    a, _ = make_params(ddp, np.float32)
    a.grad = ddp.ones_like(a, requires_grad=True) * 2
    optim.SGD([a], lr=0.1).zero_grad(set_to_none=False)
    assert a.grad.grad_fn is None and not a.grad.requires_grad


# ---------------------------------------------------------------------- state_dict

ROUND_TRIP = [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
              ("Adam", dict(lr=0.1, amsgrad=True)),
              ("AdamW", dict(lr=0.1)),
              ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
              ("Adagrad", dict(lr=0.1, lr_decay=0.1)),
              ("Adadelta", dict()),
              ("Adamax", dict(lr=0.1, weight_decay=0.1)),
              ("NAdam", dict(lr=0.1, decoupled_weight_decay=True, weight_decay=0.1)),
              ("RAdam", dict(lr=0.1)),
              ("ASGD", dict(lr=0.05, t0=3, lambd=0.01)),
              ("Rprop", dict(lr=0.1)),
              ("Adafactor", dict(lr=0.05, weight_decay=0.1))]


@pytest.mark.parametrize("name,kw", ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
@pytest.mark.parametrize("copier", ["deepcopy", "pickle"])
def test_state_dict_round_trip_continues_bit_identically(name, kw, copier):
    params = make_params(ddp, np.float32)
    straight = run(ddp, getattr(optim, name)(params, **kw), params, 2 * STEPS // 2)

    params = make_params(ddp, np.float32)
    opt = getattr(optim, name)(params, **kw)
    run(ddp, opt, params, 5)
    saved = (copy.deepcopy(opt.state_dict()) if copier == "deepcopy"
             else pickle.loads(pickle.dumps(opt.state_dict())))
    resumed_params = make_params(ddp, np.float32, values(params))
    fresh = getattr(optim, name)(resumed_params, **kw)
    fresh.load_state_dict(saved)
    resumed = run(ddp, fresh, resumed_params, 5, start=5)
    for got, want in zip(resumed, straight[5:]):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_state_dict_layout():
    params = make_params(ddp, np.float32)
    opt = optim.Adam([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.5}], lr=0.1)
    run(ddp, opt, params, 3)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sorted(sd["state"]) == [0, 1]
    assert sorted(sd["state"][0]) == ["exp_avg", "exp_avg_sq", "step"]
    step = sd["state"][1]["step"]
    assert isinstance(step, ddp.Tensor) and step.shape == () and step.dtype == ddp.float32
    assert step.item() == 3.0
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert sd["param_groups"][1]["lr"] == 0.5
    assert sd["state"][0]["exp_avg"] is opt.state[params[0]]["exp_avg"]  # live, as in PyTorch


def test_sgd_without_momentum_has_no_state_and_adagrad_has_state_at_once():
    params = make_params(ddp, np.float32)
    opt = optim.SGD(params, lr=0.1)
    run(ddp, opt, params, 1)
    assert opt.state_dict()["state"] == {}
    sd = optim.Adagrad(params, initial_accumulator_value=0.25).state_dict()
    assert sorted(sd["state"]) == [0, 1] and sd["state"][0]["step"].item() == 0.0
    np.testing.assert_array_equal(sd["state"][1]["sum"].numpy(), np.full(5, 0.25, np.float32))


def test_load_state_dict_checks_groups_and_sizes():
    a, b = make_params(ddp, np.float32)
    sd = optim.SGD([a, b], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        optim.SGD([a], lr=0.1).load_state_dict(sd)


def test_load_state_dict_casts_state_to_the_parameter_dtype_but_keeps_step():
    params = make_params(ddp, np.float32)
    opt = optim.Adam(params, lr=0.1)
    run(ddp, opt, params, 2)
    sd = copy.deepcopy(opt.state_dict())
    for s in sd["state"].values():
        s["exp_avg"] = s["exp_avg"].double()
        s["step"] = s["step"].double()
    sd["param_groups"][0]["lr"] = 0.25
    fresh = optim.Adam(params, lr=0.1)
    fresh.load_state_dict(sd)
    state = fresh.state[params[0]]
    assert state["exp_avg"].dtype == ddp.float32 and state["step"].dtype == ddp.float64
    assert fresh.param_groups[0]["lr"] == 0.25 and fresh.param_groups[0]["params"] == params


def test_load_plain_number_step_from_old_checkpoints():
    params = make_params(ddp, np.float32)
    opt = optim.Adam(params, lr=0.1)
    run(ddp, opt, params, 2)
    sd = copy.deepcopy(opt.state_dict())
    for s in sd["state"].values():
        s["step"] = 2
    fresh = optim.Adam(params, lr=0.1)
    fresh.load_state_dict(sd)
    assert isinstance(fresh.state[params[0]]["step"], ddp.Tensor)
    run(ddp, fresh, params, 1, start=2)
    assert fresh.state[params[0]]["step"].item() == 3.0


def _numpy_state_dict(sd):
    """An optimizer state_dict (ddp's or torch's) as the oracle records it: tensors as arrays,
    parameter indices as strings."""
    def plain(v):
        if hasattr(v, "detach"):
            return np.array(v.detach().cpu().numpy(), copy=True)
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(plain(x) for x in v)
        return v
    return {"state": plain(sd["state"]), "param_groups": plain(sd["param_groups"])}


def _state_dict_from_record(lib, sd):
    """A recorded state_dict made whole again for ``lib`` (ddp or torch): tensors, int indices,
    Python numbers (the record keeps numbers as 0-d arrays)."""
    def number(v):
        if isinstance(v, np.ndarray):
            return v.item() if v.ndim == 0 else [number(x) for x in v]
        if isinstance(v, (list, tuple)):
            return type(v)(number(x) for x in v)
        return v
    state = {int(k): {key: lib.tensor(v) for key, v in entry.items()}
             for k, entry in sd["state"].items()}
    groups = [{k: number(v) for k, v in g.items()} for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


@pytest.mark.parametrize("name,kw", ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_torch_state_dict_loads_and_keys_match(oracle, name, kw):
    def reference(torch):
        tparams = make_params(torch, np.float32)
        topt = getattr(torch.optim, name)(tparams, **kw)
        run(torch, topt, tparams, 5)
        return {"values": values(tparams), "state_dict": _numpy_state_dict(topt.state_dict()),
                "continued": flat(run(torch, topt, tparams, 5, start=5))}

    ref = oracle(reference)
    tsd = ref["state_dict"]
    params = make_params(ddp, np.float32, ref["values"])
    opt = getattr(optim, name)(params, **kw)
    opt.load_state_dict(_state_dict_from_record(ddp, tsd))
    sd = opt.state_dict()
    assert [sorted(g) for g in sd["param_groups"]] == [sorted(g) for g in tsd["param_groups"]]
    assert {str(k): sorted(v) for k, v in sd["state"].items()} == \
           {k: sorted(v) for k, v in tsd["state"].items()}
    for key, value in tsd["param_groups"][0].items():
        ours = sd["param_groups"][0][key]
        assert (ours is None and value is None) or np.all(np.asarray(ours) == value), key
    for key, value in tsd["state"]["0"].items():
        assert sd["state"][0][key].shape == value.shape, key
        assert sd["state"][0][key].dtype.name == str(value.dtype), key
    if "step" in sd["state"][0]:
        assert sd["state"][0]["step"].dtype == ddp.float32 and sd["state"][0]["step"].item() == 5

    ours = flat(run(ddp, opt, params, 5, start=5))
    np.testing.assert_allclose(ours, ref["continued"], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name,kw", ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_our_state_dict_loads_into_torch(oracle, name, kw):
    params = make_params(ddp, np.float32)
    opt = getattr(optim, name)(params, **kw)
    run(ddp, opt, params, 5)
    start, sd = values(params), _numpy_state_dict(opt.state_dict())

    def reference(torch):
        tparams = make_params(torch, np.float32, start)
        topt = getattr(torch.optim, name)(tparams, **kw)
        topt.load_state_dict(_state_dict_from_record(torch, sd))
        return flat(run(torch, topt, tparams, 5, start=5))

    ours = flat(run(ddp, opt, params, 5, start=5))
    np.testing.assert_allclose(ours, oracle(reference), rtol=2e-5, atol=2e-6)


def test_fresh_state_dict_keys_match_torch(oracle):
    def reference(torch):
        return [(list(getattr(torch.optim, name)(make_params(torch, np.float32), **kw)
                      .state_dict()["param_groups"][0]),
                 repr(getattr(torch.optim, name)(make_params(torch, np.float32), **kw)))
                for name, kw in ROUND_TRIP]

    for (name, kw), (keys, text) in zip(ROUND_TRIP, oracle(reference)):
        ours = getattr(optim, name)(make_params(ddp, np.float32), **kw)
        assert list(ours.state_dict()["param_groups"][0]) == list(keys), name
        assert repr(ours) == text, name


@pytest.mark.gpu
@pytest.mark.parametrize("name,kw", ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_cuda_parameters_match_cpu(name, kw):
    cpu = make_params(ddp, np.float32)
    gpu = [ddp.nn.Parameter(p.detach().to("cuda")) for p in cpu]
    opt_cpu, opt_gpu = getattr(optim, name)(cpu, **kw), getattr(optim, name)(gpu, **kw)
    for t in range(STEPS):
        for i, (pc, pg) in enumerate(zip(cpu, gpu)):
            g = gradient(i, t, pc.detach().numpy())
            pc.grad, pg.grad = ddp.tensor(g), ddp.tensor(g, device="cuda")
        opt_cpu.step()
        opt_gpu.step()
    for pc, pg in zip(cpu, gpu):
        assert pg.device.type == "cuda"
        np.testing.assert_allclose(pg.detach().cpu().numpy(), pc.detach().numpy(), rtol=2e-5,
                                   atol=2e-6)
    state = opt_gpu.state[gpu[0]]
    for key, value in state.items():  # step counters stay on the CPU, as in PyTorch
        on_host = key in ("step", "mu_product")
        assert value.device.type == ("cpu" if on_host else "cuda"), key


# ---------------------------------------------------------------------- hooks and closures

def test_step_hooks_run_in_order_and_remove():
    a, _ = make_params(ddp, np.float32)
    opt = optim.SGD([a], lr=0.1)
    calls = []
    pre = opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", o, args)))
    post = opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", o, args)))
    opt.step()
    assert calls == [("pre", opt, (opt,)), ("post", opt, (opt,))]  # args hold self, as in PyTorch
    pre.remove()
    post.remove()
    opt.step()
    assert len(calls) == 2


def test_pre_hook_can_replace_the_arguments():
    a, _ = make_params(ddp, np.float32)
    opt = optim.SGD([a], lr=0.1)
    opt.register_step_pre_hook(lambda o, args, kwargs: (args, {"closure": lambda: 42}))
    assert opt.step() == 42
    opt.register_step_pre_hook(lambda o, args, kwargs: "bad")
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt.step()


def test_global_step_hooks():
    from ddp.optim.optimizer import (register_optimizer_step_post_hook,
                                     register_optimizer_step_pre_hook)
    a, _ = make_params(ddp, np.float32)
    opt = optim.Adam([a])
    calls = []
    handles = [register_optimizer_step_pre_hook(lambda o, args, kw: calls.append("pre")),
               register_optimizer_step_post_hook(lambda o, args, kw: calls.append("post"))]
    try:
        opt.step()
    finally:
        for h in handles:
            h.remove()
    opt.step()
    assert calls == ["pre", "post"]


def test_custom_optimizer_step_gets_hooks_once():
    class Halve(optim.SGD):
        def step(self, closure=None):
            self.calls = getattr(self, "calls", 0) + 1
            return super().step(closure)

    a, _ = make_params(ddp, np.float32)
    opt = Halve([a], lr=0.1)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kw: seen.append(1))
    opt.step()
    assert seen == [1] and opt.calls == 1


def test_closure_runs_with_grad_enabled_and_returns_the_loss():
    w = ddp.nn.Parameter(ddp.tensor([3.0]))
    opt = optim.SGD([w], lr=0.1)
    enabled = []

    def closure():
        enabled.append(ddp.is_grad_enabled())
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with ddp.no_grad():
        loss = opt.step(closure)
    assert enabled == [True] and loss.item() == 9.0
    assert w.item() == pytest.approx(3.0 - 0.1 * 6.0)


def test_training_a_linear_model_reduces_the_loss():
    ddp.manual_seed(0)
    model = ddp.nn.Linear(3, 1)
    x = ddp.randn(64, 3)
    y = x @ ddp.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    opt = optim.AdamW(model.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-2 * losses[0]


def test_repr():
    a, _ = make_params(ddp, np.float32)
    text = repr(optim.SGD([a], lr=0.1, momentum=0.9))
    assert text.startswith("SGD (\nParameter Group 0\n    dampening: 0\n")
    assert "    momentum: 0.9\n" in text and text.endswith("weight_decay: 0\n)")


def test_state_dict_hooks_run_in_order_and_may_replace_the_dict():
    a, _ = make_params(ddp, np.float32)
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("pre"))
    opt.register_state_dict_pre_hook(lambda o: calls.append("pre-first"), prepend=True)
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("post"))
    handle = opt.register_state_dict_post_hook(lambda o, sd: {**sd, "epoch": 7})
    sd = opt.state_dict()
    assert calls == ["pre-first", "pre", "post"] and sd["epoch"] == 7
    handle.remove()
    assert "epoch" not in opt.state_dict()

    loaded = []
    opt.register_load_state_dict_pre_hook(lambda o, d: {**d, "param_groups": [
        {**d["param_groups"][0], "lr": 0.25}]})
    opt.register_load_state_dict_post_hook(lambda o: loaded.append(o.param_groups[0]["lr"]))
    given = opt.state_dict()
    opt.load_state_dict(given)
    assert loaded == [0.25] and given["param_groups"][0]["lr"] == 0.1  # the caller's dict intact


def test_one_handle_class_for_tensors_modules_and_optimizers():
    from ddp.utils.hooks import RemovableHandle
    w = ddp.nn.Parameter(ddp.ones(2))
    opt = optim.SGD([w], lr=0.1)
    handles = [w.register_hook(lambda g: None), (w * 2).register_hook(lambda g: None),
               w.register_post_accumulate_grad_hook(lambda p: None),
               ddp.nn.Linear(1, 1).register_forward_hook(lambda *args: None),
               opt.register_step_pre_hook(lambda *args: None),
               opt.register_load_state_dict_post_hook(lambda o: None)]
    assert all(type(h) is RemovableHandle for h in handles)
    assert len({h.id for h in handles}) == len(handles)


def test_a_tensor_hook_may_remove_itself_during_backward():
    w = ddp.nn.Parameter(ddp.ones(2))
    seen = []

    def once(g):
        seen.append(g.sum().item())
        handle.remove()

    handle = w.register_hook(once)
    second = w.register_hook(lambda g: g * 3)  # still runs after the first removed itself
    (w * 2).sum().backward()
    (w * 2).sum().backward()
    assert seen == [4.0]
    np.testing.assert_array_equal(w.grad.numpy(), [12.0, 12.0])
    second.remove()


def test_module_and_optimizer_zero_grad_agree():
    model = ddp.nn.Linear(2, 1)
    opt = optim.SGD(model.parameters(), lr=0.1)
    for reset in (model.zero_grad, opt.zero_grad):
        model(ddp.ones(1, 2)).sum().backward(create_graph=True)
        grads = [p.grad for p in model.parameters()]
        reset(set_to_none=False)
        assert all(p.grad is g and g.grad_fn is None and not g.requires_grad
                   and float(g.abs().sum()) == 0.0 for p, g in zip(model.parameters(), grads))
        reset()
        assert all(p.grad is None for p in model.parameters())


ALL_OPTIMIZERS = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
                  "RAdam", "ASGD", "Rprop", "LBFGS", "SparseAdam", "Adafactor", "Muon"]


def _parameters(cls):
    import inspect
    return [(p.name, p.kind.name, repr(p.default)) for p in
            inspect.signature(cls.__init__).parameters.values()]


def test_signatures_match_torch(oracle):
    """Parameter names, order, kinds (positional or keyword-only) and defaults."""
    ref = oracle(lambda torch: {name: _parameters(getattr(torch.optim, name))
                                for name in ALL_OPTIMIZERS})
    for name in ALL_OPTIMIZERS:
        assert _parameters(getattr(optim, name)) == [tuple(p) for p in ref[name]], name
