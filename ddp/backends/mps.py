"""``ddp.backends.mps``: Apple's Metal backend, which ddp does not have."""


def is_available() -> bool:
    """False: ddp runs on NumPy (CPU) and CuPy (CUDA) only."""
    return False


def is_built() -> bool:
    return False
