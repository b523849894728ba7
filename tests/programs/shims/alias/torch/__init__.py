"""``import torch`` gives ddp: the alias a program sees when run by tests/programs.

This directory goes first on PYTHONPATH of a program's process (and so of every process it
spawns), so the program's own ``import torch`` / ``import torch.nn as nn`` /
``from torch.utils.data import DataLoader`` resolve to ddp's modules without editing a line of it.
``torch.X.Y`` is served by importing ``ddp.X.Y``: a submodule ddp lacks fails as it would for
a real package (ModuleNotFoundError naming ``ddp.X.Y``), which is the gap to fix in ddp.
"""
import importlib
import importlib.abc
import importlib.util
import sys

import ddp


class _TorchAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("torch."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("ddp." + spec.name[len("torch."):])

    def exec_module(self, module):
        pass                       # the ddp module is already executed


sys.meta_path.insert(0, _TorchAlias())
sys.modules["torch"] = ddp
