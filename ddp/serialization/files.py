"""Files: atomic writing, the removal of temporaries that killed writers left behind, and careful
reading (exact sizes, chunks, no allocation larger than the bytes that are really there).

Every format in this package writes through :func:`atomic_write` and reads through the helpers
here, so a crash mid-save never damages the previous file and a crafted size never allocates
memory the file does not back.

Example:
    >>> with atomic_write(tmp_path / "notes.txt") as fh:
    ...     _ = fh.write(b"epoch 3")
    >>> (tmp_path / "notes.txt").read_bytes()
    b'epoch 3'
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import stat
import time

import numpy as np

__all__ = ["atomic_write", "remove_stale_temporaries"]

CHUNK = 1 << 24          # read and hash in pieces of this size (tests make it small)
OTHER_HOST_GRACE_S = 24 * 3600  # a temporary of another host untouched this long is abandoned


class Truncated(Exception):
    """Internal: the file ended early."""


class Corrupt(Exception):
    """Internal: the file's content is inconsistent."""


def check(cond, msg):
    if not cond:
        raise Corrupt(msg)


def is_path(f):
    return isinstance(f, (str, bytes, os.PathLike))


def name_of(f):
    if is_path(f):
        return os.fsdecode(f)
    return getattr(f, "name", None) or f"<{type(f).__name__}>"


def opened(f, mode="rb"):
    """``open(f)`` for a path; a file object is used as it is (and left open)."""
    if is_path(f):
        return open(f, mode)
    return contextlib.nullcontext(f)


def write_bytes(fh, data):
    """Write ``data`` to ``fh`` (one place, so tests can simulate a failing disk or a kill)."""
    fh.write(data)


# --------------------------------------------------------------------------- temporaries

def _host_tag():
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


# .<target name>.ddp-tmp.<host>.<pid>.<8 hex digits>: who wrote it, so that a later writer can
# tell a dead writer's leftover from a temporary that a live process is still filling.
_TEMP_RE = re.compile(r"^\.(?P<base>.+)\.ddp-tmp\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)"
                      r"\.[0-9a-f]{8}$")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True   # exists (another user's), or we cannot tell: keep its file
    return True


