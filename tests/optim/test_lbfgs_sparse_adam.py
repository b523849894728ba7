"""LBFGS and SparseAdam against PyTorch's recorded answers (tests/oracle.py).

LBFGS: trajectories on the Rosenbrock function in float64 (both line-search modes, a short
history that overflows, tight tolerances) and on a small Tanh network in float32 (its weights
from PyTorch's initialisation); the state's keys and counters; state_dict round trips (ours
bit-identically, PyTorch's into ours and ours into PyTorch's, continuing as PyTorch does).
SparseAdam: steps on a dense parameter with sparse COO gradients (repeated indices, an empty
gradient) as PyTorch takes them; dense gradients refused.
"""
import copy
import pickle

import numpy as np
import pytest

import ddp
import ddp.optim as optim

X0 = np.array([-1.5, 2.0, 0.5, -0.7])


def rosenbrock(x):
    return ((1 - x[:-1]) ** 2 + 100 * (x[1:] - x[:-1] ** 2) ** 2).sum()


def lbfgs_run(lib, x, opt, steps, loss_fn=rosenbrock):
    """``steps`` LBFGS steps; per step the loss ``step`` returned and the parameters after."""
    params = opt.param_groups[0]["params"]

    def closure():
        opt.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        return loss

    rows = []
    for _ in range(steps):
        loss = float(opt.step(closure).detach())
        rows.append(np.concatenate([[loss]] + [p.detach().numpy().astype(np.float64).ravel()
                                               for p in params]))
    return np.array(rows)


def counters(opt):
    state = opt.state[opt.param_groups[0]["params"][0]]
    return {"keys": list(state), "func_evals": state["func_evals"], "n_iter": state["n_iter"]}


ROSENBROCK = [
    dict(lr=0.1),
    dict(line_search_fn="strong_wolfe"),
    dict(line_search_fn="strong_wolfe", history_size=3, max_iter=7),   # the history overflows
    dict(lr=0.2, history_size=2, max_iter=9, max_eval=12),
    dict(line_search_fn="strong_wolfe", tolerance_grad=1e-3, tolerance_change=1e-4),
]


@pytest.mark.parametrize("kw", ROSENBROCK, ids=[str(i) for i in range(len(ROSENBROCK))])
def test_lbfgs_rosenbrock_float64_matches_torch(oracle, kw):
    def reference(torch):
        x = torch.nn.Parameter(torch.tensor(X0))
        opt = torch.optim.LBFGS([x], **kw)
        return {"rows": lbfgs_run(torch, x, opt, 6), **counters(opt)}

    ref = oracle(reference)
    x = ddp.nn.Parameter(ddp.tensor(X0))
    opt = optim.LBFGS([x], **kw)
    rows = lbfgs_run(ddp, x, opt, 6)
    np.testing.assert_allclose(rows, ref["rows"], rtol=1e-9, atol=1e-12)
    ours = counters(opt)
    assert ours["keys"] == list(ref["keys"])
    assert (ours["func_evals"], ours["n_iter"]) == (int(ref["func_evals"]), int(ref["n_iter"]))


DATA = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
TARGET = np.sin(DATA.sum(1, keepdims=True)).astype(np.float32)


def tanh_net(lib):
    return lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.Tanh(), lib.nn.Linear(8, 1))


@pytest.mark.parametrize("kw", [dict(lr=0.5, history_size=3, max_iter=4),
                                dict(line_search_fn="strong_wolfe", history_size=3, max_iter=4)],
                         ids=["fixed-step", "strong_wolfe"])
def test_lbfgs_small_network_float32_matches_torch(oracle, kw):
    def run_net(lib, net):
        x, y = lib.tensor(DATA), lib.tensor(TARGET)
        opt = lib.optim.LBFGS(net.parameters(), **kw)
        return lbfgs_run(lib, None, opt, 3, loss_fn=lambda _: ((net(x) - y) ** 2).mean())

    def reference(torch):
        net = tanh_net(torch)  # the fixture seeded torch: its initial weights are recorded
        weights = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
        return {"weights": weights, "rows": run_net(torch, net)}

    # live torch re-run: its own rounding (thread count, CPU) amplified the same way
    ref = oracle(reference, tolerance=1e-3)
    net = tanh_net(ddp)
    net.load_state_dict({k: ddp.tensor(v) for k, v in ref["weights"].items()})
    rows = run_net(ddp, net)
    # 12 iterations of a quasi-Newton method amplify float32 rounding (a different summation
    # order in a matmul) by about 100: losses agree to 1e-5, weights to 1e-4
    np.testing.assert_allclose(rows[:, 0], ref["rows"][:, 0], rtol=1e-5)
    np.testing.assert_allclose(rows, ref["rows"], rtol=1e-4, atol=1e-4)


def test_lbfgs_finds_the_rosenbrock_minimum():
    x = ddp.nn.Parameter(ddp.tensor([-1.2, 1.0], dtype=ddp.float64))
    opt = optim.LBFGS([x], line_search_fn="strong_wolfe", max_iter=200, max_eval=400,
                      tolerance_grad=1e-10, tolerance_change=1e-14)
    lbfgs_run(ddp, x, opt, 1)
    np.testing.assert_allclose(x.detach().numpy(), [1.0, 1.0], atol=1e-6)
    assert float(rosenbrock(x)) < 1e-12


