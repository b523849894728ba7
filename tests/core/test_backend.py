"""ddp.backend: devices, dtypes, the default dtype, promotion, random generators, and how the
absence of CuPy/a GPU is reported. GPU behaviour is in test_tensor_api.py (marked ``gpu``)."""
import pickle

import numpy as np
import pytest

import ddp
from ddp import backend

# ====================================================================== devices


def test_device_parsing():
    d = ddp.device("cuda:1")
    assert d.type == "cuda" and d.index == 1
    assert ddp.device("cuda", 1) == d
    assert ddp.device("cuda").index is None
    assert ddp.device("cpu").type == "cpu" and ddp.device("cpu").index is None
    assert ddp.device(0) == ddp.device("cuda:0")
    assert ddp.device(d) == d and ddp.device(d) is not None


def test_device_equality_hash_and_strings():
    assert ddp.device("cpu") == "cpu"
    assert ddp.device("cpu") != "cuda"
    assert ddp.device("cuda:0") != ddp.device("cuda:1")
    assert ddp.device("cuda:0") != ddp.device("cuda")
    assert {ddp.device("cpu"): 1}[ddp.device("cpu")] == 1
    assert str(ddp.device("cuda:1")) == "cuda:1" and str(ddp.device("cpu")) == "cpu"
    assert repr(ddp.device("cpu")) == "device(type='cpu')"
    assert repr(ddp.device("cuda:2")) == "device(type='cuda', index=2)"


def test_device_repr_matches_torch(oracle):
    specs = ("cpu", "cuda", "cuda:3")
    want = oracle(lambda torch: [(repr(torch.device(s)), str(torch.device(s))) for s in specs])
    assert [(repr(ddp.device(s)), str(ddp.device(s))) for s in specs] == want


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cpu:1", "tpu:0"])
def test_bad_device_strings(bad):
    with pytest.raises(RuntimeError):
        ddp.device(bad)


def test_device_type_error():
    with pytest.raises(TypeError):
        ddp.device(1.5)


def test_as_device_and_device_of():
    assert backend.as_device(None) == "cpu"
    assert backend.as_device("cpu") is not None
    assert backend.device_of(np.zeros(2)) == "cpu"
    assert backend.get_array_module(np.zeros(2)) is np
    assert backend.array_module_of_device("cpu") is np
    assert backend.to_device(np.zeros(2), backend.CPU) is not None


# ====================================================================== without a GPU

no_gpu = pytest.mark.skipif(ddp.cuda.is_available(), reason="checks the error without a GPU")


@no_gpu
def test_cuda_unavailable_reports():
    assert ddp.cuda.is_available() is False
    assert ddp.cuda.device_count() == 0
    ddp.cuda.synchronize()  # a no-op without a GPU
    ddp.cuda.manual_seed(0)
    ddp.cuda.manual_seed_all(0)


@no_gpu
@pytest.mark.parametrize("make", [
    lambda: ddp.zeros(2, device="cuda"),
    lambda: ddp.ones(2, device="cuda:0"),
    lambda: ddp.tensor([1.0], device="cuda"),
    lambda: ddp.tensor([1.0], device="cuda:0"),
    lambda: ddp.randn(2, device="cuda"),
    lambda: ddp.arange(3, device=ddp.device("cuda")),
    lambda: ddp.ones(2).cuda(),
    lambda: ddp.ones(2).to("cuda"),
    lambda: ddp.ones(2).to(ddp.device("cuda", 0)),
    lambda: ddp.cuda.current_device(),
    lambda: ddp.cuda.set_device(0),
], ids=["zeros", "ones", "tensor", "tensor:0", "randn", "arange", ".cuda", ".to", ".to(dev)",
        "current_device", "set_device"])
def test_cuda_without_cupy_raises_clearly(make):
    with pytest.raises(RuntimeError, match="CuPy"):
        make()
    # a second attempt gives the same clear error (the failure is remembered, not re-raised raw)
    with pytest.raises(RuntimeError, match="CuPy"):
        make()


# ====================================================================== dtypes

DTYPES = [
    # dtype, numpy, floating, itemsize, signed
    (ddp.float16, np.float16, True, 2, True),
    (ddp.bfloat16, None, True, 2, True),
    (ddp.float32, np.float32, True, 4, True),
    (ddp.float64, np.float64, True, 8, True),
    (ddp.uint8, np.uint8, False, 1, False),
    (ddp.int8, np.int8, False, 1, True),
    (ddp.int16, np.int16, False, 2, True),
    (ddp.int32, np.int32, False, 4, True),
    (ddp.int64, np.int64, False, 8, True),
    (ddp.bool, np.bool_, False, 1, False),
]


