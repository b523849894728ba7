"""The built-in DDP communication hooks: plain allreduce, and fp16/bf16-compressed allreduce.

A hook is ``hook(state, bucket) -> Work`` whose value is the bucket's gradients averaged over
the ranks; ``state`` is the process group (None: the default group). The compressed hooks cast
the bucket to 16 bits, allreduce half the bytes, and cast back — usable with or without
autocast. On CPU prefer bf16: NumPy converts float16 several times slower than ml_dtypes
converts bfloat16 (8 ms against 0.75 ms for 2M values here); on GPU both are fast.

Example:
    >>> dist.init_process_group()
    >>> model = nn.parallel.DistributedDataParallel(nn.Linear(4, 2))
    >>> model.register_comm_hook(None, fp16_compress_hook)
    >>> F.mse_loss(model(ddp.randn(8, 4)), ddp.randn(8, 2)).backward()   # 16-bit allreduces
"""
from __future__ import annotations

from ...collectives import all_reduce
from ...process_group import get_world_size
from ....autograd.grad_mode import no_grad
from ....backend import bfloat16, float16


def allreduce_hook(process_group, bucket):
    """Average the bucket across ranks (what DDP does without a hook)."""
    with no_grad():
        tensor = bucket.buffer().div_(get_world_size(process_group))
    return all_reduce(tensor, group=process_group, async_op=True).then(lambda w: w.value()[0])


def _compress_hook(dtype, process_group, bucket):
    with no_grad():  # divide before the cast: 16-bit arithmetic is slow in NumPy
        compressed = (bucket.buffer() / get_world_size(process_group)).to(dtype)
    work = all_reduce(compressed, group=process_group, async_op=True)

    def decompress(w):
        out = bucket.buffer()
        with no_grad():
            out.copy_(w.value()[0])
        return out
    return work.then(decompress)


def fp16_compress_hook(process_group, bucket):
    """Allreduce the bucket as float16 (half the bytes), divided by the world size first so
    the sum stays in range, then cast back to the gradients' dtype."""
    return _compress_hook(float16, process_group, bucket)


def bf16_compress_hook(process_group, bucket):
    """Allreduce the bucket as bfloat16 (half the bytes, float32's range), then cast back."""
    return _compress_hook(bfloat16, process_group, bucket)
