"""Uneven inputs under mpiexec -n 2 / -n 4: ``Join`` / ``DDP.join()`` (PyTorch's semantics).

Rank r holds a different number of batches. Inside the join context the ranks that run out
shadow the others' collectives; every step averages the gradients of the ranks still training
(over the initial world size, or over those ranks), and at the end every rank holds the model
of a rank that finished last. The reference replays exactly that in one process.
"""
import numpy as np
import pytest

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.distributed.algorithms import Join, Joinable, JoinHook
from ddp.nn.parallel import DistributedDataParallel as DDP

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.usefixtures("process_group")]


def make_model(seed=0, batchnorm=False):
    ddp.manual_seed(seed)
    layers = [nn.Linear(5, 6), nn.Tanh()] + ([nn.BatchNorm1d(6)] if batchnorm else []) + \
        [nn.Linear(6, 3)]
    return nn.Sequential(*layers).double()


def counts(world):
    """Batches per rank: uneven, and not increasing with the rank."""
    return [[3, 5, 2, 4][r % 4] + r // 4 for r in range(world)]


def batch(rank, step):
    rng = np.random.default_rng(1000 * rank + step)
    return ddp.tensor(rng.standard_normal((4, 5))), ddp.tensor(rng.integers(0, 3, 4))


def params_np(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def everyone(arrays):
    return dist.get_communicator().allgather_obj([a.tolist() for a in arrays])


def assert_same_on_every_rank(arrays):
    gathered = everyone(arrays)
    for other in gathered[1:]:
        for a, b in zip(gathered[0], other):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def reference(world, divide_by_initial_world_size=True, lr=0.1):
    """One process: step t averages the gradients of the ranks that still have a batch t."""
    model = make_model()
    n = counts(world)
    for step in range(max(n)):
        active = [r for r in range(world) if step < n[r]]
        total = [np.zeros(p.shape) for p in model.parameters()]
        for r in active:
            for p in model.parameters():
                p.grad = None
            x, y = batch(r, step)
            nn.CrossEntropyLoss()(model(x), y).backward()
            for t, p in zip(total, model.parameters()):
                t += p.grad.numpy()
        divisor = world if divide_by_initial_world_size else len(active)
        with ddp.no_grad():
            for p, t in zip(model.parameters(), total):
                p -= lr * ddp.tensor(t / divisor)
    return params_np(model)


def train_uneven(model, rank, world, lr=0.1, last_grads=None, **join_kwargs):
    opt = ddp.optim.SGD(model.parameters(), lr=lr)
    with model.join(**join_kwargs):
        for step in range(counts(world)[rank]):
            x, y = batch(rank, step)
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(x), y).backward()
            opt.step()
        if last_grads is not None:   # this rank's last gradients, before it shadows the others
            last_grads += [p.grad.numpy().copy() for p in model.module.parameters()]


@pytest.mark.parametrize("divide_by_initial_world_size", [True, False])
@pytest.mark.parametrize("bucket_cap_mb,as_view", [(25.0, False), (0.0002, False), (0.0002, True)])
def test_uneven_inputs_train_like_the_reference_and_end_identical(divide_by_initial_world_size,
                                                                    bucket_cap_mb, as_view):
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DDP(make_model(), bucket_cap_mb=bucket_cap_mb, gradient_as_bucket_view=as_view)
    if bucket_cap_mb < 1:
        assert len(model.reducer.buckets) > 1
    last = []
    train_uneven(model, rank, world, last_grads=last,
                 divide_by_initial_world_size=divide_by_initial_world_size)
    for p, g in zip(model.module.parameters(), last):   # shadowing left this rank's .grad alone
        np.testing.assert_array_equal(p.grad.numpy(), g)
    assert_same_on_every_rank(params_np(model.module))
    for got, want in zip(params_np(model.module),
                         reference(world, divide_by_initial_world_size)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # after the context DDP is an ordinary DDP again: an even step works
    x, y = batch(rank, 99)
    nn.CrossEntropyLoss()(model(x), y).backward()
    assert_same_on_every_rank([p.grad.numpy() for p in model.module.parameters()])


def test_uneven_inputs_with_buffers_and_unused_parameters():
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DDP(make_model(batchnorm=True), find_unused_parameters=True)
    train_uneven(model, rank, world)
    assert_same_on_every_rank(params_np(model.module) +
                              [b.numpy() for b in model.module.buffers()])
    # the running statistics saw every step (one rank still training updates them each step)
    assert int(model.module[2].num_batches_tracked.item()) == max(counts(world))


def test_throw_on_early_termination_raises_on_every_rank():
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DDP(make_model())
    fewest = min(counts(world))
    steps = 0
    with pytest.raises(RuntimeError, match="exhausted"):
        with model.join(throw_on_early_termination=True):
            for step in range(counts(world)[rank]):
                x, y = batch(rank, step)
                nn.CrossEntropyLoss()(model(x), y).backward()
                steps += 1
    assert steps == fewest      # everyone stopped at the shortest rank's end
    t = ddp.ones(1)             # and nothing is left half done
    dist.all_reduce(t)
    assert t.item() == world


def test_a_joinable_of_ones_own():
    """The generic protocol: a user's Joinable that allreduces once per iteration."""
    rank, world = dist.get_rank(), dist.get_world_size()

    class Counter(Joinable):
        def __init__(self):
            super().__init__()
            self.total = ddp.zeros(1)
            self.post = None

        def step(self, value):
            Join.notify_join_context(self)
            t = ddp.tensor([float(value)])
            dist.all_reduce(t)
            self.total += t

        def join_hook(self, **kwargs):
            counter = self

            class Hook(JoinHook):
                def main_hook(self):
                    t = ddp.zeros(1)
                    dist.all_reduce(t)
                    counter.total += t

                def post_hook(self, is_last_joiner):
                    counter.post = is_last_joiner
            return Hook()

        @property
        def join_device(self):
            return ddp.device("cpu")

        @property
        def join_process_group(self):
            return None

    c = Counter()
    n = counts(world)
    with Join([c]):
        for step in range(n[rank]):
            c.step(rank + 1)
    want = sum((r + 1) * n[r] for r in range(world))
    assert c.total.item() == want
    assert c.post == (n[rank] == max(n))


def test_join_needs_a_joinable():
    with pytest.raises(ValueError, match="at least one joinable"):
        Join([])


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torch_or_none():
    try:
        import torch
        return torch
    except ImportError:
        return None


def test_uneven_inputs_match_pytorch_ddp_join(oracle):
    """PyTorch's own DDP.join() (gloo, one torch rank per MPI rank, recorded on rank 0 per world
    size) against ours: same initial weights, same uneven batches, same final parameters."""
    rank, world = dist.get_rank(), dist.get_world_size()
    comm = dist.get_communicator()
    initial = params_np(make_model())
    batches = [[tuple(t.numpy() for t in batch(r, s)) for s in range(counts(world)[r])]
               for r in range(world)]
    port = comm.bcast_obj(_free_port() if rank == 0 else None, 0)

    def reference(torch):   # every rank runs its part of a torch job of the same size
        import torch.distributed as tdist
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                 world_size=world)
        try:
            net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(),
                                      torch.nn.Linear(6, 3)).double()
            with torch.no_grad():
                for p, v in zip(net.parameters(), initial):
                    p.copy_(torch.tensor(v))
            model = torch.nn.parallel.DistributedDataParallel(net)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            with model.join():
                for x, y in batches[rank]:
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(model(torch.tensor(x)),
                                                      torch.tensor(y)).backward()
                    opt.step()
            return [p.detach().numpy().copy() for p in net.parameters()]
        finally:
            tdist.destroy_process_group()

    if rank == 0:      # the record is rank 0's (written once); live torch needs every rank
        want = oracle(reference, key=f"world{world}")
    else:
        want = None
        torch = _torch_or_none()
        if torch is not None:
            reference(torch)
    want = comm.bcast_obj([np.asarray(w) for w in want] if rank == 0 else None, 0)
    model = DDP(make_model())
    train_uneven(model, rank, world)
    for got, w in zip(params_np(model.module), want):
        np.testing.assert_allclose(got, w, rtol=1e-10, atol=1e-12)
