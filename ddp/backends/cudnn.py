"""``ddp.backends.cudnn``: cuDNN's switches. ddp has no cuDNN (CuPy 14 dropped it), so the
flags change nothing; they keep PyTorch's defaults and accept assignment."""

enabled = True
benchmark = False
benchmark_limit = 10
deterministic = False
allow_tf32 = True


def is_available() -> bool:
    """False: ddp's GPU path is CuPy without cuDNN."""
    return False


def version():
    """None, as PyTorch answers where cuDNN is absent."""
    return None


def is_acceptable(tensor) -> bool:
    return False
