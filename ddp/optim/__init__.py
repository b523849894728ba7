"""``ddp.optim``: optimizers and learning-rate schedulers, shaped like ``torch.optim``.

Every optimizer follows PyTorch's single-tensor update formulas, so trajectories match
``torch.optim`` to float32 rounding, and their ``state_dict()`` has PyTorch's layout.

Example:
    >>> model = ddp.nn.Linear(4, 1)
    >>> opt = ddp.optim.AdamW(model.parameters(), lr=1e-3)
    >>> sched = ddp.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    >>> model(ddp.randn(8, 4)).pow(2).mean().backward()
    >>> opt.step(); sched.step(); opt.zero_grad()
"""
from .optimizer import Optimizer
from .sgd import SGD
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .adagrad import Adagrad
from .adadelta import Adadelta
from .adamax import Adamax
from .nadam import NAdam, RAdam
from .asgd import ASGD
from .rprop import Rprop
from .lbfgs import LBFGS
from .sparse_adam import SparseAdam
from .adafactor import Adafactor
from .muon import Muon
from . import lr_scheduler, swa_utils

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax",
           "NAdam", "RAdam", "ASGD", "Rprop", "LBFGS", "SparseAdam", "Adafactor", "Muon",
           "lr_scheduler", "swa_utils"]
