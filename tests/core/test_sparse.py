"""Sparse COO tensors (ddp.sparse) against PyTorch: construction, to_dense/to_sparse,
coalescing, products with dense operands on either side and their gradient to the dense side,
dense + sparse, and the errors."""
from __future__ import annotations

import numpy as np
import pytest

import ddp
from ddp.autograd import gradcheck, gradgradcheck

IDX = np.array([[0, 1, 1, 2, 0], [2, 0, 0, 1, 2]])
VAL = np.array([1.5, -2.0, 0.5, 3.0, 1.0])


def test_sparse_matches_torch(oracle):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((3, 4))
    left = rng.standard_normal((2, 3))
    vec = rng.standard_normal(3)
    g = rng.standard_normal((3, 4))

    def reference(torch):
        s = torch.sparse_coo_tensor(torch.tensor(IDX), torch.tensor(VAL), (3, 3))
        d = torch.tensor(dense, requires_grad=True)
        out = s @ d
        out.backward(torch.tensor(g))
        c = s.coalesce()
        return {"dense": s.to_dense().numpy(), "indices": c.indices().numpy(),
                "values": c.values().numpy(), "nnz": c._nnz(), "mm": out.detach().numpy(),
                "grad": d.grad.numpy(), "left": (torch.tensor(left) @ s).numpy(),
                "vec": (s @ torch.tensor(vec)).numpy(),
                "sparse_mm": torch.sparse.mm(s, torch.tensor(dense)).numpy(),
                "plus": (torch.eye(3, dtype=torch.float64) + s).numpy(),
                "roundtrip": torch.tensor(dense).to_sparse().to_dense().numpy(),
                "int_plus": (torch.eye(3) + torch.sparse_coo_tensor(
                    IDX, torch.ones(5), (3, 3), dtype=torch.int64)).numpy(),
                "layout": str(s.layout), "is_sparse": s.is_sparse}

    ref = oracle(reference)
    s = ddp.sparse_coo_tensor(ddp.tensor(IDX), ddp.tensor(VAL), (3, 3))
    d = ddp.tensor(dense, requires_grad=True)
    out = s @ d
    out.backward(ddp.tensor(g))
    c = s.coalesce()
    np.testing.assert_allclose(s.to_dense().numpy(), ref["dense"])
    np.testing.assert_array_equal(c.indices().numpy(), ref["indices"])
    np.testing.assert_allclose(c.values().numpy(), ref["values"])
    assert c._nnz() == int(ref["nnz"]) and c.is_coalesced()
    np.testing.assert_allclose(out.detach().numpy(), ref["mm"], rtol=1e-12)
    np.testing.assert_allclose(d.grad.numpy(), ref["grad"], rtol=1e-12)
    np.testing.assert_allclose((ddp.tensor(left) @ s).numpy(), ref["left"], rtol=1e-12)
    np.testing.assert_allclose((s @ ddp.tensor(vec)).numpy(), ref["vec"], rtol=1e-12)
    np.testing.assert_allclose(ddp.sparse.mm(s, ddp.tensor(dense)).numpy(), ref["sparse_mm"])
    np.testing.assert_allclose((ddp.eye(3, dtype=ddp.float64) + s).numpy(), ref["plus"])
    np.testing.assert_allclose(ddp.tensor(dense).to_sparse().to_dense().numpy(),
                               ref["roundtrip"])
    int_plus = ddp.eye(3) + ddp.sparse_coo_tensor(IDX, ddp.ones(5), (3, 3), dtype=ddp.int64)
    assert int_plus.dtype == ddp.float32
    np.testing.assert_allclose(int_plus.numpy(), ref["int_plus"])
    assert str(s.layout).split(".")[-1] == ref["layout"].split(".")[-1]
    assert s.is_sparse == ref["is_sparse"] and not d.is_sparse
    assert str(d.layout) == "ddp.strided"


def test_gradient_to_the_dense_side_gradchecks():
    """First and second derivatives: SparseMM's backward is SparseMM with S^T."""
    s = ddp.sparse_coo_tensor(IDX, VAL, (3, 3))
    d = ddp.tensor(np.random.default_rng(1).standard_normal((3, 2)), requires_grad=True)
    for fn in (lambda x: s @ x, lambda x: x.t() @ s, lambda x: (s @ x) * (s @ x)):
        assert gradcheck(fn, (d,)) and gradgradcheck(fn, (d,))


def test_sparse_errors():
    with pytest.raises(RuntimeError, match="out of bounds for dimension 1 with size 2"):
        ddp.sparse_coo_tensor([[0, 1], [0, 2]], [1.0, 2.0], (2, 2))
    with pytest.raises(RuntimeError, match="number of values must match nnz"):
        ddp.sparse_coo_tensor([[0, 1], [0, 1]], [1.0], (2, 2))
    s = ddp.sparse_coo_tensor([[0, 1], [0, 1]], [1.0, 2.0], (2, 2))
    with pytest.raises(RuntimeError, match=r"sparse \[2, 2\] and dense \[3, 1\] cannot"):
        s @ ddp.ones(3, 1)
    with pytest.raises(NotImplementedError, match="to_dense"):
        s.sum()
    with pytest.raises(RuntimeError, match="uncoalesced"):
        ddp.sparse_coo_tensor([[1, 0], [0, 1]], [1.0, 2.0], (2, 2)).indices()
    with pytest.raises(NotImplementedError, match="only 2-D"):
        ddp.ones(2, 2, 2).to_sparse()