def remove_stale_temporaries(directory):
    """Remove the temporary files of writers that died mid-save in ``directory``; return their
    names.

    :func:`atomic_write` names its temporary ``.<name>.ddp-tmp.<host>.<pid>.<random>``. A
    temporary of this host whose process no longer exists is removed; one of another host (a
    shared file system) only once it has not changed for 24 hours, since its writer cannot be
    asked. A live writer's temporary is never touched. ``ddp.save`` and ``ddp.load`` call this
    for the directory of the file they write or read; errors (a read-only directory) are ignored.

    Example:
        >>> import os
        >>> dead = tmp_path / ".ckpt.pt.ddp-tmp.oldhost.12345.0badc0de"
        >>> _ = dead.write_bytes(b"half a checkpoint")
        >>> os.utime(dead, (0, 0))   # untouched since 1970
        >>> remove_stale_temporaries(tmp_path)
        ['.ckpt.pt.ddp-tmp.oldhost.12345.0badc0de']
    """
    removed = []
    here, now = _host_tag(), time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None:
            continue
        try:
            if m["host"] == here:
                stale = not _alive(int(m["pid"]))
            else:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > OTHER_HOST_GRACE_S
            if stale and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            continue
    return removed


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
    """Open a binary file that replaces ``path`` atomically when the block ends without error.

    The data goes to a temporary file in the same directory, which is flushed, ``fsync``-ed and
    renamed onto ``path`` with ``os.replace``; the directory is then ``fsync``-ed. On any
    exception the temporary file is removed and ``path`` keeps its previous content. An existing
    target's permission bits are kept. The temporary's name carries this host and process id,
    so when a writer is killed outright (SIGKILL, power loss) the next save or load in that
    directory removes what it left (:func:`remove_stale_temporaries`).

    Example:
        >>> with atomic_write(tmp_path / "notes.txt") as fh:
        ...     _ = fh.write(b"epoch 3")
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    remove_stale_temporaries(directory)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".{base}.ddp-tmp.{_host_tag()}.{os.getpid()}."
                                      f"{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


# --------------------------------------------------------------------------- reading

def read_exact(f, n):
    """Read exactly ``n`` bytes (in chunks, so a corrupt huge length fails at EOF, not OOM)."""
    parts, left = [], n
    while left:
        chunk = f.read(min(left, CHUNK))
        if not chunk:
            raise Truncated(f"unexpected end of file ({left} of {n} bytes missing)")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_upto(f, n):
    """Read up to ``n`` bytes, fewer only at end of file (raw streams may return short reads)."""
    data = b""
    while len(data) < n:
        chunk = f.read(min(n - len(data), CHUNK))
        if not chunk:
            break
        data += chunk
    return data


def skip(f, n, h=None):
    """Read and discard ``n`` bytes (hashing them when ``h`` is given)."""
    while n:
        chunk = read_exact(f, min(n, CHUNK))
        if h is not None:
            h.update(chunk)
        n -= len(chunk)


def remaining(f):
    """How many bytes are left in ``f`` from its position, or None when that cannot be known
    (a pipe, a socket, a stream without ``seek``)."""
    try:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode):
            return st.st_size - f.tell()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        pass
    try:
        if not f.seekable():
            return None
        pos = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return None


def ensure_available(f, n, what="data"):
    """Raise Truncated now when ``f`` is known to hold fewer than ``n`` more bytes."""
    left = remaining(f)
    if left is not None and left < n:
        raise Truncated(f"{what} needs {n} bytes but only {left} are left")


def read_array(f, dtype, shape, h=None):
    """Read a C-order array of ``dtype`` and ``shape`` from ``f`` (hashing its bytes into ``h``).

    The array is allocated only once the stream is known to hold its bytes; from a stream of
    unknown length it grows with the data that really arrives, so an announced terabyte in a
    small file raises Truncated instead of MemoryError.
    """
    n = int(np.prod(shape, dtype=object)) * dtype.itemsize
    left = remaining(f)
    if left is not None and left < n:
        raise Truncated(f"an array of {n} bytes but only {left} bytes are left")
    if left is None:
        buf = bytearray()
        while len(buf) < n:
            chunk = f.read(min(n - len(buf), CHUNK))
            if not chunk:
                raise Truncated(f"unexpected end of file ({n - len(buf)} of {n} bytes missing)")
            buf += chunk
        arr = np.frombuffer(buf, dtype=dtype).reshape(shape) if n else np.empty(shape, dtype)
    else:
        arr = np.empty(shape, dtype=dtype)
        read_array_into(f, arr)
    if h is not None:
        h.update(arr.reshape(-1).view(np.uint8))
    return arr


def read_array_into(f, arr):
    """Fill the contiguous array ``arr`` with bytes from ``f``; raise Truncated at end of file."""
    buf = arr.reshape(-1).view(np.uint8)
    mv = memoryview(buf).cast("B") if buf.nbytes else None
    got, n = 0, buf.nbytes
    readinto = getattr(f, "readinto", None)
    while got < n:
        if readinto is not None:
            k = readinto(mv[got:got + CHUNK * 4])
        else:
            chunk = f.read(min(n - got, CHUNK * 4))
            k = len(chunk)
            mv[got:got + k] = chunk
        if not k:
            raise Truncated(f"unexpected end of file ({n - got} of {n} bytes missing)")
        got += k


class Reader:
    """A read-only stream over ``f`` that first gives ``head`` (bytes already read to tell the
    format) and reads in chunks, so a pickle announcing a terabyte gets the bytes that are
    really there instead of a terabyte buffer: read, readline and readinto, as pickle needs."""

    def __init__(self, f, head=b""):
        self._head, self._f = head, f
        self.name = getattr(f, "name", None)

    def read(self, n=-1):
        if n is None or n < 0:
            out, self._head = self._head + self._f.read(), b""
            return out
        out, self._head = self._head[:n], self._head[n:]
        if len(out) < n:
            out += read_upto(self._f, n - len(out))
        return out

    def readline(self):
        if not self._head:
            return self._f.readline()
        i = self._head.find(b"\n")
        if i >= 0:
            out, self._head = self._head[:i + 1], self._head[i + 1:]
            return out
        out, self._head = self._head, b""
        return out + self._f.readline()

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seekable(self):
        return False
