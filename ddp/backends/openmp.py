"""``ddp.backends.openmp``: whether PyTorch was built with OpenMP; ddp's threads are BLAS's."""


def is_available() -> bool:
    return False
