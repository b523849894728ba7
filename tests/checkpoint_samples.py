"""Objects the checkpoint tests save and load, written once for both ``torch`` and ``ddp`` (the
same code builds either: ``import ddp as torch``), so that PyTorch's files and ddp's can be
compared value by value. ``tests/data/torch/make_files.py`` writes the torch-made files from
these builders."""
import math
from collections import OrderedDict

import numpy as np

RESNET_WIDTH = 4          # torchvision's resnet18 has 64; the layout and keys are the same
RESNET_CLASSES = 10


def resnet18(torch, width=RESNET_WIDTH, num_classes=RESNET_CLASSES):
    """torchvision.models.resnet18's architecture and state_dict keys, ``width`` channels wide."""
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = width
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(width, 2)
            self.layer2 = self._make_layer(2 * width, 2, stride=2)
            self.layer3 = self._make_layer(4 * width, 2, stride=2)
            self.layer4 = self._make_layer(8 * width, 2, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * width, num_classes)

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes))
            layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes
            layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def sample_checkpoint(torch):
    """A checkpoint with every dtype, views of one storage, non-contiguous strides, Parameters,
    a Module's state_dict (with its ``_metadata``) and plain values."""
    rng = np.random.default_rng(0)
    base = torch.tensor(np.arange(24, dtype=np.float32).reshape(4, 6))
    dtypes = {}
    for name in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                 "uint8", "bool"):
        values = rng.standard_normal((2, 3)) * 50
        if name == "bool":
            dtypes[name] = torch.tensor(values > 0)
        elif name.startswith(("int", "uint")):
            dtypes[name] = torch.tensor(np.abs(values).astype(np.int64) if name == "uint8"
                                        else values.astype(np.int64)).to(getattr(torch, name))
        else:
            dtypes[name] = torch.tensor(values.astype(np.float32)).to(getattr(torch, name))
    lin = torch.nn.Linear(3, 2)
    bn = torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(rng.standard_normal((2, 3)).astype(np.float32)))
        lin.bias.copy_(torch.tensor(rng.standard_normal(2).astype(np.float32)))
    return {
        "model": torch.nn.Sequential(lin, bn).state_dict(),
        "dtypes": dtypes,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "base": base,
        "transposed": base.t(),
        "row": base[1],
        "column": base[:, 2],
        "strided": base[::2, 1::3],
        "param": torch.nn.Parameter(torch.tensor(rng.standard_normal(3).astype(np.float32))),
        "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
        "leaf": torch.tensor([1.0, -2.0], requires_grad=True),
        "plain": {"epoch": 3, "lr": 0.1, "name": "run", "none": None, "inf": math.inf,
                  "flags": (True, False), "nested": [1, [2, (3,)]], "bytes": b"xy",
                  "set": {1, 2}, "complex": 1 + 2j, "int_keys": {0: "a", 7: "b"},
                  "odict": OrderedDict([("z", 1), ("a", 2)])},
        "torch_values": {"dtype": torch.float16, "device": torch.device("cpu"),
                         "size": torch.Size([2, 3])},
    }


def _strides(t):
    if hasattr(t, "stride"):
        return tuple(t.stride())
    return tuple(s // t._data.itemsize for s in t._data.strides)


def describe(obj):
    """The same plain description of what torch or ddp loaded: tensors as values (bfloat16 as
    float32), dtype, strides, requires_grad and whether a Parameter; other values by repr with
    the library's name left out."""
    if hasattr(obj, "detach") and hasattr(obj, "dtype"):
        dtype = str(obj.dtype).split(".")[-1]
        values = obj.detach()
        values = (values.float() if dtype == "bfloat16" else values).numpy()
        return {"values": values, "dtype": dtype, "stride": np.array(_strides(obj), np.int64),
                "requires_grad": int(bool(obj.requires_grad)),
                "parameter": int(type(obj).__name__ == "Parameter")}
    if isinstance(obj, dict):
        out = {"__type__": type(obj).__name__}
        for k, v in obj.items():
            out[f"{type(k).__name__}:{k}"] = describe(v)
        if getattr(obj, "_metadata", None) is not None:
            out["__metadata__"] = repr(dict(obj._metadata))
        return out
    return repr(obj).replace("torch.", "").replace("ddp.", "")
