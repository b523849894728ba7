"""``ddp.backends.cpu``: the CPU's vector capability as PyTorch reports it."""


def get_cpu_capability() -> str:
    """"DEFAULT": ddp leaves vectorisation to NumPy's BLAS."""
    return "DEFAULT"
