"""Bad op input gets PyTorch's exception type and a message naming the op, the value and the
shapes (issue 12): each case runs under torch through the oracle, which records the exception's
type name and message; ddp must raise the same type, and its message must contain the fragment
listed (PyTorch's own words where they name the problem, else ddp's naming of the op)."""
from __future__ import annotations

import pytest

import ddp


def _cases(m):
    x = m.arange(12.0).reshape(3, 4)
    idx = m.tensor([[0, 5], [1, 2], [0, 0]])
    return {
        "reshape_-2": (lambda: x.reshape(-2, 3), "invalid shape dimension -2"),
        "reshape_two_inferred": (lambda: x.reshape(-1, -1), "only one dimension can be inferred"),
        "reshape_size": (lambda: x.reshape(5, 3), "is invalid for input of size 12"),
        "view_non_contiguous": (lambda: x.t().view(12), "view size is not compatible"),
        "view_of_slice": (lambda: x[:, :2].view(6), "Use .reshape(...) instead"),
        "int_floordiv_zero": (lambda: m.tensor([3, 4]) // m.tensor([1, 0]), "ZeroDivisionError"),
        "int_floordiv_scalar": (lambda: m.tensor([3, 4]) // 0, "ZeroDivisionError"),
        "int_remainder_zero": (lambda: m.tensor([3, 4]) % 0, "ZeroDivisionError"),
        "int_div_floor_zero": (lambda: m.tensor([3]).div(0, rounding_mode="floor"),
                               "ZeroDivisionError"),
        "int_div_trunc_zero": (lambda: m.tensor([3, 4]).div(m.tensor([0, 1]),
                                                             rounding_mode="trunc"),
                               "ZeroDivisionError"),
        "negative_size": (lambda: m.zeros(2, -3), "zeros"),
        "negative_size_empty": (lambda: m.empty(-1), "negative dimension -1"),
        "gather_out_of_range": (lambda: x.gather(1, idx),
                                "index 5 is out of bounds for dimension 1 with size 4"),
        "gather_negative": (lambda: x.gather(1, m.tensor([[-1]])),
                            "index -1 is out of bounds for dimension 1 with size 4"),
        "scatter_out_of_range": (lambda: x.scatter(1, idx, m.ones(3, 2)),
                                 "index 5 is out of bounds for dimension 1 with size 4"),
        "scatter_add_out_of_range": (lambda: x.scatter_add(1, idx, m.ones(3, 2)),
                                     "index 5 is out of bounds for dimension 1 with size 4"),
        "index_select_dim0": (lambda: x.index_select(0, m.tensor([-1])), "index out of range"),
        "index_select_dim1": (lambda: x.index_select(1, m.tensor([0, 4])), "4"),
        "topk_too_large": (lambda: x.topk(5), "selected index k out of range"),
        "select_out_of_range": (lambda: x.select(0, 3), "select(): index 3 out of range"),
        "take_out_of_range": (lambda: x.take(m.tensor([12])),
                              "tried to access index 12 on a tensor of 12 elements"),
        "permute_duplicate": (lambda: x.permute(0, 0), "duplicate dims are not allowed"),
        "split_zero": (lambda: x.split(0), "split_size can only be 0 if dimension size is 0"),
        "chunk_zero": (lambda: x.chunk(0), "chunk expects `chunks` to be greater than 0"),
        "flatten_order": (lambda: x.flatten(1, 0), "start_dim cannot come after end_dim"),
        "randint_empty_range": (lambda: m.randint(5, 2, (3,)), "from=5 >= to=2"),
        "linspace_negative": (lambda: m.linspace(0, 1, -1), "number of steps must be non-negative"),
        "multinomial_negative": (lambda: m.multinomial(m.tensor([-1.0, 1.0]), 1),
                                 "element < 0"),
        "getitem_out_of_range": (lambda: x[3], "out of bounds"),
        "squeeze_dim": (lambda: x.squeeze(2), "Dimension out of range"),
        "mm_shapes": (lambda: x.mm(x), "3x4 and 3x4"),
        "cat_shapes": (lambda: m.cat([x, m.ones(2, 3)]), "Sizes of tensors must match"),
        "embedding_out_of_range": (lambda: m.nn.functional.embedding(m.tensor([5]), m.ones(3, 2)),
                                   "index out of range"),
        "einsum_operand_count": (lambda: m.einsum("ij,jk->ik", x), "fewer operands"),
        "einsum_dims": (lambda: m.einsum("ijk->i", x), "number of subscripts in the equation"),
        "einsum_sizes": (lambda: m.einsum("ij,ij->i", x, m.ones(3, 5)), "subscript j"),
        "einsum_output": (lambda: m.einsum("ij->k", x), "output subscript k"),
        "kthvalue_k": (lambda: x.kthvalue(5), "kthvalue(): selected number k out of range"),
        "bincount_negative": (lambda: m.tensor([-1, 2]).bincount(),
                              "bincount only supports 1-d non-negative integral inputs"),
        "tensor_split_zero": (lambda: x.tensor_split(0), "number of sections must be larger "
                                                          "than 0"),
        "meshgrid_2d": (lambda: m.meshgrid(x, x, indexing="ij"), "Expected 0D or 1D tensor"),
        "cdist_dims": (lambda: m.cdist(x, m.ones(2, 5)), "cdist only supports"),
        "cross_entropy_target": (lambda: m.nn.functional.cross_entropy(m.ones(2, 3),
                                                                       m.tensor([0, 3])),
                                 "out of bounds"),
    }


NAMES = list(_cases(ddp))


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_matches_torch(oracle, name):
    def reference(torch):
        fn, _ = _cases(torch)[name]
        try:
            fn()
        except Exception as exc:
            return {"type": type(exc).__name__, "message": str(exc).split("\n")[0]}
        return {"type": "no exception", "message": ""}

    ref = oracle(reference)
    fn, fragment = _cases(ddp)[name]
    with pytest.raises(Exception) as info:
        fn()
    assert type(info.value).__name__ == ref["type"], (name, info.value, ref)
    assert fragment in str(info.value), (fragment, str(info.value))
