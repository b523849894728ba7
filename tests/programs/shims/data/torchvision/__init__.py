"""A tiny torchvision stand-in for tests/programs: synthetic, learnable datasets instead of
downloads, the few transforms the programs use, and ``utils.save_image``.

It imports ``torch``, so it works the same under real PyTorch (to check a program and its flags
against the reference) and under ddp's alias. Sizes come from ``FAKE_TRAIN_SIZE`` /
``FAKE_TEST_SIZE`` (the tests keep them small).
"""
from . import datasets, transforms, utils  # noqa: F401
