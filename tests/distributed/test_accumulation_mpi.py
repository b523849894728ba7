"""GradientAccumulator over DDP: k micro-batches on N ranks equal one step on the full batch of
N*k micro-batches (float32, tight tolerance), and communication happens once per group."""
import numpy as np
import pytest

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.nn.parallel import DistributedDataParallel as DDP

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.usefixtures("process_group")]



def make_model():
    ddp.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_accumulation_on_n_ranks_equals_full_batch(k):
    rank, world = dist.get_rank(), dist.get_world_size()
    micro = 3                                      # samples per micro-batch
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, world * k * micro, 4)).astype(np.float32)   # 2 optimizer steps
    y = rng.integers(0, 3, (2, world * k * micro))

    ref = make_model()
    opt = ddp.optim.Adam(ref.parameters(), lr=1e-2)
    for s in range(2):
        opt.zero_grad()
        nn.CrossEntropyLoss()(ref(ddp.tensor(x[s])), ddp.tensor(y[s])).backward()
        opt.step()

    model = DDP(make_model())
    opt = ddp.optim.Adam(model.parameters(), lr=1e-2)
    acc = ddp.GradientAccumulator(model, opt, steps=k)
    launches = []
    original = model.reducer._launch
    model.reducer._launch = lambda bucket: (launches.append(bucket.index), original(bucket))[1]
    for s in range(2):
        mine = slice(rank * k * micro, (rank + 1) * k * micro)   # this rank's k micro-batches
        xs, ys = x[s][mine], y[s][mine]
        batches = [(ddp.tensor(xs[i:i + micro]), ddp.tensor(ys[i:i + micro]))
                   for i in range(0, k * micro, micro)]
        for xb, yb in acc.micro_batches(batches):
            with acc.accumulate():
                acc.backward(nn.CrossEntropyLoss()(model(xb), yb))
    assert acc.optimizer_steps == 2
    assert len(launches) == 2 * len(model.reducer.buckets)      # communication once per group
    for a, b in zip(model.module.parameters(), ref.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=2e-5, atol=2e-6)