@pytest.mark.parametrize("dt,npd,floating,size,signed", DTYPES, ids=[d[0].name for d in DTYPES])
def test_dtype_table(dt, npd, floating, size, signed):
    assert dt.is_floating_point is floating
    assert dt.itemsize == size
    assert dt.is_signed is signed
    assert dt.is_complex is False
    assert repr(dt) == str(dt) == f"ddp.{dt.name}"
    if npd is not None:
        assert dt.np == np.dtype(npd)
        assert backend.from_numpy_dtype(np.dtype(npd)) is dt
    assert pickle.loads(pickle.dumps(dt)) is dt
    t = ddp.zeros(2, dtype=dt)
    assert t.dtype is dt and t.element_size() == size and t.itemsize == size
    assert t.is_floating_point() is floating


def test_dtype_table_matches_torch(oracle):
    names = [dt.name for dt, *_ in DTYPES]

    def table(lib):
        return [(bool(d.is_floating_point), int(d.itemsize), bool(d.is_signed),
                 repr(d).replace(f"{lib.__name__}.", "lib."))
                for d in (getattr(lib, n) for n in names)]
    want = oracle(table)
    for name, got, ref in zip(names, table(ddp), want):
        assert got == (bool(ref[0]), int(ref[1]), bool(ref[2]), ref[3]), name
    assert len(want) == len(names)


def test_dtype_aliases():
    assert ddp.float is ddp.float32 and ddp.double is ddp.float64 and ddp.half is ddp.float16
    assert ddp.long is ddp.int64 and ddp.int is ddp.int32 and ddp.short is ddp.int16
    assert ddp.float32 == ddp.float32 and ddp.float32 != ddp.float64


def test_to_numpy_dtype_accepts_python_types_and_names():
    assert backend.to_numpy_dtype(float) == np.float64  # Python's float is a double, as in torch
    assert backend.to_numpy_dtype(int) == np.int64
    assert backend.to_numpy_dtype(bool) == np.bool_
    assert backend.to_numpy_dtype("float64") == np.float64
    assert backend.to_numpy_dtype(np.float16) == np.float16
    with pytest.raises(TypeError):
        backend.from_numpy_dtype(np.dtype(np.complex64))
    with pytest.raises(TypeError):
        ddp.tensor(np.array(["a"]))


def test_default_dtype():
    assert ddp.get_default_dtype() is ddp.float32
    try:
        ddp.set_default_dtype(ddp.float64)
        assert ddp.get_default_dtype() is ddp.float64
        assert ddp.tensor([1.5]).dtype is ddp.float64
        assert ddp.zeros(2).dtype is ddp.float64
        assert ddp.rand(2).dtype is ddp.float64
        assert ddp.arange(2.0).dtype is ddp.float64
        assert ddp.full((2,), 1.5).dtype is ddp.float64
        assert ddp.tensor([1, 2]).dtype is ddp.int64
        assert repr(ddp.tensor([1.0, 2.0])) == "tensor([1., 2.])"
        assert repr(ddp.tensor([1.0, 2.0], dtype=ddp.float32)) == \
            "tensor([1., 2.], dtype=ddp.float32)"
        assert (ddp.ones(2, dtype=ddp.int64) / 2).dtype is ddp.float64
    finally:
        ddp.set_default_dtype(ddp.float32)
    assert ddp.tensor([1.5]).dtype is ddp.float32
    with pytest.raises(TypeError):
        ddp.set_default_dtype(ddp.int64)


def test_promote_types_follow_torch(oracle):
    names = ["float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32",
             "int64", "bool"]
    want = oracle(lambda torch: [[str(torch.promote_types(getattr(torch, a), getattr(torch, b)))
                                  .replace("torch.", "") for b in names] for a in names])
    for a, row in zip(names, want):
        for b, w in zip(names, row):
            got = backend.promote_types(getattr(ddp, a).np, getattr(ddp, b).np)
            assert backend.from_numpy_dtype(got).name == w, (a, b)


# ====================================================================== random numbers