@pytest.mark.parametrize("copier", ["deepcopy", "pickle"])
def test_lbfgs_state_dict_round_trip_continues_bit_identically(copier):
    kw = dict(line_search_fn="strong_wolfe", history_size=4)
    x = ddp.nn.Parameter(ddp.tensor(X0))
    straight = lbfgs_run(ddp, x, optim.LBFGS([x], **kw), 4)

    x = ddp.nn.Parameter(ddp.tensor(X0))
    opt = optim.LBFGS([x], **kw)
    lbfgs_run(ddp, x, opt, 2)
    sd = opt.state_dict()
    saved = copy.deepcopy(sd) if copier == "deepcopy" else pickle.loads(pickle.dumps(sd))
    y = ddp.nn.Parameter(ddp.tensor(x.detach().numpy()))
    fresh = optim.LBFGS([y], **kw)
    fresh.load_state_dict(saved)
    np.testing.assert_array_equal(lbfgs_run(ddp, y, fresh, 2), straight[2:])


def _encode(value):
    """A state_dict for the record: tensors tagged (0-d tensors and numbers both come back as
    0-d arrays), parameter indices as strings."""
    if hasattr(value, "detach"):
        return {"tensor": np.array(value.detach().cpu().numpy(), copy=True)}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(lib, value, top=True):
    if top:
        return {"state": {int(k): _decode(lib, v, False) for k, v in value["state"].items()},
                "param_groups": _decode(lib, value["param_groups"], False)}
    if isinstance(value, dict):
        if list(value) == ["tensor"]:
            return lib.tensor(value["tensor"])
        return {k: _decode(lib, v, False) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decode(lib, v, False) for v in value]
    if isinstance(value, np.ndarray):
        return value.item()
    return value


LOAD_KW = dict(line_search_fn="strong_wolfe", history_size=3)


def test_lbfgs_torch_state_dict_loads_into_ours(oracle):
    def reference(torch):
        x = torch.nn.Parameter(torch.tensor(X0))
        opt = torch.optim.LBFGS([x], **LOAD_KW)
        lbfgs_run(torch, x, opt, 2)
        saved = _encode(opt.state_dict())
        return {"x": x.detach().numpy().copy(), "saved": saved,
                "continued": lbfgs_run(torch, x, opt, 2)}

    ref = oracle(reference)
    x = ddp.nn.Parameter(ddp.tensor(ref["x"]))
    opt = optim.LBFGS([x], **LOAD_KW)
    opt.load_state_dict(_decode(ddp, ref["saved"]))
    state = opt.state[x]
    assert list(state) == list(ref["saved"]["state"]["0"])
    assert isinstance(state["ro"][0], ddp.Tensor) and state["ro"][0].shape == ()
    assert state["al"][-1] is None or isinstance(state["al"][-1], ddp.Tensor)
    np.testing.assert_allclose(lbfgs_run(ddp, x, opt, 2), ref["continued"], rtol=1e-9,
                               atol=1e-12)


def test_lbfgs_our_state_dict_loads_into_torch(oracle):
    x = ddp.nn.Parameter(ddp.tensor(X0))
    opt = optim.LBFGS([x], **LOAD_KW)
    lbfgs_run(ddp, x, opt, 2)
    start, saved = x.detach().numpy().copy(), _encode(opt.state_dict())

    def reference(torch):
        tx = torch.nn.Parameter(torch.tensor(start))
        topt = torch.optim.LBFGS([tx], **LOAD_KW)
        topt.load_state_dict(_decode(torch, saved))
        return lbfgs_run(torch, tx, topt, 2)

    np.testing.assert_allclose(lbfgs_run(ddp, x, opt, 2), oracle(reference), rtol=1e-9,
                               atol=1e-12)


def test_lbfgs_param_group_keys_match_torch(oracle):
    def reference(torch):
        opt = torch.optim.LBFGS([torch.nn.Parameter(torch.tensor(X0))], max_iter=8)
        return {"keys": list(opt.state_dict()["param_groups"][0]), "repr": repr(opt),
                "max_eval": opt.param_groups[0]["max_eval"]}

    ref = oracle(reference)
    opt = optim.LBFGS([ddp.nn.Parameter(ddp.tensor(X0))], max_iter=8)
    assert list(opt.state_dict()["param_groups"][0]) == list(ref["keys"])
    assert repr(opt) == ref["repr"] and opt.param_groups[0]["max_eval"] == ref["max_eval"] == 10


