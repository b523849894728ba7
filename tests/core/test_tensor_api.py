"""The Tensor API outside autograd and per-op gradients: creation, the legacy constructor,
arithmetic and comparisons (with NumPy broadcasting and NumPy operands), in-place methods,
indexing and assignment, conversion, casts, repr, pickling, devices, bfloat16."""
import pickle

import numpy as np
import pytest

import ddp


def arr(t):
    return np.asarray(t.detach().cpu().numpy())


def eq(t, expected, dtype=None):
    a = arr(t)
    np.testing.assert_array_equal(a, np.asarray(expected))
    if dtype is not None:
        assert t.dtype is dtype, (t.dtype, dtype)


# ====================================================================== creation

class TestCreation:
    @pytest.mark.parametrize("data,dtype", [
        (1.5, ddp.float32), ([1.0, 2.0], ddp.float32), ([[1.0], [2.0]], ddp.float32),
        (3, ddp.int64), ([1, 2], ddp.int64), (True, ddp.bool), ([True, False], ddp.bool),
        ([1, 2.5], ddp.float32), ([True, 2], ddp.int64),
        (np.array([1.0, 2.0]), ddp.float64), (np.array([1, 2], dtype=np.int32), ddp.int32),
        (np.array([1.0], dtype=np.float16), ddp.float16), (np.float64(1.5), ddp.float64),
        (np.array([True]), ddp.bool), ([], ddp.float32),
    ])
    def test_tensor_dtype_inference(self, data, dtype):
        t = ddp.tensor(data)
        assert t.dtype is dtype
        np.testing.assert_array_equal(arr(t), np.asarray(data))

    def test_tensor_dtype_inference_matches_torch(self, oracle):
        datas = (1.5, [1, 2], True, [1, 2.5], np.array([1.0]), np.array([1], np.int32),
                 [np.float32(1.5), 2.0], [np.int32(3)], [[1, 2], [3, 4]], [])
        ref = oracle(lambda torch: [(str(torch.tensor(d).dtype)[6:], tuple(torch.tensor(d).shape))
                                    for d in datas])
        for data, (dtype, shape) in zip(datas, ref):
            assert ddp.tensor(data).dtype.name == dtype, data
            assert tuple(ddp.tensor(data).shape) == tuple(int(n) for n in shape)

    def test_tensor_copies_and_explicit_dtype(self):
        a = np.array([1.0, 2.0])
        t = ddp.tensor(a)
        a[0] = 100
        eq(t, [1, 2])
        t = ddp.tensor([1, 2], dtype=ddp.float64)
        eq(t, [1, 2], ddp.float64)
        t2 = ddp.tensor(t)
        t2[0] = 5
        eq(t, [1, 2])
        assert ddp.tensor([1.5], requires_grad=True).requires_grad
        assert ddp.tensor([[1, 2], [3, 4]]).shape == (2, 2)
        assert ddp.tensor([ddp.tensor(1.0), ddp.tensor(2.0)]).shape == (2,)

    def test_tensor_bad_data(self):
        with pytest.raises((TypeError, ValueError)):
            ddp.tensor([[1, 2], [3]])
        with pytest.raises(TypeError):
            ddp.tensor("abc")

    def test_as_tensor_shares_memory(self):
        a = np.arange(3.0)
        t = ddp.as_tensor(a)
        t[0] = 10
        assert a[0] == 10
        assert t.dtype is ddp.float64
        c = ddp.as_tensor(a, dtype=ddp.float32)  # a cast must copy
        c[1] = -1
        assert a[1] == 1
        tt = ddp.ones(2)
        assert ddp.as_tensor(tt) is tt
        eq(ddp.as_tensor([1, 2]), [1, 2], ddp.int64)

    def test_from_numpy_shares_memory_both_ways(self):
        a = np.zeros(3, dtype=np.float32)
        t = ddp.from_numpy(a)
        a[1] = 5
        eq(t, [0, 5, 0])
        t.add_(1)
        np.testing.assert_array_equal(a, [1, 6, 1])
        t[2] = 9
        assert a[2] == 9
        assert t.numpy() is a or np.shares_memory(t.numpy(), a)
        with pytest.raises(TypeError):
            ddp.from_numpy([1, 2])

    def test_numpy_shares_memory(self):
        t = ddp.zeros(3)
        n = t.numpy()
        n[0] = 4
        eq(t, [4, 0, 0])

    @pytest.mark.parametrize("fn", [ddp.zeros, ddp.ones, ddp.empty, ddp.rand, ddp.randn])
    def test_shape_forms(self, fn):
        for args in ((2, 3), ((2, 3),), ([2, 3],), (ddp.Size([2, 3]),)):
            t = fn(*args)
            assert t.shape == (2, 3) and t.dtype is ddp.float32
        assert fn(4).shape == (4,)
        assert fn(0).shape == (0,)

    def test_filled(self):
        eq(ddp.zeros(2, 2), np.zeros((2, 2)), ddp.float32)
        eq(ddp.ones(3, dtype=ddp.int64), [1, 1, 1], ddp.int64)
        assert ddp.zeros(()).shape == () and ddp.zeros([]).shape == ()
        assert ddp.ones(2, requires_grad=True).requires_grad
        eq(ddp.full((2,), 1.5), [1.5, 1.5], ddp.float32)
        eq(ddp.full((2,), 7), [7, 7], ddp.int64)
        eq(ddp.full((2,), True), [True, True], ddp.bool)
        eq(ddp.full([2, 2], 1.0, dtype=ddp.float64), np.ones((2, 2)), ddp.float64)
        eq(ddp.full(3, 2.0), [2, 2, 2])

    def test_full_matches_torch(self, oracle):
        values = (1.5, 7, True, -2)
        ref = oracle(lambda torch: [str(torch.full((2,), v).dtype)[6:] for v in values])
        for v, dtype in zip(values, ref):
            assert ddp.full((2,), v).dtype.name == dtype, v

    def test_like(self):
        base = ddp.ones(2, 3, dtype=ddp.float64)
        for fn in (ddp.zeros_like, ddp.ones_like, ddp.empty_like, ddp.rand_like, ddp.randn_like):
            t = fn(base)
            assert t.shape == (2, 3) and t.dtype is ddp.float64
        assert ddp.zeros_like(base, dtype=ddp.int32).dtype is ddp.int32
        eq(ddp.full_like(base, 4), np.full((2, 3), 4.0), ddp.float64)
        eq(ddp.ones_like(ddp.tensor([1, 2])), [1, 1], ddp.int64)
        r = ddp.randint_like(base, 5)
        assert r.dtype is ddp.float64 and float(r.max()) < 5
        assert ddp.zeros_like(base, requires_grad=True).requires_grad
        assert base.new_zeros(2).dtype is ddp.float64 and base.new_ones((1, 2)).shape == (1, 2)
        eq(base.new_full((2,), 3), [3, 3], ddp.float64)
        eq(base.new_tensor([1, 2]), [1, 2], ddp.float64)

    def test_arange(self):
        eq(ddp.arange(5), [0, 1, 2, 3, 4], ddp.int64)
        eq(ddp.arange(2, 5), [2, 3, 4], ddp.int64)
        eq(ddp.arange(0, 10, 3), [0, 3, 6, 9], ddp.int64)
        eq(ddp.arange(5.0), [0, 1, 2, 3, 4], ddp.float32)
        eq(ddp.arange(1, 2, 0.25), [1, 1.25, 1.5, 1.75], ddp.float32)
        eq(ddp.arange(3, dtype=ddp.float64), [0, 1, 2], ddp.float64)
        eq(ddp.arange(5, 0, -2), [5, 3, 1], ddp.int64)
        eq(ddp.arange(ddp.tensor(3)), [0, 1, 2], ddp.int64)
        with pytest.raises(RuntimeError):
            ddp.arange(0, 5, 0)

    def test_arange_matches_torch(self, oracle):
        cases = ((5,), (5.0,), (0, 1, 0.1), (-1, 1, 0.3), (1, 10, 3), (0.5, 3))
        ref = oracle(lambda torch: [(str(torch.arange(*a).dtype)[6:], torch.arange(*a).numpy())
                                    for a in cases])
        for args, (dtype, values) in zip(cases, ref):
            a = ddp.arange(*args)
            assert a.dtype.name == dtype, args
            np.testing.assert_allclose(arr(a), values, rtol=1e-6)

    def test_linspace_eye(self):
        eq(ddp.linspace(0, 1, 5), [0, 0.25, 0.5, 0.75, 1], ddp.float32)
        assert ddp.linspace(-1, 1, 1).shape == (1,)
        eq(ddp.eye(2), np.eye(2), ddp.float32)
        eq(ddp.eye(2, 3), np.eye(2, 3))
        eq(ddp.eye(2, dtype=ddp.int64), np.eye(2, dtype=np.int64), ddp.int64)
        eq(ddp.logspace(0, 2, 3), [1, 10, 100])

    def test_random_creation(self):
        ddp.manual_seed(0)
        r = ddp.rand(1000)
        assert r.dtype is ddp.float32 and 0 <= float(r.min()) and float(r.max()) < 1
        n = ddp.randn(2000, dtype=ddp.float64)
        assert n.dtype is ddp.float64 and abs(float(n.mean())) < 0.1
        i = ddp.randint(3, 7, (100,))
        assert i.dtype is ddp.int64 and int(i.min()) >= 3 and int(i.max()) < 7
        assert ddp.randint(5, (2, 3)).shape == (2, 3)
        assert ddp.randint(0, 5, size=[4]).shape == (4,)
        assert ddp.randint(2, 5, (3,), dtype=ddp.int32).dtype is ddp.int32
        p = ddp.randperm(10)
        assert p.dtype is ddp.int64 and sorted(p.tolist()) == list(range(10))
        assert ddp.normal(0.0, 1.0, (2, 3)).shape == (2, 3)
        assert ddp.normal(0.0, 1.0, size=[4]).shape == (4,)
        m = ddp.normal(ddp.full((500,), 10.0), 0.1)
        assert m.shape == (500,) and abs(float(m.mean()) - 10) < 0.1
        assert ddp.normal(ddp.zeros(3), ddp.ones(3)).shape == (3,)
        assert ddp.rand(2, 3, requires_grad=True).requires_grad
        b = ddp.bernoulli(ddp.full((100,), 0.5))
        assert set(b.unique().tolist()) <= {0.0, 1.0}
        assert ddp.multinomial(ddp.tensor([0.0, 1.0, 0.0]), 2, replacement=True).tolist() == [1, 1]

    def test_legacy_constructor(self):
        t = ddp.Tensor(2, 3)
        assert t.shape == (2, 3) and t.dtype is ddp.float32
        t = ddp.Tensor([1, 2])
        eq(t, [1, 2], ddp.float32)
        t = ddp.Tensor([[1.5], [2.5]])
        assert t.shape == (2, 1) and t.dtype is ddp.float32
        assert isinstance(t, ddp.Tensor) and not t.requires_grad and t.is_leaf
        t = ddp.Tensor(np.array([1, 2]))
        assert t.dtype is ddp.float32
        assert ddp.Tensor(ddp.Size([4])).shape == (4,)
        assert ddp.Tensor().shape == (0,)

    def test_size(self):
        s = ddp.zeros(2, 3, 4).shape
        assert isinstance(s, tuple) and s == (2, 3, 4)
        assert repr(s) == "ddp.Size([2, 3, 4])"
        assert s.numel() == 24


