"""ddp._malloc: glibc's thresholds fixed at import, so that a step's arrays of a few MiB come
from the heap and are reused, not mapped and faulted in afresh every step."""
import os
import subprocess
import sys

import pytest

from ddp import _malloc

# where a fresh 16 MiB array lies: in the heap (tuned: below the 32 MiB threshold) or in a
# mapping of its own (glibc's default threshold, which starts at 128 KiB)
IN_HEAP = """
import numpy as np, ddp
a = np.empty(16 << 20, np.uint8)
heap = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
lo, hi = (int(x, 16) for x in heap[0].split("-")) if heap else (0, 0)
print(lo <= a.ctypes.data < hi, ddp._malloc.tuned())
"""

needs_glibc = pytest.mark.skipif(not _malloc._glibc() or not os.path.exists("/proc/self/maps"),
                                 reason="Linux with glibc")


def _run(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in _malloc._USERS_OWN + ("DDP_MALLOC", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", IN_HEAP], env={**clean, **env}, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


@needs_glibc
def test_import_ddp_keeps_a_steps_arrays_in_the_heap():
    assert _run() == ["True", "True"]


@needs_glibc
@pytest.mark.parametrize("env", [{"DDP_MALLOC": "default"}, {"MALLOC_TOP_PAD_": "0"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}])
def test_the_users_own_setting_or_ddp_malloc_default_leaves_the_allocator_alone(env):
    assert _run(**env) == ["False", "False"]
