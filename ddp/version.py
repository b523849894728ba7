"""``ddp.version``: ``__version__`` and, as ``torch.version`` has, ``cuda``/``hip``/``git_version``
(None: ddp is not built against CUDA; CuPy brings its own)."""
from ._version import __version__  # noqa: F401

cuda = None
hip = None
git_version = None
debug = False
