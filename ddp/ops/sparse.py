"""Products of a sparse COO matrix (SciPy's on the CPU, CuPy's ``cupyx.scipy.sparse`` on a GPU)
with a dense operand, with the gradient to the dense side: ``d(S @ D)/dD`` applied to ``g`` is
``S^T @ g``. The sparse matrix is a constant of the op (graph attention networks scale features
and mask attention with one), passed as a keyword so the engine sees only the dense input.
"""
from __future__ import annotations

from ..autograd.graph import Op


class SparseMM(Op):
    """``S @ D`` for a sparse ``S`` (n, k) and a dense ``D`` (k, m) or (k,): a dense result.
    Its backward is the same op with ``S^T``, so it is recorded under ``create_graph`` too."""

    @staticmethod
    def forward(ctx, d, s=None):
        ctx.s = s
        return s @ d

    @staticmethod
    def backward(ctx, g):
        return SparseMM.run(g, s=ctx.s.T.tocoo())
