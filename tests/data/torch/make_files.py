"""Write the torch-made checkpoint files the tests read (run where torch is installed, from the
repository root: ``python tests/data/torch/make_files.py``). The tests record what torch reads
from them in tests/oracle_data, so they run without torch.

* ``sample.pt`` / ``sample_legacy.pt``: ``tests.checkpoint_samples.sample_checkpoint`` saved by
  ``torch.save`` in the zip and the legacy (``_use_new_zipfile_serialization=False``) format.
* ``resnet18-tiny.pth``: the state_dict of torchvision's resnet18 layout, 4 channels wide
  instead of 64 (so the file is small), random weights and running statistics, as torchvision
  publishes its weights (``torch.save(model.state_dict(), "resnet18-<hash>.pth")``).
* ``linear_module.pt``: a whole ``torch.nn.Linear`` (``torch.save(module)``).
"""
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from tests.checkpoint_samples import resnet18, sample_checkpoint  # noqa: E402

HERE = pathlib.Path(__file__).parent


def main():
    torch.manual_seed(0)
    sample = sample_checkpoint(torch)
    torch.save(sample, HERE / "sample.pt")
    torch.save(sample, HERE / "sample_legacy.pt", _use_new_zipfile_serialization=False)
    model = resnet18(torch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(100)
    torch.save(model.state_dict(), HERE / "resnet18-tiny.pth")
    torch.save(torch.nn.Linear(2, 2), HERE / "linear_module.pt")


if __name__ == "__main__":
    main()
