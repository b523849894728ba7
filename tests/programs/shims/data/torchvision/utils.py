"""``save_image`` / ``make_grid``: the programs save samples; here the tensor is checked for
finite values and written as raw float32 bytes (no PIL needed)."""
import os

import numpy as np


def make_grid(tensor, nrow=8, padding=2, normalize=False, **kwargs):
    return tensor


def save_image(tensor, fp, nrow=8, padding=2, normalize=False, **kwargs):
    arr = np.asarray(tensor.detach().cpu().numpy(), dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("save_image: the image has non-finite values")
    os.makedirs(os.path.dirname(os.path.abspath(fp)), exist_ok=True)
    with open(fp, "wb") as f:
        f.write(arr.tobytes())