def test_lbfgs_errors_and_hooks():
    a, b = ddp.nn.Parameter(ddp.ones(2)), ddp.nn.Parameter(ddp.ones(2))
    with pytest.raises(ValueError, match=r"LBFGS doesn't support per-parameter options "
                                         r"\(parameter groups\)"):
        optim.LBFGS([{"params": [a]}, {"params": [b], "lr": 0.1}])
    opt = optim.LBFGS([a], line_search_fn="armijo")

    def closure():
        opt.zero_grad()
        loss = (a * a).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        opt.step(closure)
    opt = optim.LBFGS([b])
    steps, grad_modes = [], []
    opt.register_step_pre_hook(lambda o, args, kwargs: steps.append(1))

    def counted():
        grad_modes.append(ddp.is_grad_enabled())
        opt.zero_grad()
        loss = ((b - 3) ** 2).sum()
        loss.backward()
        return loss

    with ddp.no_grad():
        opt.step(counted)
    assert steps == [1] and len(grad_modes) > 1 and all(grad_modes)  # hooks once per step
    np.testing.assert_allclose(b.detach().numpy(), [3.0, 3.0], atol=1e-5)


# ---------------------------------------------------------------------- SparseAdam

class COO:
    """A sparse COO gradient with PyTorch's interface (``is_sparse``, ``coalesce``,
    ``_indices``, ``_values``), until ddp has sparse tensors of its own."""
    is_sparse = True

    def __init__(self, indices, values, shape):
        self.indices, self.values, self.shape = np.asarray(indices), np.asarray(values), shape

    def coalesce(self):
        flat = np.ravel_multi_index(tuple(self.indices), self.shape[:len(self.indices)])
        unique, inverse = np.unique(flat, return_inverse=True)
        values = np.zeros((len(unique),) + self.values.shape[1:], self.values.dtype)
        np.add.at(values, inverse, self.values)
        indices = np.array(np.unravel_index(unique, self.shape[:len(self.indices)]))
        return COO(indices.reshape(len(self.indices), -1), values, self.shape)

    def _indices(self):
        return ddp.tensor(self.indices)

    def _values(self):
        return ddp.tensor(self.values)


RNG = np.random.default_rng(7)
TABLE = RNG.standard_normal((6, 3)).astype(np.float32)
SPARSE_GRADS = [(RNG.integers(0, 6, (1, n)), RNG.standard_normal((n, 3)).astype(np.float32))
                for n in (3, 5, 0, 4, 6, 2)]  # repeated rows; the third gradient is empty


@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.05, betas=(0.5, 0.8), eps=1e-3,
                                                   maximize=True)], ids=["plain", "options"])
def test_sparse_adam_matches_torch(oracle, kw):
    def reference(torch):
        w = torch.nn.Parameter(torch.tensor(TABLE))
        opt = torch.optim.SparseAdam([w], **kw)
        rows = []
        for indices, values in SPARSE_GRADS:
            w.grad = torch.sparse_coo_tensor(torch.tensor(indices).reshape(1, -1),
                                             torch.tensor(values).reshape(-1, 3), TABLE.shape,
                                             check_invariants=True)
            opt.step()
            rows.append(w.detach().numpy().copy())
        state = opt.state_dict()["state"][0]
        return {"rows": np.stack(rows), "step": state["step"], "keys": list(state),
                "exp_avg": state["exp_avg"].numpy(), "groups": list(opt.param_groups[0])}

    ref = oracle(reference)
    w = ddp.nn.Parameter(ddp.tensor(TABLE))
    opt = optim.SparseAdam([w], **kw)
    rows = []
    for indices, values in SPARSE_GRADS:
        w.grad = COO(indices.reshape(1, -1), values.reshape(-1, 3), TABLE.shape)
        opt.step()
        rows.append(w.detach().numpy().copy())
    np.testing.assert_allclose(np.stack(rows), ref["rows"], rtol=1e-6, atol=1e-7)
    state = opt.state_dict()["state"][0]
    assert list(state) == list(ref["keys"]) and state["step"] == ref["step"] == 6
    assert isinstance(state["step"], int)
    np.testing.assert_allclose(state["exp_avg"].numpy(), ref["exp_avg"], rtol=1e-6, atol=1e-7)
    assert list(opt.param_groups[0]) == list(ref["groups"])


def test_sparse_adam_refuses_dense_gradients_and_leaves_untouched_rows():
    w = ddp.nn.Parameter(ddp.tensor(TABLE))
    opt = optim.SparseAdam([w], lr=0.1)
    w.grad = ddp.ones(6, 3)
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients, please "
                                           "consider Adam instead"):
        opt.step()
    w.grad = COO([[1, 4, 1]], np.ones((3, 3), np.float32), TABLE.shape)
    opt.step()
    changed = np.any(w.detach().numpy() != TABLE, axis=1)
    assert changed.tolist() == [False, True, False, False, True, False]


def test_lbfgs_cubic_interpolation_of_a_collapsed_bracket_is_silent():
    import warnings

    from ddp.optim.lbfgs import _cubic_interpolate
    g = np.float64(-1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's tensors give inf/nan here without a warning
        assert _cubic_interpolate(np.float64(0.5), 1.0, g, np.float64(0.5), 1.0, g) == 0.5
        t = _cubic_interpolate(0, 1.0, g, np.float64(1.0), 0.5, np.float64(0.25),
                               bounds=(np.float64(0.2), np.float64(0.8)))
    assert 0.2 <= t <= 0.8
