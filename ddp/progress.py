"""A rank-0 progress bar for epochs or steps, with the latest loss and the throughput.

``Progress`` draws through tqdm when it is installed (``pip install tqdm``, in the ``examples``
and ``bench`` extras) and through a one-line fallback otherwise. It draws only where someone
watches a terminal:

- on rank 0 only (``ddp.distributed.get_rank()``, else ``RANK`` from the launcher);
- only when its stream (stderr) is a terminal — never into a log file or a pipe, so CI logs
  and ``> out.txt`` stay clean;
- never under ``launcher --output all`` (every rank's output unchanged: bars would mix);
- ``DDP_PROGRESS=0`` turns it off everywhere, ``DDP_PROGRESS=1`` on (still rank 0 only).

When it does not draw, :meth:`Progress.write` is a plain ``print``, so a script's own lines
come out the same either way.

Example:
    >>> from ddp.progress import Progress
    >>> with Progress(range(3), desc="train", unit="epoch") as bar:
    ...     for epoch in bar:
    ...         bar.log(loss=0.5 / (epoch + 1), samples=64)
    >>> bar.samples, round(bar.loss, 3)
    (192, 0.167)
"""
from __future__ import annotations

import os
import sys
import time

__all__ = ["Progress", "progress_enabled"]


def _rank() -> int:
    from . import distributed
    if distributed.is_initialized():
        return distributed.get_rank()
    value = os.environ.get("RANK", "0")
    return int(value) if value.isdigit() else 0


def progress_enabled(stream=None, rank=None, env=None) -> bool:
    """Whether a progress bar should draw on ``stream`` (default ``sys.stderr``): rank 0, a
    terminal, not under ``launcher --output all``; ``DDP_PROGRESS=0``/``1`` decides first.

    Example:
        >>> import io
        >>> progress_enabled(io.StringIO(), rank=0, env={})        # not a terminal
        False
        >>> progress_enabled(io.StringIO(), rank=0, env={"DDP_PROGRESS": "1"})
        True
        >>> progress_enabled(io.StringIO(), rank=1, env={"DDP_PROGRESS": "1"})
        False
    """
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    if (_rank() if rank is None else rank) != 0:
        return False
    forced = env.get("DDP_PROGRESS", "")
    if forced in ("0", "1"):
        return forced == "1"
    if env.get("DDP_OUTPUT") == "all":  # set by the launcher's workers
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Wraps an iterable (or counts to ``total``) and shows how far it got, the latest loss and
    samples per second. Use :meth:`log` after each item and :meth:`write` for lines of text.

    ``enabled=None`` asks :func:`progress_enabled`; ``use_tqdm=None`` uses tqdm when present.

    Example:
        >>> bar = Progress(total=2, desc="steps", enabled=False)
        >>> bar.log(loss=1.0, samples=32); bar.log(loss=0.5, samples=32); bar.close()
        >>> bar.count, bar.samples, bar.loss
        (2, 64, 0.5)
    """

    def __init__(self, iterable=None, total=None, desc="", unit="it", enabled=None,
                 stream=None, use_tqdm=None):
        self.iterable = iterable
        self.total = total if total is not None else _len(iterable)
        self.desc, self.unit = desc, unit
        self.stream = sys.stderr if stream is None else stream
        self.enabled = progress_enabled(self.stream) if enabled is None else bool(enabled)
        self.count, self.samples, self.loss = 0, 0, None
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._tqdm = None
        if self.enabled and use_tqdm is not False:
            try:
                from tqdm.auto import tqdm
                self._tqdm = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream,
                                  dynamic_ncols=True, leave=True)
            except ImportError:
                if use_tqdm:
                    raise

    def __iter__(self):
        iterable = range(self.total) if self.iterable is None else self.iterable
        self._iterating = True
        try:
            for item in iterable:
                yield item
                self._advance(1)
        finally:
            self._iterating = False

    _iterating = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def rate(self) -> float:
        """Samples per second since the bar started (0 before any sample)."""
        elapsed = time.perf_counter() - self._start
        return self.samples / elapsed if elapsed > 0 else 0.0

    def log(self, loss=None, samples=0):
        """Record the latest ``loss`` (a number or a 0-d tensor) and ``samples`` more samples
        processed. Inside ``for x in bar`` the bar moves on when the next item is taken;
        without iteration each call counts one item."""
        if loss is not None:
            self.loss = float(loss.item() if hasattr(loss, "item") else loss)
        self.samples += int(samples)
        if not self._iterating:
            self._advance(1)

    def write(self, text: str) -> None:
        """Print a line of text (to stdout) without tearing the bar."""
        if self._tqdm is not None:
            self._tqdm.write(text, file=sys.stdout)
        elif self.enabled:
            self.stream.write("\r\033[K")
            print(text, flush=True)
            self._draw(force=True)
        else:
            print(text)

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        elif self.enabled and self.count:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False

    # -------------------------------------------------------------- internals
    def _postfix(self):
        parts = []
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.samples:
            parts.append(f"{self.rate:,.0f} samples/s")
        return parts

    def _advance(self, n):
        self.count += n
        if self._tqdm is not None:
            postfix = self._postfix()
            if postfix:
                self._tqdm.set_postfix_str(", ".join(postfix), refresh=False)
            self._tqdm.update(n)
        elif self.enabled:
            self._draw()

    def _draw(self, force=False):
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.1 and self.count != self.total:
            return  # at most ten redraws a second
        self._last_draw = now
        if self.total:
            filled = int(20 * self.count / self.total)
            head = f"{self.count}/{self.total} [{'#' * filled}{'.' * (20 - filled)}]"
        else:
            head = f"{self.count} {self.unit}"
        line = "  ".join([f"{self.desc}:" if self.desc else "", head, *self._postfix()])
        self.stream.write("\r\033[K" + line.strip())
        self.stream.flush()


def _len(iterable):
    try:
        return len(iterable)
    except TypeError:
        return None
