"""The names docstring examples and the documentation's code blocks run with, in one place.

Used by the repository-root conftest.py (``python -m pytest --doctest-modules ddp launcher``)
and by tests/test_docs.py (the same examples inside ``python -m pytest tests``).
"""
import numpy as np


def example_names(tmp_path):
    """``ddp``, ``torch`` (ddp itself, as a user would import it), ``np``, ``nn``, ``F``,
    ``dist`` (ddp.distributed) and ``tmp_path`` (a fresh folder, for examples that write
    files), the way the examples are written."""
    import ddp
    import ddp.distributed as dist
    import ddp.nn as nn
    import ddp.nn.functional as F
    return {"ddp": ddp, "torch": ddp, "np": np, "nn": nn, "F": F, "dist": dist,
            "tmp_path": tmp_path}


def reset():
    """Before and after each example: seed 0, no process group left behind by the last one."""
    import ddp
    import ddp.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()
    ddp.manual_seed(0)
