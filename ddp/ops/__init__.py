"""Differentiable primitives: each op's forward and backward side by side.

``elementwise`` (arithmetic and unary math), ``reduction`` (sum, mean, max, norm, ...), ``shape``
(reshape, permute, indexing, gather/scatter, matmul), ``matrix`` (diagonals, triangles) and
``tnp`` (NumPy names over Tensors, used
by backward formulas under create_graph).
"""
from . import elementwise, matrix, reduction, shape, tnp  # noqa: F401
