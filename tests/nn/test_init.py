"""nn.init: gains and fans equal PyTorch's; the samples of each initialiser have the moments
and bounds of PyTorch's formulas (checked on large tensors); deterministic fillers are exact."""
import math

import numpy as np
import pytest

import ddp
import ddp.nn as nn
from ddp.nn import init


def arr(t):
    return np.asarray(t.detach().numpy(), dtype=np.float64)


NONLINEARITIES = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]


class TestGainAndFan:
    def test_gain_values(self):
        assert init.calculate_gain("linear") == 1 and init.calculate_gain("sigmoid") == 1
        assert init.calculate_gain("tanh") == 5.0 / 3
        assert init.calculate_gain("relu") == math.sqrt(2.0)
        assert init.calculate_gain("leaky_relu") == math.sqrt(2.0 / (1 + 0.01 ** 2))
        assert init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2.0 / 1.04)
        assert init.calculate_gain("leaky_relu", 1) == 1.0
        assert init.calculate_gain("selu") == 0.75
        with pytest.raises(ValueError, match="Unsupported nonlinearity"):
            init.calculate_gain("swish")
        with pytest.raises(ValueError, match="not a valid number"):
            init.calculate_gain("leaky_relu", True)

    @pytest.mark.parametrize("name", NONLINEARITIES)
    def test_gain_against_torch(self, oracle, name):
        params = (0, 0.1, 3, math.sqrt(5)) if name == "leaky_relu" else ()
        want = oracle(lambda torch: [torch.nn.init.calculate_gain(name)]
                      + [torch.nn.init.calculate_gain(name, p) for p in params])
        assert [init.calculate_gain(name)] + [init.calculate_gain(name, p) for p in params] \
            == [float(g) for g in want]

    @pytest.mark.parametrize("shape", [(3, 5), (8, 3, 5), (16, 3, 5, 5), (4, 2, 3, 3, 3),
                                       (1, 7)])
    def test_fans(self, shape):
        rf = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        assert init._calculate_fan_in_and_fan_out(ddp.empty(*shape)) == \
            (shape[1] * rf, shape[0] * rf)

    @pytest.mark.parametrize("shape", [(3, 5), (16, 3, 5, 5), (4, 2, 3, 3, 3)])
    def test_fans_against_torch(self, oracle, shape):
        want = oracle(lambda torch: torch.nn.init._calculate_fan_in_and_fan_out(
            torch.empty(*shape)))
        assert init._calculate_fan_in_and_fan_out(ddp.empty(*shape)) == \
            tuple(int(n) for n in want)

    def test_fan_needs_two_dims(self):
        with pytest.raises(ValueError, match="fewer than 2 dimensions"):
            init._calculate_fan_in_and_fan_out(ddp.empty(5))
        with pytest.raises(ValueError, match="Mode"):
            init.kaiming_uniform_(ddp.empty(2, 2), mode="fan_avg")


def check_uniform(t, bound, tol=0.03):
    a = arr(t)
    assert a.min() >= -bound and a.max() <= bound
    assert a.max() > bound * 0.99 and a.min() < -bound * 0.99           # fills the interval
    assert abs(a.mean()) < tol * bound
    assert abs(a.std() - bound / math.sqrt(3)) < tol * bound


def check_normal(t, std, mean=0.0, tol=0.02):
    a = arr(t)
    assert abs(a.mean() - mean) < tol * std * 3
    assert abs(a.std() - std) < tol * std


