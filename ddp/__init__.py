"""ddp: a PyTorch-shaped deep-learning framework on NumPy (CPU) and CuPy (GPU), built for
distributed data-parallel training over MPI.

Typical PyTorch code runs after ``import ddp as torch``.

Example:
    >>> import ddp as torch
    >>> x = torch.randn(4, 3, requires_grad=True)
    >>> (x ** 2).sum().backward()
    >>> torch.allclose(x.grad, 2 * x)
    True
"""
from __future__ import annotations

from . import _malloc
_malloc.tune()   # (first: every array after it comes from the tuned heap)
from . import backend  # noqa: E402
from .backend import (Generator, bfloat16, bool, default_generator, device, double, dtype, float,
                      float16, float32, float64, get_default_device, get_default_dtype,
                      get_rng_state, half, initial_seed, int, int8, int16, int32, int64, long,
                      manual_seed, seed, set_default_device, set_default_dtype, set_rng_state,
                      short, uint8)
from .tensor import Size, Tensor, bmm, matmul, mm, where
from .creation import (arange, as_tensor, asarray, bernoulli, empty, empty_like, eye, from_numpy,
                       full, full_like, linspace, logspace, multinomial, normal, ones, ones_like,
                       rand, rand_like, randint, randint_like, randn, randn_like, randperm, tensor,
                       zeros, zeros_like)
from . import autograd
from .autograd import enable_grad, inference_mode, no_grad, set_grad_enabled, is_grad_enabled
from .autograd.grad_mode import is_inference_mode_enabled
from ._functions import (FUNCTIONS as _FUNCTIONS, broadcast_shapes, broadcast_tensors, cat, concat,
                         cdist, concatenate, einsum, hstack, is_tensor, max, meshgrid, min,
                         stack, vstack)
from . import cuda

globals().update({k: v for k, v in _FUNCTIONS.items() if k not in globals()})

from ._legacy_types import CPU_TYPES as _CPU_TYPES  # noqa: E402  FloatTensor, LongTensor, ...
globals().update(_CPU_TYPES)
from . import sparse  # noqa: E402  (sparse COO tensors; Tensor.to_sparse / layout)
from .sparse import sparse_coo, sparse_coo_tensor, strided  # noqa: E402

from ._version import __version__  # noqa: E402


def is_floating_point(input):
    """True when the tensor's dtype is a floating point type."""
    return input.is_floating_point()


def numel(input):
    """The number of elements of a tensor."""
    return input.numel()


def get_device(input):
    return -1 if input.device.type == "cpu" else input.device.index


from . import nn  # noqa: E402  (after everything nn's modules import from ddp)
from .serialization import save, load  # noqa: E402
from . import metrics  # noqa: E402
from . import utils  # noqa: E402  (ddp.utils.data: datasets, samplers, DataLoader)
from . import optim  # noqa: E402  (optimizers and lr_scheduler)
from . import distributed  # noqa: E402
from .accumulation import GradientAccumulator  # noqa: E402
from . import amp  # noqa: E402  (ddp.amp.autocast, ddp.amp.GradScaler)
from .amp.autocast_mode import *  # noqa: E402,F401,F403  ddp.autocast, ddp.is_autocast_enabled, ...
from . import onnx  # noqa: E402  (ddp.onnx.export; the onnx package is imported on first use)
from .qtensor import (dequantize, per_channel_affine, per_channel_symmetric,  # noqa: E402
                      per_tensor_affine, per_tensor_symmetric, qint8, qint32, qscheme,
                      quantize_per_channel, quantize_per_tensor, quint8)
from . import ao, quantization  # noqa: E402  (ddp.ao.quantization.quantize_dynamic)
from . import profiler  # noqa: E402  (ddp.profiler.profile, record_function)
from . import accelerator, backends, multiprocessing, version  # noqa: E402  (namespaces programs import)
from ._compat import *  # noqa: E402,F401,F403  (set_num_threads, compile, finfo, channels_last, ...)
from ._format import set_printoptions  # noqa: E402,F401
