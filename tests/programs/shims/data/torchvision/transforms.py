"""torchvision.transforms' Compose, ToTensor, Normalize, Resize, CenterCrop on uint8 arrays."""
import numpy as np
import torch


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class ToTensor:
    """HxW or HxWxC uint8 -> CxHxW float in [0, 1], as torchvision's ToTensor."""

    def __call__(self, img):
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32)
                                / 255.0)


class Normalize:
    def __init__(self, mean, std, inplace=False):
        self.mean, self.std = mean, std

    def __call__(self, tensor):
        mean = torch.tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return (tensor - mean) / std


def _hw(size):
    return (size, size) if isinstance(size, int) else tuple(size)


class Resize:
    """Nearest-neighbour resize of an array image (before ToTensor)."""

    def __init__(self, size, *args, **kwargs):
        self.size = _hw(size)

    def __call__(self, img):
        arr = np.asarray(img)
        h, w = arr.shape[:2]
        rows = (np.arange(self.size[0]) * h // self.size[0])
        cols = (np.arange(self.size[1]) * w // self.size[1])
        return arr[rows][:, cols]


class CenterCrop:
    def __init__(self, size):
        self.size = _hw(size)

    def __call__(self, img):
        arr = np.asarray(img)
        h, w = arr.shape[:2]
        top, left = (h - self.size[0]) // 2, (w - self.size[1]) // 2
        return arr[top:top + self.size[0], left:left + self.size[1]]


class Lambda:
    def __init__(self, lambd):
        self.lambd = lambd

    def __call__(self, img):
        return self.lambd(img)