class TestDistributions:
    def test_uniform_normal(self):
        t = ddp.empty(200, 500)
        assert init.uniform_(t, -2.0, 2.0) is t
        check_uniform(t, 2.0)
        init.uniform_(t)
        assert arr(t).min() >= 0 and arr(t).max() <= 1
        init.normal_(t, mean=3.0, std=0.5)
        check_normal(t, 0.5, mean=3.0)

    @pytest.mark.parametrize("gain", [1.0, 2.5])
    def test_xavier(self, gain):
        t = ddp.empty(300, 200)
        bound = gain * math.sqrt(6.0 / 500)
        check_uniform(init.xavier_uniform_(t, gain=gain), bound)
        check_normal(init.xavier_normal_(t, gain=gain), gain * math.sqrt(2.0 / 500))

    @pytest.mark.parametrize("a,mode,nonlinearity", [
        (0, "fan_in", "leaky_relu"), (math.sqrt(5), "fan_in", "leaky_relu"),
        (0, "fan_out", "relu"), (0.2, "fan_out", "leaky_relu"), (0, "fan_in", "tanh")])
    def test_kaiming(self, a, mode, nonlinearity):
        t = ddp.empty(64, 16, 5, 5)                   # fan_in 400, fan_out 1600
        fan = 400 if mode == "fan_in" else 1600
        gain = init.calculate_gain(nonlinearity, a)
        check_uniform(init.kaiming_uniform_(t, a=a, mode=mode, nonlinearity=nonlinearity),
                      gain * math.sqrt(3.0 / fan))
        check_normal(init.kaiming_normal_(t, a=a, mode=mode, nonlinearity=nonlinearity),
                     gain / math.sqrt(fan))

    def test_kaiming_default_is_linear_default(self):
        # nn.Linear's reset: kaiming_uniform_(w, a=sqrt(5)) gives bound 1/sqrt(fan_in)
        t = ddp.empty(1000, 100)
        init.kaiming_uniform_(t, a=math.sqrt(5))
        check_uniform(t, 1 / math.sqrt(100))

    def test_zero_element_tensor_warns(self):
        with pytest.warns(UserWarning, match="no-op"):
            init.kaiming_uniform_(ddp.empty(0, 3))

    @pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -2.0, 2.0),
                                              (0.5, 1.0, 0.0, 1.0), (0.0, 1.0, 1.5, 3.0)])
    def test_trunc_normal(self, mean, std, a, b):
        t = ddp.empty(100000)
        assert init.trunc_normal_(t, mean=mean, std=std, a=a, b=b) is t
        x = arr(t)
        assert x.min() >= a and x.max() <= b
        # moments of the truncated normal
        alpha, beta = (a - mean) / std, (b - mean) / std
        pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        cdf = lambda z: (1 + math.erf(z / math.sqrt(2))) / 2  # noqa: E731
        Z = cdf(beta) - cdf(alpha)
        m = mean + std * (pdf(alpha) - pdf(beta)) / Z
        v = std ** 2 * (1 + (alpha * pdf(alpha) - beta * pdf(beta)) / Z
                        - ((pdf(alpha) - pdf(beta)) / Z) ** 2)
        assert abs(x.mean() - m) < 0.02 * std
        assert abs(x.std() - math.sqrt(v)) < 0.02 * std

    def test_trunc_normal_against_torch_samples(self, oracle):
        def moments(x):
            hist, _ = np.histogram(x, bins=7, range=(-0.6, 0.8))
            return {"mean": x.mean(), "std": x.std(), "hist": hist / len(x)}

        ref = oracle(lambda torch: moments(torch.nn.init.trunc_normal_(
            torch.empty(50000), std=0.5, a=-0.6, b=0.8).numpy()))
        ddp.manual_seed(0)
        t = ddp.empty(50000)
        init.trunc_normal_(t, std=0.5, a=-0.6, b=0.8)
        ours = moments(arr(t))
        assert abs(ours["mean"] - ref["mean"]) < 0.01 and abs(ours["std"] - ref["std"]) < 0.01
        np.testing.assert_allclose(ours["hist"], ref["hist"], atol=0.01)


class TestDeterministic:
    def test_constant_ones_zeros(self):
        t = ddp.empty(3, 4)
        assert init.constant_(t, 0.25) is t and bool((t == 0.25).all())
        assert bool((init.ones_(t) == 1).all()) and bool((init.zeros_(t) == 0).all())

    def test_eye(self):
        np.testing.assert_array_equal(arr(init.eye_(ddp.empty(3, 5))), np.eye(3, 5))
        np.testing.assert_array_equal(arr(init.eye_(ddp.empty(4, 2))), np.eye(4, 2))
        with pytest.raises(ValueError):
            init.eye_(ddp.empty(2, 2, 2))

    @pytest.mark.parametrize("shape,groups", [((4, 4, 3), 1), ((6, 3, 3, 3), 2),
                                              ((2, 4, 3, 3, 3), 1), ((4, 2, 5, 4), 2)])
    def test_dirac_against_torch(self, oracle, shape, groups):
        mine = init.dirac_(ddp.empty(*shape), groups=groups)
        ref = oracle(lambda torch: torch.nn.init.dirac_(torch.empty(*shape), groups=groups)
                     .numpy())
        np.testing.assert_array_equal(arr(mine), ref)

    def test_dirac_errors(self):
        with pytest.raises(ValueError):
            init.dirac_(ddp.empty(2, 2))
        with pytest.raises(ValueError, match="divisible"):
            init.dirac_(ddp.empty(3, 2, 3), groups=2)