def test_manual_seed_reproducible():
    ddp.manual_seed(123)
    a = (ddp.rand(3), ddp.randn(2, 2), ddp.randint(0, 10, (4,)), ddp.randperm(6),
         ddp.normal(0.0, 1.0, (3,)))
    ddp.manual_seed(123)
    b = (ddp.rand(3), ddp.randn(2, 2), ddp.randint(0, 10, (4,)), ddp.randperm(6),
         ddp.normal(0.0, 1.0, (3,)))
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.equal(y)
    assert ddp.initial_seed() == 123
    assert not ddp.rand(3).equal(a[0])  # the stream moves on


def test_rng_state_round_trip():
    ddp.manual_seed(5)
    state = ddp.get_rng_state()
    a = ddp.randn(4)
    ddp.set_rng_state(state)
    assert ddp.randn(4).equal(a)


def test_generator():
    g1 = ddp.Generator().manual_seed(7)
    g2 = ddp.Generator()
    assert g2.manual_seed(7) is g2
    assert ddp.rand(5, generator=g1).equal(ddp.rand(5, generator=g2))
    assert ddp.randn(2, 3, generator=g1).equal(ddp.randn(2, 3, generator=g2))
    assert ddp.randint(0, 100, (5,), generator=g1).equal(ddp.randint(0, 100, (5,), generator=g2))
    assert ddp.randperm(8, generator=g1).equal(ddp.randperm(8, generator=g2))
    assert g1.initial_seed() == 7
    # a private generator does not disturb the default one
    ddp.manual_seed(0)
    ref = ddp.rand(3)
    ddp.manual_seed(0)
    ddp.rand(100, generator=g1)
    assert ddp.rand(3).equal(ref)
    s = ddp.Generator().seed()
    assert isinstance(s, int)


def test_generator_state_and_inplace_samplers():
    g = ddp.Generator().manual_seed(3)
    st = g.get_state()
    a = ddp.empty(4).uniform_(-1, 1, generator=g)
    g.set_state(st)
    b = ddp.empty(4).uniform_(-1, 1, generator=g)
    assert a.equal(b)
    assert float(a.min()) >= -1 and float(a.max()) < 1
    ddp.manual_seed(1)
    n1 = ddp.zeros(1000).normal_(2.0, 0.5)
    assert abs(float(n1.mean()) - 2.0) < 0.1 and abs(float(n1.std()) - 0.5) < 0.1


@pytest.mark.parametrize("index_shape", [(40,), (8, 9)])
def test_index_add_at_rows_matches_numpy_add_at(index_shape):
    rng = np.random.default_rng(0)
    index = rng.integers(-10, 10, index_shape)           # repeats, and -1 aliasing row 19
    values = rng.standard_normal(index_shape + (3, 2))
    expected = np.zeros((20, 3, 2))
    np.add.at(expected, index, values)
    out = np.zeros((20, 3, 2))
    backend.index_add_at(out, index, values)
    np.testing.assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
@pytest.mark.parametrize("into_zeros", [False, True])
def test_index_add_at_rows_onto_values_and_into_zeros(dtype, into_zeros):
    # rounds of distinct rows, stored with put on rows seen as void: onto an array that is
    # not zero (added) or into zeros (the first round stored), values broadcast (stride 0)
    # or dense, a non-contiguous out (fancy indexing instead)
    rng = np.random.default_rng(1)
    index = rng.integers(0, 30, (6, 8))
    start = np.zeros((30, 4), dtype) if into_zeros else (rng.standard_normal((30, 4)) * 3).astype(dtype)
    for values in (rng.standard_normal((6, 8, 4)).astype(dtype) * 3,
                   np.broadcast_to(np.ones((), dtype), (6, 8, 4))):
        expected = start.copy()
        np.add.at(expected, index, values)
        out = start.copy()
        backend.index_add_at(out, (index,), values, into_zeros=into_zeros)
        np.testing.assert_array_equal(out, expected)
    strided = np.zeros((30, 8), dtype)[:, ::2]
    expected = strided.copy()
    np.add.at(expected, index, values)
    backend.index_add_at(strided, index, values, into_zeros=True)
    np.testing.assert_array_equal(strided, expected)


def test_default_device_is_cpu_and_cuda_needs_a_gpu():
    assert ddp.get_default_device() == ddp.device("cpu")
    assert ddp.zeros(1).device == ddp.device("cpu")
    if not ddp.cuda.is_available():
        with pytest.raises(RuntimeError, match="CuPy"):
            ddp.set_default_device("cuda")
        assert ddp.get_default_device() == ddp.device("cpu")   # unchanged by the failed call
    ddp.set_default_device("cpu")
    assert ddp.tensor([1.0]).device == ddp.device("cpu")
