"""nn.utils: gradient clipping against PyTorch's formula (and PyTorch itself when installed),
and the parameters <-> vector round trip."""
import math

import numpy as np
import pytest

import ddp
import ddp.nn as nn
from ddp.nn.utils import (clip_grad_norm_, clip_grad_value_, get_total_norm,
                          parameters_to_vector, vector_to_parameters)


def arr(t):
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def grads(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * scale).astype(np.float32)
            for s in [(4, 3), (3,), (2, 2, 2), (1,)]]


def ddp_params(gs, with_none=True):
    ps = [nn.Parameter(ddp.zeros(*g.shape)) for g in gs]
    for p, g in zip(ps, gs):
        p.grad = ddp.tensor(g)
    if with_none:
        ps.append(nn.Parameter(ddp.zeros(5)))          # no grad: skipped
    return ps


def reference_norm(gs, p):
    flat = np.concatenate([g.ravel().astype(np.float64) for g in gs])
    if p == math.inf:
        return np.abs(flat).max()
    return (np.abs(flat) ** p).sum() ** (1 / p)


class TestClipGradNorm:
    @pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
    @pytest.mark.parametrize("max_norm", [0.5, 1e6])
    def test_formula(self, norm_type, max_norm):
        gs = grads()
        ps = ddp_params(gs)
        total = clip_grad_norm_(ps, max_norm, norm_type=norm_type)
        expected = reference_norm(gs, float(norm_type))
        assert isinstance(total, ddp.Tensor) and total.shape == ()
        assert total.dtype == ddp.float32
        np.testing.assert_allclose(float(total), expected, rtol=1e-5)
        coef = min(max_norm / (expected + 1e-6), 1.0)
        for p, g in zip(ps, gs):
            np.testing.assert_allclose(arr(p.grad), g * coef, rtol=1e-5, atol=1e-7)
        if max_norm < expected:
            np.testing.assert_allclose(reference_norm([arr(p.grad) for p in ps[:-1]],
                                                      float(norm_type)), max_norm, rtol=1e-4)

    @pytest.mark.parametrize("norm_type", [2.0, 1.0, 0.5, math.inf])
    @pytest.mark.parametrize("max_norm", [0.3, 100.0])
    def test_against_torch(self, oracle, norm_type, max_norm):
        gs = grads(1, scale=2.0)

        def reference(torch):
            tps = [torch.nn.Parameter(torch.zeros(*g.shape)) for g in gs]
            for p, g in zip(tps, gs):
                p.grad = torch.tensor(g)
            tps.append(torch.nn.Parameter(torch.zeros(5)))
            total = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type=norm_type)
            return {"total": float(total), "grads": [tp.grad.numpy() for tp in tps[:-1]]}
        ref = oracle(reference)
        ps = ddp_params(gs)
        total = clip_grad_norm_(ps, max_norm, norm_type=norm_type)
        np.testing.assert_allclose(float(total), float(ref["total"]), rtol=1e-5)
        for p, tg in zip(ps[:-1], ref["grads"]):
            np.testing.assert_allclose(arr(p.grad), tg, rtol=1e-5, atol=1e-7)

    def test_single_tensor_generator_and_empty(self):
        p = nn.Parameter(ddp.zeros(2))
        p.grad = ddp.tensor([3.0, 4.0])
        assert float(clip_grad_norm_(p, 1.0)) == pytest.approx(5.0)
        np.testing.assert_allclose(arr(p.grad), [0.6, 0.8], rtol=1e-5)
        m = nn.Module()
        m.w = nn.Parameter(ddp.ones(3))
        (m.w * 2).sum().backward()
        assert float(clip_grad_norm_(m.parameters(), 100.0)) == pytest.approx(math.sqrt(12))
        assert float(clip_grad_norm_([nn.Parameter(ddp.ones(1))], 1.0)) == 0.0
        with pytest.warns(UserWarning, match="empty generator"):
            clip_grad_norm_((p for p in []), 1.0)

    def test_nonfinite(self):
        p = nn.Parameter(ddp.zeros(2))
        p.grad = ddp.tensor([float("inf"), 1.0])
        with pytest.raises(RuntimeError, match="non-finite"):
            clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
        assert math.isinf(float(clip_grad_norm_([p], 1.0)))
        # scaled by max_norm / inf = 0, as PyTorch: inf * 0 -> nan, 1 * 0 -> 0
        assert math.isnan(float(p.grad[0])) and float(p.grad[1]) == 0.0

    def test_float64_and_version_bump(self):
        p = nn.Parameter(ddp.zeros(3, dtype=ddp.float64))
        p.grad = ddp.full((3,), 2.0, dtype=ddp.float64)
        v = p.grad._version
        total = clip_grad_norm_([p], 1.0)
        assert total.dtype == ddp.float64 and p.grad._version > v
        np.testing.assert_allclose(arr(p.grad), np.full(3, 1 / math.sqrt(3)), rtol=1e-6)

    def test_get_total_norm(self):
        assert float(get_total_norm([ddp.tensor([3.0]), ddp.tensor([[4.0]])])) == 5.0
        assert float(get_total_norm([ddp.tensor([3.0, -7.0])], norm_type="inf")) == 7.0

    def test_training_step_unchanged_graph(self):
        # clipping writes the grad arrays without recording anything
        w = nn.Parameter(ddp.ones(3))
        (w * 10).sum().backward()
        clip_grad_norm_([w], 1.0)
        assert w.grad.grad_fn is None and not w.grad.requires_grad