class TestOrthogonal:
    @pytest.mark.parametrize("shape", [(5, 5), (3, 8), (8, 3), (6, 2, 3, 3)])
    def test_orthogonal(self, shape):
        t = ddp.empty(*shape, dtype=ddp.float64)
        assert init.orthogonal_(t) is t
        w = arr(t).reshape(shape[0], -1)
        if w.shape[0] <= w.shape[1]:
            np.testing.assert_allclose(w @ w.T, np.eye(w.shape[0]), atol=1e-10)
        else:
            np.testing.assert_allclose(w.T @ w, np.eye(w.shape[1]), atol=1e-10)

    def test_gain_and_float32(self):
        t = init.orthogonal_(ddp.empty(4, 6), gain=2.0)
        w = arr(t)
        np.testing.assert_allclose(w @ w.T, 4 * np.eye(4), atol=1e-5)
        assert t.dtype == ddp.float32

    def test_sign_correction_makes_r_diagonal_positive(self):
        # Q's columns are sign-fixed so that Q^T A has a positive diagonal (R's diagonal)
        g = ddp.Generator().manual_seed(3)
        w = arr(init.orthogonal_(ddp.empty(6, 4, dtype=ddp.float64), generator=g))
        a = ddp.Generator().manual_seed(3).numpy.normal(0.0, 1.0, (6, 4))
        assert (np.diag(w.T @ a) > 0).all()

    def test_needs_two_dims(self):
        with pytest.raises(ValueError):
            init.orthogonal_(ddp.empty(3))


class TestCommon:
    def test_parameters_stay_leaves(self):
        p = nn.Parameter(ddp.empty(20, 10))
        for fn in (init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_,
                   init.kaiming_normal_, init.orthogonal_, init.zeros_, init.ones_,
                   init.eye_, init.trunc_normal_, init.uniform_, init.normal_):
            assert fn(p) is p
            assert p.grad_fn is None and p.requires_grad and p.is_leaf
        init.constant_(p, 0.5)
        (p * 2).sum().backward()
        assert float(p.grad.sum()) == 400.0

    def test_generator_reproducible(self):
        for fn in (init.uniform_, init.normal_, init.xavier_uniform_, init.kaiming_normal_,
                   init.trunc_normal_, init.orthogonal_):
            a = fn(ddp.empty(8, 8), generator=ddp.Generator().manual_seed(7))
            b = fn(ddp.empty(8, 8), generator=ddp.Generator().manual_seed(7))
            np.testing.assert_array_equal(arr(a), arr(b), err_msg=fn.__name__)

    def test_manual_seed_reproducible(self):
        ddp.manual_seed(1)
        a = init.kaiming_uniform_(ddp.empty(4, 4))
        ddp.manual_seed(1)
        b = init.kaiming_uniform_(ddp.empty(4, 4))
        np.testing.assert_array_equal(arr(a), arr(b))

    def test_dtype_kept(self):
        for fn in (init.xavier_uniform_, init.trunc_normal_, init.orthogonal_, init.eye_):
            assert fn(ddp.empty(3, 3, dtype=ddp.float64)).dtype == ddp.float64

    def test_sparse(self):
        w = init.sparse_(ddp.empty(10, 6), sparsity=0.3, std=0.1)
        assert ((arr(w) == 0).sum(axis=0) == 3).all()
        with pytest.raises(ValueError):
            init.sparse_(ddp.empty(3), 0.5)

    def test_deprecated_aliases(self):
        with pytest.warns(FutureWarning, match="deprecated"):
            init.xavier_uniform(ddp.empty(2, 2))
