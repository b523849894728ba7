"""Which format a file is in, from its first bytes, and the error for one a reader cannot take.
"""
from __future__ import annotations

import struct

from .native import MAGIC

MAX_HEADER = 100_000_000  # the safetensors library's limit on a header's size


def looks_like_safetensors(head):
    """Whether the first 9 bytes of a file are a safetensors header start."""
    return len(head) == 9 and head[8:9] == b"{" and \
        struct.unpack("<Q", head[:8])[0] <= MAX_HEADER


def sniff(head):
    """The format named by a file's first 9 bytes (see :func:`detect_format`)."""
    if not head:
        return "empty"
    if head[:8] == MAGIC:
        return "ddp"
    if len(head) < 9 and MAGIC.startswith(head):
        return "ddp"  # a truncated ddp file
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if looks_like_safetensors(head):
        return "safetensors"
    return "unknown"


def refuse(kind, name, head, who="ddp.load"):
    """The error for a file ``who`` cannot read."""
    if kind == "empty":
        return RuntimeError(f"{who}: {name} is empty (0 bytes)")
    if kind in ("zip", "pickle"):
        return RuntimeError(f"{who}: {name} is a torch.save checkpoint or another pickle, not a "
                            f"safetensors file; read it with ddp.load")
    return RuntimeError(f"{who}: {name} is not a ddp.save, torch.save or safetensors file (it "
                        f"starts with {bytes(head[:9])!r})")
