"""``ddp.backends.cuda``: CUDA switches. ``matmul.allow_tf32`` mirrors PyTorch's flag; CuPy
decides TF32 from the ``CUPY_TF32`` environment variable read before the first matmul."""
from .. import backend as _backend


class _MatmulFlags:
    allow_tf32 = False
    allow_fp16_reduced_precision_reduction = True
    allow_bf16_reduced_precision_reduction = True


matmul = _MatmulFlags()


def is_built() -> bool:
    """True when CuPy (ddp's CUDA backend) imports and sees a GPU."""
    return _backend.cuda_is_available()
