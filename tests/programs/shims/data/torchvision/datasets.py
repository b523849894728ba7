"""Synthetic datasets with torchvision's names and signatures.

Every class draws its images from one fixed NumPy seed per split: image ``i`` of class ``c``
is noise plus a bright patch whose place depends on ``c``, so a classifier can learn it and
its loss falls within one small epoch. Items are ``(image, target)`` with the image an
``HxW`` (grey) or ``HxWx3`` uint8 array, as torchvision's PIL images become arrays.
"""
import os

import numpy as np
import torch


def _size(train):
    return int(os.environ.get("FAKE_TRAIN_SIZE" if train else "FAKE_TEST_SIZE",
                              "512" if train else "256"))


class _Synthetic:
    def __init__(self, n, shape, num_classes, seed, transform=None, target_transform=None):
        rng = np.random.default_rng(seed)
        self.targets = rng.integers(0, num_classes, size=n)
        h, w = shape[:2]
        images = rng.integers(0, 60, size=(n,) + tuple(shape)).astype(np.uint8)
        cells = int(np.ceil(np.sqrt(num_classes)))
        ph, pw = h // cells, w // cells
        for i, c in enumerate(self.targets):
            r, q = divmod(int(c), cells)
            images[i, r * ph:(r + 1) * ph, q * pw:(q + 1) * pw] = 230
        self.data = images
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        img, target = self.data[index], int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


class MNIST(_Synthetic):
    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        super().__init__(_size(train), (28, 28), 10, 0 if train else 1, transform,
                         target_transform)
        self.root = root
        self.train = train


FashionMNIST = MNIST


class CIFAR10(_Synthetic):
    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        super().__init__(_size(train), (32, 32, 3), 10, 2 if train else 3, transform,
                         target_transform)


class FakeData(_Synthetic):
    def __init__(self, size=1000, image_size=(3, 224, 224), num_classes=10, transform=None,
                 target_transform=None, random_offset=0):
        c, h, w = image_size
        size = min(size, _size(True))
        super().__init__(size, (h, w, c) if c != 1 else (h, w), num_classes, 4 + random_offset,
                         transform, target_transform)