class TestClipGradValue:
    def test_clamps(self):
        gs = grads(2, scale=3.0)
        ps = ddp_params(gs)
        assert clip_grad_value_(ps, 1.5) is None
        for p, g in zip(ps, gs):
            np.testing.assert_array_equal(arr(p.grad), np.clip(g, -1.5, 1.5))

    def test_against_torch(self, oracle):
        gs = grads(3, scale=3.0)

        def reference(torch):
            tps = [torch.nn.Parameter(torch.zeros(*g.shape)) for g in gs]
            for p, g in zip(tps, gs):
                p.grad = torch.tensor(g)
            torch.nn.utils.clip_grad_value_(tps, 0.7)
            return [tp.grad.numpy() for tp in tps]
        ref = oracle(reference)
        ps = ddp_params(gs)
        clip_grad_value_(ps, 0.7)
        assert len(ref) == len(gs)
        for p, tg in zip(ps, ref):
            np.testing.assert_array_equal(arr(p.grad), tg)

    def test_single_tensor(self):
        p = nn.Parameter(ddp.zeros(2))
        p.grad = ddp.tensor([-4.0, 0.5])
        clip_grad_value_(p, 1)
        np.testing.assert_array_equal(arr(p.grad), [-1.0, 0.5])


class TestVectorConversion:
    def test_round_trip(self):
        ps = [nn.Parameter(ddp.randn(3, 4)), nn.Parameter(ddp.randn(5)),
              nn.Parameter(ddp.randn(2, 1, 2))]
        vec = parameters_to_vector(ps)
        assert vec.shape == ddp.Size([21])
        np.testing.assert_array_equal(arr(vec), np.concatenate([arr(p).ravel() for p in ps]))
        ids = [id(p) for p in ps]
        vector_to_parameters(vec * 2, ps)
        assert [id(p) for p in ps] == ids and ps[0].shape == ddp.Size([3, 4])
        np.testing.assert_allclose(arr(parameters_to_vector(ps)), 2 * arr(vec))

    def test_parameters_to_vector_is_differentiable(self):
        ps = [nn.Parameter(ddp.ones(2, 2)), nn.Parameter(ddp.ones(3))]
        vec = parameters_to_vector(ps)
        (vec * ddp.arange(7.0)).sum().backward()
        np.testing.assert_array_equal(arr(ps[0].grad), [[0, 1], [2, 3]])
        np.testing.assert_array_equal(arr(ps[1].grad), [4, 5, 6])

    def test_against_torch(self, oracle):
        shapes = [(2, 3), (4,), (1, 1, 2)]
        rng = np.random.default_rng(0)
        vals = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        v = rng.standard_normal(12).astype(np.float32)

        def reference(torch):
            tps = [torch.nn.Parameter(torch.tensor(x)) for x in vals]
            vec = torch.nn.utils.parameters_to_vector(tps).detach().numpy()
            torch.nn.utils.vector_to_parameters(torch.tensor(v), tps)
            return {"vec": vec, "params": [tp.detach().numpy() for tp in tps]}
        ref = oracle(reference)
        ps = [nn.Parameter(ddp.tensor(x)) for x in vals]
        np.testing.assert_array_equal(arr(parameters_to_vector(ps)), ref["vec"])
        vector_to_parameters(ddp.tensor(v), ps)
        assert len(ref["params"]) == len(ps)
        for p, tp in zip(ps, ref["params"]):
            np.testing.assert_array_equal(arr(p), tp)

    def test_vector_type_checked(self):
        with pytest.raises(TypeError, match="expected torch.Tensor"):
            vector_to_parameters([1.0, 2.0], [nn.Parameter(ddp.ones(2))])

    def test_module_parameters_round_trip(self):
        m = nn.Sequential(nn.Module(), nn.Module())
        m[0].w = nn.Parameter(ddp.ones(2, 2))
        m[1].w = nn.Parameter(ddp.zeros(3))
        vec = parameters_to_vector(m.parameters())
        vector_to_parameters(vec + 1, m.parameters())
        assert float(m[0].w.sum()) == 8.0 and float(m[1].w.sum()) == 3.0
