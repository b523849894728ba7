"""The exporter's errors, named as ``torch.onnx.errors``'s.

Example:
    >>> from ddp.onnx.errors import UnsupportedOperatorError
    >>> str(UnsupportedOperatorError("CumProd", 20))
    "Exporting the operator 'CumProd' to ONNX opset version 20 is not supported"
"""
from __future__ import annotations

__all__ = ["OnnxExporterError", "UnsupportedOperatorError"]


class OnnxExporterError(RuntimeError):
    """An error of the ONNX exporter (a ``RuntimeError``, as PyTorch's)."""


class UnsupportedOperatorError(OnnxExporterError):
    """An operation met while tracing the forward has no ONNX conversion; ``detail`` says where
    it came from or what to use instead."""

    def __init__(self, name: str, version: int, detail: str = ""):
        msg = f"Exporting the operator '{name}' to ONNX opset version {version} is not supported"
        super().__init__(msg + (f": {detail}" if detail else ""))
        self.name = name
