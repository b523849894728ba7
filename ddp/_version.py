"""The package version, in one place (``ddp.__version__``; pyproject.toml reads it here)."""
__version__ = "0.1.0"
