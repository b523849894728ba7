"""Sums over ranks that share one machine, through memory they all map: no copies by MPI.

MPI's allreduce on one machine moves the bytes through its own shared segments: a copy in, the
sum, a copy out, with a core per rank all of it on the ranks' own time (the MLP's 7.1 MiB of
gradients on 2 ranks: 1.9 ms of a 19 ms step). When DDP's buckets themselves lie in memory
every rank maps, rank ``r`` of ``W`` adds its ``1/W`` part of all the buffers and writes the
sum into each of them, in one pass (``ddp.kernels.sums``), between two barriers (see
:meth:`SharedBuffer.sum`; DDP sums all its buckets between one pair).

Each rank's buffer is a file in ``/dev/shm`` that every rank maps. Files are unlinked as soon
as everyone has mapped them, so the memory lives while some rank still maps it (a ``.grad``
lent from a bucket keeps its mapping) and nothing is left behind: freeing is local, with no
collective at teardown. A rank may move its buffer to a fresh file on its own
(:meth:`SharedBuffer.fresh`, when a lent ``.grad`` is still held): it publishes the new file in
a control table every rank maps, and the others map it at the next sum.

Example (one rank, which sums with itself):
    >>> from ddp.distributed.communicator import SingleCommunicator
    >>> (buf,) = allocate(SingleCommunicator(), [(4, np.float32)])
    >>> buf.mine[:] = 2.0; buf.sum(); buf.mine.tolist()
    [2.0, 2.0, 2.0, 2.0]
"""
from __future__ import annotations

import mmap
import os
import tempfile

import numpy as np

from .. import kernels
from ..kernels import sums as _sums

SHM_DIR = "/dev/shm"
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))   # what the sum is done for
_ENTRY = 256   # control table entry per (bucket, rank): int64 generation, then the file's path


def available() -> bool:
    """Whether this machine has a memory file system to share buffers through."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def _new_file(nbytes, kind="bucket"):
    """A file of ``nbytes`` in ``/dev/shm``, its memory reserved now: a memory file system
    full at the first write would kill the rank with SIGBUS (a container's 64 MiB /dev/shm);
    here it is an OSError, and DDP sums through MPI instead. The name carries our pid, so
    that :func:`remove_stale` can tell files of ranks that died before unlinking them."""
    fd, path = tempfile.mkstemp(prefix=f"ddp-{kind}-{os.getpid()}-", dir=SHM_DIR)
    try:
        os.posix_fallocate(fd, 0, max(nbytes, 1))
    except OSError:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def remove_stale():
    """Remove the files of processes that no longer run (a rank killed between making its
    files and unlinking them)."""
    for name in os.listdir(SHM_DIR):
        parts = name.split("-")
        if len(parts) == 4 and parts[0] == "ddp" and parts[2].isdigit():
            try:
                os.kill(int(parts[2]), 0)
            except ProcessLookupError:
                try:
                    os.unlink(os.path.join(SHM_DIR, name))
                except OSError:
                    pass
            except OSError:
                pass   # alive, another user's


def _map(path, nbytes):
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), max(nbytes, 1))


class SharedBuffer:
    """Every rank's buffer of one bucket (``size`` elements of ``dtype``), this rank's first as
    :attr:`mine`; ``table`` is this bucket's row of the control table (one entry per rank)."""

    def __init__(self, arrays, rank, table):
        self.arrays = arrays       # by rank
        self.rank = rank
        self.mine = arrays[rank]
        self._table = table
        self._seen = [0] * len(arrays)   # the generation of each rank's buffer mapped here
        self._unlink = []                # files of ours the others map at the next sum
        n, world = self.mine.size, len(arrays)
        self.part = slice(n * rank // world, n * (rank + 1) // world)   # this rank's to sum

    def fresh(self):
        """Move this rank's buffer to a fresh zero-filled file (the old one stays with whoever
        holds it) and publish it: the others map it in the next :meth:`sum`. Returns it."""
        path = _new_file(self.mine.nbytes)
        self.mine = self.arrays[self.rank] = np.frombuffer(_map(path, self.mine.nbytes),
                                                           self.mine.dtype, self.mine.size)
        entry = self._table[self.rank]
        name = path.encode()
        assert len(name) < _ENTRY - 8, path
        entry[8:8 + len(name)] = np.frombuffer(name, np.uint8)
        entry[8 + len(name):] = 0
        self._seen[self.rank] += 1
        entry[:8].view(np.int64)[0] = self._seen[self.rank]
        self._unlink.append(path)
        return self.mine

    def sum(self):
        """Sum this rank's part of all the buffers into each of them. Call it on every rank
        between two barriers: after everyone's buffer is complete, before anyone changes its
        own again; then :meth:`settle`. Each part is summed by one rank only, so every rank
        gets the same bits (added in rank order)."""
        for k, entry in enumerate(self._table):   # buffers moved since the last sum
            generation = int(entry[:8].view(np.int64)[0])
            if k != self.rank and generation != self._seen[k]:
                path = bytes(entry[8:]).rstrip(b"\0").decode()
                self.arrays[k] = np.frombuffer(_map(path, self.mine.nbytes), self.mine.dtype,
                                               self.mine.size)
                self._seen[k] = generation
        parts = [a[self.part] for a in self.arrays]
        if kernels.fits(*parts):
            _sums.sum_into_each(parts)   # one pass, not a sum then a copy per rank
            return
        out = parts[0]
        for other in parts[1:]:
            np.add(out, other, out=out)
        for other in parts[1:]:
            other[...] = out

    def settle(self):
        """After the barrier that ends a sum: every rank has mapped our fresh files."""
        for path in self._unlink:
            os.unlink(path)
        self._unlink = []


def allocate(comm, shapes):
    """Collective over ``comm``, whose ranks must all be on this machine: one
    :class:`SharedBuffer` per ``(size, dtype)`` of ``shapes``, zero-filled; None on every rank
    when some rank cannot make or map its files (no ``/dev/shm``, not enough memory)."""
    made, error = [], None
    table_bytes = len(shapes) * comm.size * _ENTRY
    try:
        if comm.rank == 0:
            remove_stale()
            made.append(_new_file(table_bytes, "table"))
        made += [_new_file(size * np.dtype(dtype).itemsize) for size, dtype in shapes]
    except OSError as e:
        error = e
    everyone = comm.allgather_obj(None if error else made)
    buffers = None
    if all(paths is not None for paths in everyone):
        try:
            table = np.frombuffer(_map(everyone[0][0], table_bytes), np.uint8).reshape(
                len(shapes), comm.size, _ENTRY)
            files = [paths[1:] if r == 0 else paths for r, paths in enumerate(everyone)]
            buffers = [SharedBuffer(
                [np.frombuffer(_map(paths[k], size * np.dtype(dtype).itemsize), dtype, size)
                 for paths in files], comm.rank, table[k])
                for k, (size, dtype) in enumerate(shapes)]
        except OSError:
            buffers = None
        if not all(comm.allgather_obj(buffers is not None)):
            buffers = None
    comm.Barrier()   # everyone has mapped the files (or given up): they can go
    for path in made:
        os.unlink(path)
    return buffers