# ====================================================================== arithmetic

class TestArithmetic:
    def test_broadcasting(self):
        a = ddp.tensor([[1.0], [2.0]])
        b = ddp.tensor([10.0, 20.0, 30.0])
        eq(a + b, [[11, 21, 31], [12, 22, 32]])
        eq(a * b, [[10, 20, 30], [20, 40, 60]])
        eq(b - a, [[9, 19, 29], [8, 18, 28]])
        eq(b / a, [[10, 20, 30], [5, 10, 15]])
        eq(b ** 0.5 * 0 + a, [[1, 1, 1], [2, 2, 2]])
        with pytest.raises(RuntimeError):
            ddp.ones(2) + ddp.ones(3)

    def test_scalars_and_reflected(self):
        a = ddp.tensor([1.0, 2.0])
        eq(2 + a, [3, 4])
        eq(2 - a, [1, 0])
        eq(2 * a, [2, 4])
        eq(2 / a, [2, 1])
        eq(2 ** a, [2, 4])
        eq(-a, [-1, -2])
        eq(abs(-a), [1, 2])
        eq(7 // ddp.tensor([2, 3]), [3, 2], ddp.int64)
        eq(7 % ddp.tensor([2, 3]), [1, 1], ddp.int64)
        assert (a * 2.5).dtype is ddp.float32  # a Python float does not widen a tensor
        assert (ddp.tensor([1, 2]) * 2.5).dtype is ddp.float32
        assert (ddp.tensor([1, 2]) * 2).dtype is ddp.int64
        assert (ddp.tensor([1, 2]) / 2).dtype is ddp.float32
        assert (ddp.tensor([True]) + 1).dtype is ddp.int64

    def test_numpy_operands_on_the_left(self):
        t = ddp.tensor([1.0, 2.0, 3.0])
        n = np.array([1.0, 1.0, 1.0], dtype=np.float32)
        for res, want in ((n + t, [2, 3, 4]), (n - t, [0, -1, -2]), (n * t, [1, 2, 3]),
                          (n / t, [1, 1 / 2, 1 / 3])):
            assert isinstance(res, ddp.Tensor)
            np.testing.assert_allclose(arr(res), want, rtol=1e-6)
        assert isinstance(n < t, ddp.Tensor)
        eq(n < t, [False, True, True])
        assert isinstance(np.float32(2.0) * t, ddp.Tensor)
        assert isinstance(t + n, ddp.Tensor)
        eq(np.ones((2, 1), dtype=np.float32) + t, [[2, 3, 4], [2, 3, 4]])

    def test_numpy_operand_promotes_like_a_tensor(self):
        t = ddp.tensor([1.0, 2.0])
        assert (t + np.array([1.0, 1.0])).dtype is ddp.float64
        assert (np.array([1.0, 1.0]) + t).dtype is ddp.float64

    def test_comparisons(self):
        a = ddp.tensor([1, 2, 3])
        eq(a == 2, [False, True, False], ddp.bool)
        eq(a != 2, [True, False, True], ddp.bool)
        eq(a < 2, [True, False, False])
        eq(a <= 2, [True, True, False])
        eq(a > ddp.tensor([0, 5, 1]), [True, False, True])
        eq(a >= ddp.tensor([[1], [3]]), [[True, True, True], [False, False, True]])
        eq(2 < a, [False, False, True])
        assert (a == ddp.tensor([1.0, 2.0, 3.5])).tolist() == [True, True, False]
        eq((a > 1) & (a < 3), [False, True, False])
        eq((a > 2) | (a < 2), [True, False, True])
        eq(~(a > 1), [True, False, False])
        assert a.equal(ddp.tensor([1, 2, 3])) and not a.equal(ddp.tensor([1, 2]))
        assert 2 in a and 7 not in a

    def test_matmul(self):
        a = ddp.tensor([[1.0, 2.0], [3.0, 4.0]])
        eq(a @ a, [[7, 10], [15, 22]])
        eq(a @ ddp.tensor([1.0, 1.0]), [3, 7])
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            a @ ddp.ones(3, 2)

    def test_arithmetic_matches_torch(self, oracle):
        rng = np.random.default_rng(0)
        xa = rng.standard_normal((3, 4)).astype(np.float32)
        ya = rng.standard_normal((4,)).astype(np.float32)
        ia = np.array([5, -3, 7, 2])
        exprs = ["x + y", "x - 2 * y", "x * y / 3", "(x > y)", "x ** 2 - y", "2 ** y",
                 "i // 2", "i % 3", "-i", "i / 2", "i * 1.5", "(x > 0) * 1.5", "x.clamp(-0.5, 0.5)"]

        def reference(torch):
            out = []
            for e in exprs:
                t = eval(e, {"x": torch.tensor(xa), "y": torch.tensor(ya), "i": torch.tensor(ia)})
                out.append((str(t.dtype)[6:], t.numpy()))
            return out

        for e, (dtype, values) in zip(exprs, oracle(reference)):
            d = eval(e, {"x": ddp.tensor(xa), "y": ddp.tensor(ya), "i": ddp.tensor(ia)})
            assert d.dtype.name == dtype, e
            np.testing.assert_allclose(arr(d), values, rtol=1e-6, err_msg=e)


# ====================================================================== in-place

class TestInplace:
    def test_add_sub_mul_div(self):
        t = ddp.tensor([1.0, 2.0])
        assert t.add_(1) is t
        eq(t, [2, 3])
        t.add_(ddp.tensor([1.0, 1.0]), alpha=2)
        eq(t, [4, 5])
        t.add_(1, alpha=3)
        eq(t, [7, 8])
        t.sub_(1, alpha=2)
        eq(t, [5, 6])
        assert t.mul_(2) is t
        eq(t, [10, 12])
        t.mul_(ddp.tensor([0.5, 0.25]))
        eq(t, [5, 3])
        t.div_(2)
        eq(t, [2.5, 1.5])
        t.add_(ddp.ones(1))  # broadcast operand
        eq(t, [3.5, 2.5])

    def test_inplace_keeps_dtype(self):
        t = ddp.tensor([1, 2])
        t.add_(1)
        eq(t, [2, 3], ddp.int64)
        f = ddp.ones(2, dtype=ddp.float16)
        f.mul_(ddp.tensor([2.0, 3.0]))  # a float32 operand is cast into float16
        eq(f, [2, 3], ddp.float16)
        with pytest.raises(RuntimeError):
            t.add_(1.5)  # float result can't be cast into an int tensor
        with pytest.raises(RuntimeError):
            ddp.ones(2).add_(ddp.ones(3, 2))  # cannot grow into the broadcast shape

    def test_zero_fill_clamp(self):
        t = ddp.tensor([-2.0, 0.5, 3.0])
        assert t.clamp_(-1, 1) is t
        eq(t, [-1, 0.5, 1])
        t.clamp_(min=0)
        eq(t, [0, 0.5, 1])
        t.clamp_(max=0.25)
        eq(t, [0, 0.25, 0.25])
        assert t.fill_(2) is t
        eq(t, [2, 2, 2])
        t.fill_(ddp.tensor(3.0))
        eq(t, [3, 3, 3])
        assert t.zero_() is t
        eq(t, [0, 0, 0])
        i = ddp.tensor([1, 2])
        i.fill_(7)
        eq(i, [7, 7], ddp.int64)

    def test_copy_(self):
        t = ddp.zeros(2, 3)
        assert t.copy_(ddp.tensor([1, 2, 3])) is t  # broadcast and cast int → float
        eq(t, [[1, 2, 3], [1, 2, 3]], ddp.float32)
        t.copy_(ddp.tensor([[4.0], [5.0]], dtype=ddp.float64))
        eq(t, [[4, 4, 4], [5, 5, 5]], ddp.float32)
        i = ddp.zeros(3, dtype=ddp.int64)
        i.copy_(ddp.tensor([1.7, -2.2, 3.9]))
        eq(i, [1, -2, 3], ddp.int64)  # truncation, as in PyTorch
        with pytest.raises(RuntimeError):
            t.copy_(ddp.ones(4))
        src = ddp.ones(2)
        dst = ddp.zeros(2)
        dst.copy_(src)
        src.add_(1)
        eq(dst, [1, 1])  # a copy, not an alias

    def test_augmented_assignment_keeps_identity(self):
        t = ddp.tensor([1.0, 2.0])
        data = t.numpy()
        ident = id(t)
        t += 1
        t *= 3
        t -= 1
        t /= 5
        assert id(t) == ident and np.shares_memory(t.numpy(), data)
        eq(t, np.array([1, 1.6], dtype=np.float32))
        with pytest.raises((RuntimeError, TypeError)):  # int /= gives a float: cannot store
            it = ddp.tensor([1, 2])
            it /= 2

    def test_misc_inplace(self):
        t = ddp.tensor([-1.0, 4.0])
        eq(t.clone().abs_(), [1, 4])
        eq(t.clone().neg_(), [1, -4])
        eq(t.clone().relu_(), [0, 4])
        eq(ddp.tensor([4.0, 9.0]).sqrt_(), [2, 3])
        eq(ddp.tensor([1.0, 2.0]).pow_(2), [1, 4])
        eq(ddp.zeros(2).exp_(), [1, 1])
        eq(t.clone().masked_fill_(t < 0, 0.0), [0, 4])


# ====================================================================== indexing

class TestIndexing:
    def setup_method(self):
        self.x = ddp.arange(12).reshape(3, 4)
        self.n = np.arange(12).reshape(3, 4)

    def test_basic(self):
        x, n = self.x, self.n
        for idx in (1, -1, (1, 2), slice(1, None), (slice(None), 1), (Ellipsis, -1),
                    (slice(None, None, 2), slice(1, 3)), (None, 1), (1, None, slice(None))):
            eq(x[idx], n[idx])
        assert isinstance(x[1, 2], ddp.Tensor) and x[1, 2].shape == ()
        assert x[1, 2].item() == 6

    def test_advanced(self):
        x, n = self.x, self.n
        eq(x[[0, 2]], n[[0, 2]])
        eq(x[ddp.tensor([0, 2])], n[[0, 2]])
        eq(x[ddp.tensor([0, 2]), ddp.tensor([1, 3])], n[[0, 2], [1, 3]])
        eq(x[:, [3, 0]], n[:, [3, 0]])
        eq(x[ddp.tensor([[0], [2]]), ddp.tensor([1, 2])], n[[[0], [2]], [1, 2]])

    def test_boolean_mask(self):
        x, n = self.x, self.n
        eq(x[x > 5], n[n > 5])
        eq(x[ddp.tensor([True, False, True])], n[[True, False, True]])
        eq(x[:, ddp.tensor([True, False, False, True])], n[:, [True, False, False, True]])

    def test_index_errors(self):
        with pytest.raises(IndexError):
            self.x[5]
        with pytest.raises(IndexError):
            self.x[0, 9]

    def test_setitem(self):
        x = ddp.zeros(3, 4)
        x[0] = 1.0
        x[1, 2] = 5
        x[:, 3] = ddp.tensor([7.0, 8.0, 9.0])
        x[2, :2] = ddp.tensor([[3.0, 4.0]])[0]
        eq(x, [[1, 1, 1, 7], [0, 0, 5, 8], [3, 4, 0, 9]])
        x[x > 4] = 0
        eq(x, [[1, 1, 1, 0], [0, 0, 0, 0], [3, 4, 0, 0]])
        x[ddp.tensor([0, 2]), ddp.tensor([0, 1])] = -1.0
        eq(x, [[-1, 1, 1, 0], [0, 0, 0, 0], [3, -1, 0, 0]])
        x[...] = 2
        eq(x, np.full((3, 4), 2))
        i = ddp.zeros(2, dtype=ddp.int64)
        i[0] = 3.7  # cast like PyTorch (truncation)
        eq(i, [3, 0], ddp.int64)

    def test_assignment_through_view_shows_in_base(self):
        x = ddp.zeros(2, 3)
        row = x[1]
        row[:] = 7
        eq(x, [[0, 0, 0], [7, 7, 7]])
        col = x[:, 0]
        col.fill_(-1)
        eq(x, [[-1, 0, 0], [-1, 7, 7]])
        v = x.view(6)
        v[2] = 4
        assert x[0, 2].item() == 4
        x.t()[2, 1] = 9
        assert x[1, 2].item() == 9
        x[0].add_(10)
        eq(x[0], [9, 10, 14])

    def test_advanced_index_is_a_copy(self):
        x = ddp.zeros(3)
        y = x[[0, 1]]
        y[0] = 5
        eq(x, [0, 0, 0])

    def test_iteration_and_len(self):
        x = ddp.tensor([[1, 2], [3, 4]])
        assert len(x) == 2
        rows = list(x)
        assert len(rows) == 2 and rows[1].tolist() == [3, 4]
        with pytest.raises(TypeError):
            len(ddp.tensor(1.0))


# ====================================================================== conversion and attributes

class TestConversion:
    def test_item_tolist_python_numbers(self):
        assert ddp.tensor(2.5).item() == 2.5 and isinstance(ddp.tensor(2.5).item(), float)
        assert ddp.tensor([3]).item() == 3 and isinstance(ddp.tensor([3]).item(), int)
        assert ddp.tensor(True).item() is True
        with pytest.raises(RuntimeError):
            ddp.tensor([1.0, 2.0]).item()
        assert ddp.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
        assert ddp.tensor(1.5).tolist() == 1.5
        assert float(ddp.tensor(1.5)) == 1.5 and int(ddp.tensor(3.7)) == 3
        assert bool(ddp.tensor(1.0)) and not bool(ddp.tensor(0))
        with pytest.raises(RuntimeError, match="ambiguous"):
            bool(ddp.tensor([1, 2]))
        assert [10, 20, 30][ddp.tensor(1)] == 20  # __index__
        assert f"{ddp.tensor(3.14159):.2f}" == "3.14"

    def test_numpy(self):
        t = ddp.tensor([1.0, 2.0])
        n = t.numpy()
        assert isinstance(n, np.ndarray) and n.dtype == np.float32
        g = ddp.tensor([1.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="requires grad"):
            g.numpy()
        assert g.detach().numpy().tolist() == [1.0]
        assert g.numpy(force=True).tolist() == [1.0]
        assert np.asarray(t).tolist() == [1.0, 2.0]
        assert np.asarray(t, dtype=np.float64).dtype == np.float64

    def test_shape_attributes(self):
        t = ddp.zeros(2, 3, 4)
        assert t.shape == (2, 3, 4) and t.size() == (2, 3, 4)
        assert isinstance(t.size(), ddp.Size)
        assert t.size(1) == 3 and t.size(-1) == 4
        assert t.dim() == 3 and t.ndim == 3 and t.ndimension() == 3
        assert t.numel() == 24 and t.nelement() == 24
        assert t.nbytes == 96 and t.element_size() == 4
        assert ddp.tensor(1.0).dim() == 0 and ddp.tensor(1.0).numel() == 1
        with pytest.raises(IndexError):
            t.size(3)
        assert t.is_contiguous() and not t.transpose(0, 1).is_contiguous()
        assert t.T.shape == (4, 3, 2)

    @pytest.mark.parametrize("method,dtype", [
        ("float", ddp.float32), ("double", ddp.float64), ("half", ddp.float16),
        ("bfloat16", ddp.bfloat16), ("int", ddp.int32), ("long", ddp.int64), ("bool", ddp.bool),
        ("short", ddp.int16), ("byte", ddp.uint8),
    ])
    def test_cast_methods(self, method, dtype):
        t = ddp.tensor([0.0, 1.5, -2.0])
        c = getattr(t, method)()
        assert c.dtype is dtype
        expected = np.array([0.0, 1.5, -2.0]).astype(np.float32)
        if dtype is ddp.bool:
            expected = expected != 0
        elif not dtype.is_floating_point:
            expected = expected.astype(dtype.np)
        np.testing.assert_array_equal(arr(c).astype(np.float64), expected.astype(np.float64))

    def test_to(self):
        t = ddp.tensor([1.5, 2.5])
        assert t.to(ddp.float32) is t  # no-op when nothing changes
        assert t.to("cpu") is t and t.cpu() is t
        assert t.to(ddp.float64).dtype is ddp.float64
        assert t.to(ddp.device("cpu"), ddp.float16).dtype is ddp.float16
        assert t.to(device="cpu", dtype=ddp.int64).tolist() == [1, 2]
        assert t.to(ddp.zeros(1, dtype=ddp.int32)).dtype is ddp.int32  # to(other)
        c = t.to(ddp.float32, copy=True)
        assert c is not t and c.equal(t)
        assert t.type(ddp.float64).dtype is ddp.float64
        assert t.type_as(ddp.tensor([1])).dtype is ddp.int64
        g = ddp.tensor([1.0, 2.0], requires_grad=True)
        g.to(ddp.float64).sum().backward()  # casts are differentiable
        assert g.grad.dtype is ddp.float32 and g.grad.tolist() == [1.0, 1.0]

    def test_pickle_round_trip(self):
        for t in (ddp.tensor([1.5, -2.0]), ddp.arange(6).reshape(2, 3),
                  ddp.tensor([True, False]), ddp.tensor(3.0, dtype=ddp.float64),
                  ddp.ones(2, dtype=ddp.bfloat16)):
            u = pickle.loads(pickle.dumps(t))
            assert u.dtype is t.dtype and u.shape == t.shape and u.equal(t)
        g = ddp.tensor([1.0], requires_grad=True)
        u = pickle.loads(pickle.dumps(g))
        assert u.requires_grad and u.is_leaf
        v = ddp.tensor([1.0, 2.0, 3.0])[1:]
        assert pickle.loads(pickle.dumps(v)).tolist() == [2.0, 3.0]


# ====================================================================== repr

REPR_CASES = [
    ("tensor", ([1.5, -2.25, 3.0],), {}),
    ("tensor", ([[1.0, -2.0], [3.5, 4.0]],), {}),
    ("tensor", ([1, 2, 3],), {}),
    ("tensor", ([[-1, 20], [300, 4]],), {}),
    ("tensor", ([1, 2],), {"dtype": "int32"}),
    ("tensor", ([True, False],), {}),
    ("tensor", ([1.0, 2.0],), {"requires_grad": True}),
    ("tensor", ([1.0, 2.0],), {"dtype": "float64"}),
    ("tensor", ([1.0, 2.0],), {"dtype": "float16"}),
    ("tensor", ([1.0, 2.5],), {"dtype": "bfloat16"}),
    ("tensor", (3.5,), {}),
    ("tensor", (5,), {}),
    ("tensor", (True,), {}),
    ("tensor", ([1e-5, 1.0],), {}),
    ("tensor", ([1e10, 1.0],), {}),
    ("tensor", ([1.0, 2000.0],), {}),
    ("tensor", ([float("nan"), float("inf"), 1.5],), {}),
    ("tensor", ([float("nan"), 1.0],), {}),
    ("tensor", ([-0.0, 0.0],), {}),
    ("tensor", ([0.1, 100.0, -3.333],), {}),
    ("zeros", (0,), {}),
    ("zeros", (2, 0), {}),
    ("zeros", (0,), {"dtype": "int64"}),
    ("zeros", (3,), {}),
    ("arange", (30.0,), {}),
    ("arange", (2000.0,), {}),
    ("arange", (2000,), {}),
]


def _make(lib, name, args, kwargs):
    kw = dict(kwargs)
    if "dtype" in kw:
        kw["dtype"] = getattr(lib, kw["dtype"])
    return getattr(lib, name)(*args, **kw)


class TestRepr:
    def test_known_layouts(self):
        assert repr(ddp.tensor([1.5, -2.25, 3.0])) == "tensor([ 1.5000, -2.2500,  3.0000])"
        assert repr(ddp.tensor([[1.0, -2.0], [3.5, 4.0]])) == \
            "tensor([[ 1.0000, -2.0000],\n        [ 3.5000,  4.0000]])"
        assert repr(ddp.tensor([1, 2, 3])) == "tensor([1, 2, 3])"
        assert repr(ddp.tensor([1, 2], dtype=ddp.int32)) == "tensor([1, 2], dtype=ddp.int32)"
        assert repr(ddp.tensor([True, False])) == "tensor([ True, False])"
        assert repr(ddp.tensor([1.0, 2.0], requires_grad=True)) == \
            "tensor([1., 2.], requires_grad=True)"
        assert repr(ddp.tensor(3.5)) == "tensor(3.5000)"
        r = repr(ddp.tensor([1.0, 2.0], requires_grad=True) * 2)
        assert r.startswith("tensor([2., 4.], grad_fn=<") and r.endswith("Backward0>)")
        assert str(ddp.tensor([1.0])) == repr(ddp.tensor([1.0]))

    @pytest.mark.parametrize("name,args,kwargs", REPR_CASES,
                             ids=[f"{c[0]}{c[1]}{c[2]}"[:60] for c in REPR_CASES])
    def test_matches_torch(self, oracle, name, args, kwargs):
        want = oracle(lambda torch: repr(_make(torch, name, args, kwargs))
                      .replace("torch.", "ddp."))
        assert repr(_make(ddp, name, args, kwargs)) == want

    def test_matches_torch_random_shapes(self, oracle):
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal((3, 20)), rng.standard_normal((50, 50)),
                  rng.standard_normal((2, 3, 4)), rng.standard_normal(100) * 1e5,
                  rng.standard_normal((2, 1000)), rng.integers(-1000, 1000, (30,)),
                  np.arange(1200).reshape(2, 3, 200), np.arange(2000).reshape(40, 50),
                  rng.standard_normal((7, 7, 7)) * 1e-6]
        values = [v for a in arrays for v in (a, a.astype(np.float32))]
        want = oracle(lambda torch: [repr(torch.tensor(v)).replace("torch.", "ddp.")
                                     for v in values])
        for v, w in zip(values, want):
            assert repr(ddp.tensor(v)) == w, (v.dtype, v.shape)

    def test_grad_fn_suffix_matches_torch_layout(self, oracle):
        import re

        def reprs(lib):
            x = lib.tensor([[1.0, -2.0], [3.5, 4.0]], requires_grad=True)
            y = (x * 2).sum(0)
            z = x.double() * 3
            return [repr(y), repr(z)]

        def norm(s):
            return re.sub(r"grad_fn=<\w+>", "grad_fn=<>", s.replace("torch.", "ddp."))
        want = oracle(lambda torch: [norm(s) for s in reprs(torch)])
        assert [norm(s) for s in reprs(ddp)] == want


# ====================================================================== bfloat16 on CPU

class TestBFloat16:
    def test_creation_arithmetic_and_float(self):
        b = ddp.tensor([1.0, 2.5, -3.0], dtype=ddp.bfloat16)
        assert b.dtype is ddp.bfloat16 and b.is_floating_point() and b.element_size() == 2
        assert ddp.zeros(2, dtype=ddp.bfloat16).dtype is ddp.bfloat16
        assert ddp.randn(3, dtype=ddp.bfloat16).dtype is ddp.bfloat16
        c = b * b + b
        assert c.dtype is ddp.bfloat16
        eq(c.float(), [2.0, 8.75, 6.0], ddp.float32)
        assert (b * 2).dtype is ddp.bfloat16
        assert (b + ddp.ones(3)).dtype is ddp.float32  # promotion, as in PyTorch
        assert (b + ddp.ones(3, dtype=ddp.float16)).dtype is ddp.float32
        assert b.exp().dtype is ddp.bfloat16 and b.sum().dtype is ddp.bfloat16
        assert ddp.tensor([1.5]).bfloat16().dtype is ddp.bfloat16
        assert b.tolist() == [1.0, 2.5, -3.0]
        x = ddp.tensor([1.0, 2.0], dtype=ddp.bfloat16, requires_grad=True)
        (x * x).sum().backward()
        assert x.grad.dtype is ddp.bfloat16 and x.grad.float().tolist() == [2.0, 4.0]

    def test_python_float_keeps_bfloat16(self):
        b = ddp.tensor([1.0, 2.5], dtype=ddp.bfloat16)
        assert (b * 2.5).dtype is ddp.bfloat16  # as in PyTorch (ml_dtypes alone gives float32)
        assert (b + 1.5).dtype is ddp.bfloat16
        assert (1.5 - b).dtype is ddp.bfloat16
        assert (b * 2.5).float().tolist() == [2.5, 6.25]


# ====================================================================== GPU (skipped without one)

@pytest.mark.gpu
class TestGPU:
    def test_creation_on_cuda(self):
        for dev in ("cuda", "cuda:0", ddp.device("cuda", 0)):
            t = ddp.zeros(2, 3, device=dev)
            assert t.is_cuda and t.device == "cuda:0" and t.device.index == 0
        t = ddp.tensor([1.0, 2.0], device="cuda")
        assert t.is_cuda and repr(t) == "tensor([1., 2.], device='cuda:0')"
        ddp.manual_seed(0)
        a = ddp.randn(4, device="cuda")
        ddp.manual_seed(0)
        b = ddp.randn(4, device="cuda")
        assert a.is_cuda and np.array_equal(arr(a), arr(b))  # a seed fixes the GPU's draws too
        assert not np.array_equal(arr(a), arr(ddp.randn(4, device="cuda")))

    def test_same_results_as_cpu(self):
        rng = np.random.default_rng(0)
        xa = rng.standard_normal((4, 3)).astype(np.float32)
        wa = rng.standard_normal((3, 2)).astype(np.float32)
        res = []
        for dev in ("cpu", "cuda"):
            x = ddp.tensor(xa, device=dev, requires_grad=True)
            w = ddp.tensor(wa, device=dev, requires_grad=True)
            y = ((x @ w).tanh() * 2 + x.sum(1, keepdim=True)).exp().mean()
            y.backward()
            assert x.grad.device == y.device == ddp.device(dev if dev == "cpu" else "cuda:0")
            res.append((arr(y), arr(x.grad), arr(w.grad)))
        for a, b in zip(*res):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

    def test_cpu_round_trip(self):
        t = ddp.arange(6, dtype=ddp.float32).reshape(2, 3)
        c = t.cuda()
        assert c.is_cuda and not t.is_cuda
        back = c.cpu()
        assert back.device == "cpu" and back.equal(t)
        assert t.to("cuda").to("cpu").equal(t)
        assert c.to(ddp.float64).is_cuda
        with pytest.raises(TypeError):
            c.numpy()
        x = ddp.ones(3, requires_grad=True)
        (x.cuda() * 2).sum().backward()  # the gradient comes back to the CPU leaf
        assert x.grad.device == "cpu" and x.grad.tolist() == [2.0, 2.0, 2.0]

    def test_mixed_devices_raise_naming_both(self):
        a = ddp.ones(2)
        b = ddp.ones(2, device="cuda")
        for op in (lambda: a + b, lambda: b * a, lambda: a @ b):
            with pytest.raises(RuntimeError) as info:
                op()
            msg = str(info.value)
            assert "cpu" in msg and "cuda" in msg

    def test_inplace_and_indexing_on_cuda(self):
        t = ddp.zeros(3, 4, device="cuda")
        t[1] = 2.0
        t[:, 0] = ddp.tensor([1.0, 2.0, 3.0], device="cuda")
        t.add_(1)
        t[t > 3] = 0
        expected = np.ones((3, 4))
        expected[1] = 3
        expected[:, 0] = [2, 3, 0]
        np.testing.assert_array_equal(arr(t), expected)
