"""Mixed precision across ranks: an overflow on one rank makes every rank skip the step and back
off the scale identically; clean steps grow it identically."""
import numpy as np
import pytest

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.nn.parallel import DistributedDataParallel as DDP

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.usefixtures("process_group")]



def test_inf_on_one_rank_skips_the_step_everywhere():
    rank = dist.get_rank()
    ddp.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    scaler = ddp.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=2)
    x, y = ddp.randn(6, 4), ddp.randint(0, 2, (6,))
    scales, moved = [], []
    for step in range(5):
        before = [p.detach().numpy().copy() for p in model.parameters()]
        opt.zero_grad()
        with ddp.autocast("cpu", dtype=ddp.bfloat16):
            loss = nn.CrossEntropyLoss()(model(x), y)
        scaler.scale(loss).backward()
        if step == 1 and rank == 1:                  # overflow on one rank only, after sync
            with ddp.no_grad():
                model.module[0].weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        moved.append(any(not np.array_equal(b, p.detach().numpy())
                         for b, p in zip(before, model.parameters())))
    assert moved == [True, False, True, True, True]           # step 1 skipped on every rank
    assert scales == [2.0 ** 8, 2.0 ** 7, 2.0 ** 7, 2.0 ** 8, 2.0 ** 8]
    everyone = dist.get_communicator().allgather_obj(
        (scales, [p.detach().numpy().tolist() for p in model.parameters()]))
    for other in everyone[1:]:
        assert other == everyone[0]
    for p in model.parameters():
        assert p.dtype == ddp.float32 and p.grad.dtype == ddp.float32
