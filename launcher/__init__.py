"""Job launcher for ``ddp`` (placeholder).

The launcher (``launcher.cli`` and the ``launcher`` console script) arrives
with the distributed issue. This package is intentionally empty so that it is
importable and packaged in the meantime.
"""
