"""DistributedDataParallel under mpiexec -n 2 / -n 4, compared with one process on the full batch.

Each test builds the same global batch on every rank; a rank trains on its shard through DDP
and also replays the whole batch in a plain (unwrapped) copy of the model: the results must
agree, and every rank must hold identical parameters.
"""
import copy

import numpy as np
import pytest

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.nn.parallel import DistributedDataParallel as DDP

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.usefixtures("process_group")]



def rank_world():
    return dist.get_rank(), dist.get_world_size()


def make_model(seed=0, dtype=ddp.float64):
    ddp.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                         nn.Linear(8, 3)).to(dtype)


def global_batch(n_per_rank=4, seed=1, features=5):
    _, world = rank_world()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_per_rank * world, features))
    y = rng.integers(0, 3, n_per_rank * world)
    return ddp.tensor(x), ddp.tensor(y)


def shard(t, n_per_rank=4):
    rank, _ = rank_world()
    return t[rank * n_per_rank:(rank + 1) * n_per_rank]


def params_np(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def assert_same_on_every_rank(arrays):
    everyone = dist.get_communicator().allgather_obj([a.tolist() for a in arrays])
    for other in everyone[1:]:
        for a, b in zip(everyone[0], other):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def train(model, x, y, steps, lr=0.1, momentum=0.9):
    opt = ddp.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("bucket_cap_mb,as_view", [(25.0, False), (0.0005, False), (0.0005, True)])
def test_training_matches_full_batch_single_process(bucket_cap_mb, as_view):
    x, y = global_batch()
    reference = make_model()
    train(reference, x, y, steps=4)
    model = DDP(make_model(), bucket_cap_mb=bucket_cap_mb, gradient_as_bucket_view=as_view)
    if bucket_cap_mb < 1:
        assert len(model.reducer.buckets) > 2  # several buckets in flight
    train(model, shard(x), shard(y), steps=4)  # the layout is rebuilt after step 1
    for got, want in zip(params_np(model.module), params_np(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert_same_on_every_rank(params_np(model.module))


@pytest.mark.parametrize("mode", ["thread", "nonblocking", "shared", "sync"])
def test_every_overlap_mode_gives_the_same_training(mode, monkeypatch):
    # thread: allreduce on the communication thread; nonblocking: MPI_Iallreduce progressed
    # from the hooks; shared: sums in memory the ranks share; sync: no overlap (launcher --debug)
    if mode == "sync":
        monkeypatch.setenv("DDP_SYNC_COMM", "1")
    else:
        monkeypatch.setenv("DDP_COMM_MODE", mode)
    x, y = global_batch()
    reference = make_model()
    train(reference, x, y, steps=3)
    model = DDP(make_model(), bucket_cap_mb=0.0005)
    assert model.reducer.sync_comm == (mode == "sync")
    if mode != "sync":
        assert model.reducer.comm_mode == mode
    calls = {"Allreduce": 0, "Iallreduce": 0, "Iallreduce_nonblocking": 0, "Allreduce_shared": 0}
    summed_together = []   # mode shared: the buckets of each call
    for name in calls:   # which of the communicator's allreduces the buckets went through
        def counting(*args, _name=name, _original=getattr(model.comm, name), **kwargs):
            calls[_name] += 1
            if _name == "Allreduce_shared":
                summed_together.append(len(args))
            return _original(*args, **kwargs)
        monkeypatch.setattr(model.comm, name, counting)
    train(model, shard(x), shard(y), steps=3)
    n_buckets = len(model.reducer.buckets)
    used = {"sync": "Allreduce", "thread": "Iallreduce", "nonblocking": "Iallreduce_nonblocking",
            "shared": "Allreduce_shared"}[mode]
    if mode == "shared":   # no core to overlap with: every bucket in one sum per backward
        assert n_buckets > 1 and summed_together[-2:] == [n_buckets] * 2, summed_together
        assert calls[used] == 3, calls
    else:
        assert n_buckets > 1 and calls[used] >= 3 * n_buckets - 1, calls
    assert all(calls[name] == 0 for name in ("Iallreduce", "Iallreduce_nonblocking",
                                             "Allreduce_shared") if name != used), calls
    for got, want in zip(params_np(model.module), params_np(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def full_batch_grads(x, y, seed=0):
    """The gradients of one process on the whole batch: what every rank's DDP must hold."""
    reference = make_model(seed)
    nn.CrossEntropyLoss()(reference(x), y).backward()
    return [p.grad.numpy().copy() for p in reference.parameters()]


def bucket_of(model, p):
    return next(b for b in model.reducer.buckets if any(q is p for q in b.params))


@pytest.mark.parametrize("mode", ["thread", "nonblocking", "shared", "sync"])
def test_gradients_are_handed_over_as_views_of_the_buckets(mode, monkeypatch):
    # without gradient_as_bucket_view too: nothing holds the engine's gradients, so .grad
    # becomes the bucket's memory instead of receiving a copy of it (issue 13), step after step
    monkeypatch.setenv(*(("DDP_SYNC_COMM", "1") if mode == "sync" else ("DDP_COMM_MODE", mode)))
    model = DDP(make_model(), bucket_cap_mb=0.0005)
    params = list(model.parameters())
    layout = None
    for step in range(4):   # the layout is rebuilt after step 1
        x, y = global_batch(seed=10 + step)
        model.zero_grad()
        nn.CrossEntropyLoss()(model(shard(x)), shard(y)).backward()
        for p, want in zip(params, full_batch_grads(x, y)):
            assert np.shares_memory(p.grad._data, bucket_of(model, p).data)
            np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-10, atol=1e-12)
        if step >= 2:   # the same memory every step: no bucket was given away
            assert [id(b.data) for b in model.reducer.buckets] == layout
        layout = [id(b.data) for b in model.reducer.buckets]
        del p   # the loop's last name for a .grad's parameter is no holder of a gradient


def test_linear_layers_write_their_gradients_into_the_buckets():
    # each parameter offers the engine its bucket view as a gradient sink, so linear's weight
    # and bias gradients are made there, averaged on the way, and never copied in (issue 13):
    # a post-accumulate-grad hook already finds .grad in the bucket. A weight used twice gets
    # two contributions: no sink, the gradient is copied in as before; both end up right.
    ddp.manual_seed(0)
    tied = nn.Linear(8, 8).double()
    model = DDP(nn.Sequential(nn.Linear(5, 8).double(), nn.Tanh(), tied, nn.Tanh(), tied,
                              nn.Linear(8, 3).double()), bucket_cap_mb=0.0005)
    reference = copy.deepcopy(model.module)
    in_bucket = {}
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(
            lambda p: in_bucket.__setitem__(id(p), np.shares_memory(p.grad._data,
                                                                    bucket_of(model, p).data)))
    for step in range(3):   # the layout is rebuilt after step 1
        x, y = global_batch(seed=20 + step)
        step_against_full_batch(model, reference, x, y)
        for p in model.parameters():
            assert np.shares_memory(p.grad._data, bucket_of(model, p).data)
            assert in_bucket[id(p)] == (p is not tied.weight and p is not tied.bias)


@pytest.mark.parametrize("first", ["embedding", "conv2d", "layer_norm", "group_norm"])
def test_embedding_and_convolution_write_their_weight_gradients_into_the_bucket(first):
    # the embedding's dense weight gradient (often a model's largest) is scattered straight
    # into its bucket, a convolution's written there in the layout change it needs anyway,
    # layer and group norm's from their fused CPU kernel, averaged on the way, as linear's are
    ddp.manual_seed(0)
    layer = {"embedding": lambda: nn.Embedding(20, 6),
             "conv2d": lambda: nn.Conv2d(1, 2, 3, padding=1),
             "layer_norm": lambda: nn.LayerNorm(9),
             "group_norm": lambda: nn.GroupNorm(1, 2)}[first]()
    model = DDP(nn.Sequential(layer, nn.Flatten(), nn.Linear(18, 3)).double(),
                bucket_cap_mb=0.0005)
    reference = copy.deepcopy(model.module)
    emb = model.module[0].weight
    in_bucket = []
    emb.register_post_accumulate_grad_hook(
        lambda p: in_bucket.append(np.shares_memory(p.grad._data, bucket_of(model, p).data)))
    _, world = rank_world()
    rng = np.random.default_rng(4)
    for step in range(3):
        shape = {"conv2d": (1, 3, 3), "layer_norm": (2, 9), "group_norm": (2, 3, 3)}
        x = ddp.tensor(rng.integers(0, 20, (4 * world, 3)) if first == "embedding" else
                       rng.standard_normal((4 * world,) + shape[first]))
        y = ddp.tensor(rng.integers(0, 3, 4 * world))
        step_against_full_batch(model, reference, x, y)
    assert in_bucket == [True] * 3


class LastStep(nn.Module):
    """A recurrent layer (batch first) and its output at the last step."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0][:, -1]


@pytest.mark.parametrize("first", ["conv_transpose2d", "LSTM", "GRU"])
def test_transposed_convolution_and_recurrent_layers_write_their_gradients_into_the_buckets(
        first):
    # a transposed convolution's weight and bias, a recurrent layer's weights and biases (both
    # directions): each .grad is already its bucket view when its hook runs, and the averaged
    # gradients are those of one process on the whole batch
    ddp.manual_seed(0)
    if first == "conv_transpose2d":
        layer, head, x_shape = nn.ConvTranspose2d(1, 2, 2, stride=2), nn.Linear(72, 3), (1, 3, 3)
    else:
        layer = LastStep(getattr(nn, first)(3, 4, batch_first=True, bidirectional=True))
        head, x_shape = nn.Linear(8, 3), (5, 3)
    model = DDP(nn.Sequential(layer, nn.Flatten(), head).double(), bucket_cap_mb=0.0005)
    reference = copy.deepcopy(model.module)
    own = list(model.module[0].parameters())
    in_bucket = []
    for p in own:
        p.register_post_accumulate_grad_hook(
            lambda p: in_bucket.append(np.shares_memory(p.grad._data, bucket_of(model, p).data)))
    _, world = rank_world()
    rng = np.random.default_rng(5)
    for step in range(3):   # the layout is rebuilt after step 1
        x = ddp.tensor(rng.standard_normal((4 * world,) + x_shape))
        y = ddp.tensor(rng.integers(0, 3, 4 * world))
        step_against_full_batch(model, reference, x, y)
    assert len(own) in (2, 8) and in_bucket == [True] * (3 * len(own))


def step_against_full_batch(model, reference, x, y):
    """One backward of the DDP ``model`` on this rank's shard and of the plain ``reference`` on
    the whole batch: the gradients must agree."""
    model.zero_grad()
    reference.zero_grad()
    nn.CrossEntropyLoss()(model(shard(x)), shard(y)).backward()
    nn.CrossEntropyLoss()(reference(x), y).backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("keepers", ["every rank", "rank 0"])
@pytest.mark.parametrize("mode", ["nonblocking", "shared"])
def test_gradients_kept_from_an_earlier_step_keep_their_values(mode, keepers, monkeypatch):
    # As with PyTorch's copies: a .grad kept after zero_grad(), an array of one and a view of
    # one are not overwritten by the next backward (their bucket moves to fresh memory; in
    # mode "shared" a rank moves its own to fresh shared memory, the others need not)
    monkeypatch.setenv("DDP_COMM_MODE", mode)
    model = DDP(make_model(), bucket_cap_mb=0.0005)
    params = list(model.parameters())
    keeps = keepers == "every rank" or dist.get_rank() == 0
    x, y = global_batch(seed=3)
    for _ in range(2):   # the buckets are rebuilt once, after the first step
        model.zero_grad()
        nn.CrossEntropyLoss()(model(shard(x)), shard(y)).backward()
    for step in range(2):   # twice: a bucket moved once moves again
        kept = [p.grad for p in params] if keeps else []
        array, view = (params[0].grad.numpy(), params[-1].grad.view(-1)) if keeps else (0, 0)
        before = [g.numpy().copy() for g in kept]
        model.zero_grad()
        x2, y2 = global_batch(seed=4 + step)
        nn.CrossEntropyLoss()(model(shard(x2)), shard(y2)).backward()
        for g, want in zip(kept, before):
            np.testing.assert_array_equal(g.numpy(), want)
        if keeps:
            np.testing.assert_array_equal(array, before[0])
            np.testing.assert_array_equal(view.numpy(), before[-1].reshape(-1))
        for p, g, want in zip(params, kept or params, full_batch_grads(x2, y2)):
            assert p.grad is not g or not keeps
            np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-10, atol=1e-12)
        del g


def test_a_grad_that_existed_before_backward_stays_the_same_tensor():
    # zero_grad(set_to_none=False), or a .grad the user made and keeps: the reduced gradient is
    # written into that very tensor, as PyTorch's reducer does
    model = DDP(make_model())
    params = list(model.parameters())
    mine = ddp.zeros_like(params[0])
    params[0].grad = mine
    x, y = global_batch(seed=5)
    nn.CrossEntropyLoss()(model(shard(x)), shard(y)).backward()
    want = full_batch_grads(x, y)
    assert params[0].grad is mine
    np.testing.assert_allclose(mine.numpy(), want[0], rtol=1e-10, atol=1e-12)
    held = [p.grad for p in params]
    model.zero_grad(set_to_none=False)
    nn.CrossEntropyLoss()(model(shard(x)), shard(y)).backward()
    for p, g, w in zip(params, held, want):
        assert p.grad is g
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-10, atol=1e-12)


def test_with_gradient_as_bucket_view_a_kept_grad_shares_the_bucket():
    # what gradient_as_bucket_view=True means (PyTorch's too): .grad *is* the bucket, so a
    # gradient kept across zero_grad() sees the next step's values
    model = DDP(make_model(), gradient_as_bucket_view=True)
    params = list(model.parameters())
    x, y = global_batch(seed=6)
    for _ in range(2):   # the buckets are rebuilt once, after the first step
        model.zero_grad()
        nn.CrossEntropyLoss()(model(shard(x)), shard(y)).backward()
    kept = params[0].grad
    model.zero_grad()
    x2, y2 = global_batch(seed=7)
    nn.CrossEntropyLoss()(model(shard(x2)), shard(y2)).backward()
    np.testing.assert_allclose(kept.numpy(), full_batch_grads(x2, y2)[0], rtol=1e-10, atol=1e-12)


def test_rank0_weights_overwrite_the_others():
    rank, _ = rank_world()
    model = make_model(seed=100 + rank)            # different initial weights on every rank
    wanted = dist.get_communicator().bcast_obj(params_np(model), 0)
    wrapped = DDP(model)
    for got, want in zip(params_np(wrapped.module), wanted):
        np.testing.assert_array_equal(got, want)


def test_no_sync_accumulation_equals_the_large_batch():
    x, y = global_batch(n_per_rank=6)
    reference = make_model()
    opt_ref = ddp.optim.SGD(reference.parameters(), lr=0.1)
    nn.CrossEntropyLoss()(reference(x), y).backward()
    opt_ref.step()

    model = DDP(make_model())
    opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    xs, ys = shard(x, 6), shard(y, 6)
    halves = [(xs[:3], ys[:3]), (xs[3:], ys[3:])]
    with model.no_sync():
        (nn.CrossEntropyLoss()(model(halves[0][0]), halves[0][1]) / 2).backward()
    (nn.CrossEntropyLoss()(model(halves[1][0]), halves[1][1]) / 2).backward()
    opt.step()
    for got, want in zip(params_np(model.module), params_np(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_gradient_ready_order_differs_between_ranks():
    # each rank runs its two branches in a different order: buckets must still launch in the
    # same order everywhere (no hang, no mixed-up data)
    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 3)

        def forward(self, x):
            if dist.get_rank() % 2:
                return self.b(x).tanh() + self.a(x)
            return self.a(x) + self.b(x).tanh()

    x, y = global_batch()
    ddp.manual_seed(3)
    reference = TwoBranches().double()
    train(reference, x, y, steps=3)
    ddp.manual_seed(3)
    model = DDP(TwoBranches().double(), bucket_cap_mb=0.0001)
    train(model, shard(x), shard(y), steps=3)
    for got, want in zip(params_np(model.module), params_np(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


class MaybeUnused(nn.Module):
    """``extra`` takes part only where ``use_extra`` says."""

    def __init__(self):
        super().__init__()
        self.main, self.extra = nn.Linear(5, 3), nn.Linear(5, 3)

    def forward(self, x, use_extra):
        out = self.main(x)
        return out + self.extra(x) if use_extra else out


def test_find_unused_parameters_handles_a_branch_used_on_one_rank():
    rank, world = rank_world()
    x, y = global_batch()
    ddp.manual_seed(4)
    model = DDP(MaybeUnused().double(), find_unused_parameters=True)
    loss = nn.CrossEntropyLoss()(model(shard(x), use_extra=(rank == 0)), shard(y))
    loss.backward()
    # extra's gradient: rank 0's contribution averaged over all ranks
    ddp.manual_seed(4)
    plain = MaybeUnused().double()
    nn.CrossEntropyLoss()(plain(shard(x), use_extra=True), shard(y)).backward()
    local = plain.extra.weight.grad.numpy() if rank == 0 else np.zeros((3, 5))
    total = dist.get_communicator().bcast_obj(local if rank == 0 else None, 0)
    np.testing.assert_allclose(model.module.extra.weight.grad.numpy(), total / world, rtol=1e-10)
    assert_same_on_every_rank([p.grad.numpy() for p in model.module.parameters()])


def test_parameter_without_gradient_is_an_error_on_every_rank():
    rank, _ = rank_world()
    x, y = global_batch()
    model = DDP(MaybeUnused().double())
    with pytest.raises(RuntimeError, match="extra") as info:
        nn.CrossEntropyLoss()(model(shard(x), use_extra=(rank != 1)), shard(y)).backward()
    assert "find_unused_parameters=True" in str(info.value)
    assert "(rank 1: extra.weight, extra.bias)" in str(info.value)   # the same on every rank
    # the group is still usable afterwards (no collective was left half done)
    t = ddp.ones(1)
    dist.all_reduce(t)
    assert t.item() == dist.get_world_size()


def test_frozen_parameters_are_left_out():
    x, y = global_batch()
    model = make_model()
    model[0].weight.requires_grad_(False)
    frozen_before = model[0].weight.detach().numpy().copy()
    wrapped = DDP(model)
    assert all(p is not model[0].weight for p in wrapped.reducer.params)
    train(wrapped, shard(x), shard(y), steps=2)
    assert model[0].weight.grad is None
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), frozen_before)
    assert_same_on_every_rank(params_np(model))


def test_mismatched_models_error_on_every_rank():
    rank, _ = rank_world()
    model = nn.Linear(4, 5 if rank == 1 else 4)
    with pytest.raises(RuntimeError, match="differs between ranks.*weight"):
        DDP(model)


def test_buffers_follow_rank0():
    rank, _ = rank_world()
    ddp.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4)).double()
    wrapped = DDP(model)
    with ddp.no_grad():
        model[1].running_mean.fill_(float(rank))  # drift on purpose: rank 0 holds zeros
    x = ddp.randn(4, 5, dtype=ddp.float64)
    wrapped(x)   # broadcasts rank 0's buffers, then updates them with this rank's batch
    with ddp.no_grad():
        batch_mean = model[0](x).mean(0).numpy()
    np.testing.assert_allclose(model[1].running_mean.numpy(), 0.1 * batch_mean, rtol=1e-12)
    assert_same_on_every_rank([model[1].num_batches_tracked.numpy()])


# allreduce_hook: float32 rounding, as the plain model's buckets may be summed in another order
# (mode "shared" adds each rank's part in its own order; MPI in its own)
@pytest.mark.parametrize("hook_name,rtol", [("allreduce_hook", 1e-6), ("fp16_compress_hook", 2e-3),
                                            ("bf16_compress_hook", 2e-2)])
def test_comm_hooks_match_plain_allreduce(hook_name, rtol):
    from ddp.distributed.algorithms.ddp_comm_hooks import default_hooks
    x, y = global_batch()
    plain = DDP(make_model(dtype=ddp.float32))
    nn.CrossEntropyLoss()(plain(shard(x).float()), shard(y)).backward()
    hooked = DDP(make_model(dtype=ddp.float32))
    hooked.register_comm_hook(None, getattr(default_hooks, hook_name))
    nn.CrossEntropyLoss()(hooked(shard(x).float()), shard(y)).backward()
    for a, b in zip(plain.module.parameters(), hooked.module.parameters()):
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=rtol,
                                   atol=rtol * np.abs(a.grad.numpy()).max())
    assert_same_on_every_rank([p.grad.numpy() for p in hooked.module.parameters()])


def test_checkpoints_move_between_wrapped_and_unwrapped(tmp_path_factory):
    wrapped = DDP(make_model(seed=5))
    state = wrapped.state_dict()
    assert all(k.startswith("module.") for k in state)
    plain = make_model(seed=6)
    plain.load_state_dict(state)                     # the "module." prefix is no trap
    for a, b in zip(params_np(plain), params_np(wrapped.module)):
        np.testing.assert_array_equal(a, b)
    other = DDP(make_model(seed=7))
    other.load_state_dict(make_model(seed=5).state_dict())   # and back, without the prefix
    for a, b in zip(params_np(other.module), params_np(wrapped.module)):
        np.testing.assert_array_equal(a, b)


class Gated(nn.Module):
    """Its output reaches the parameters only where ``use`` is true (else it is ``2 x``)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x, use):
        return self.b(self.a(x).tanh()) if use else (x[:, :3] * 2.0)


def replay_mean_grads(model, x, y, uses):
    """In one process: each rank's loss on its shard, gradients summed and divided by the world
    size (what DDP gives every rank)."""
    world = len(uses)
    total = [np.zeros(p.shape) for p in model.parameters()]
    for r, use in enumerate(uses):
        if not use:
            continue
        for p in model.parameters():
            p.grad = None
        xr, yr = x[r * 4:(r + 1) * 4], y[r * 4:(r + 1) * 4]
        nn.CrossEntropyLoss()(model(xr, True), yr).backward()
        for t, p in zip(total, model.parameters()):
            t += p.grad.numpy()
    return [t / world for t in total]


@pytest.mark.parametrize("idle_rank", [0, 1])
def test_a_rank_without_gradients_in_the_first_step_takes_part_in_the_rebuild(idle_rank):
    # the layout rebuild after step 1 is a broadcast: a rank that saw no gradient in step 1
    # must enter it too (it used to return early and leave the others waiting)
    rank, world = rank_world()
    x, y = global_batch()
    ddp.manual_seed(9)
    model = DDP(Gated().double(), find_unused_parameters=True)
    ddp.manual_seed(9)
    reference = Gated().double()
    opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        uses = [not (step == 0 and r == idle_rank) for r in range(world)]
        xs = shard(x).detach().requires_grad_(True)
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(xs, uses[rank]), shard(y)).backward()
        opt.step()
        want = replay_mean_grads(reference, x, y, uses)
        with ddp.no_grad():
            for p, g in zip(reference.parameters(), want):
                p -= 0.1 * ddp.tensor(g)
    assert model.reducer._rebuilt
    for got, want in zip(params_np(model.module), params_np(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert_same_on_every_rank(params_np(model.module))


def test_a_parameter_frozen_on_one_rank_only_is_refused_on_every_rank():
    rank, world = rank_world()
    model = make_model()
    if rank == world - 1:
        model[2].bias.requires_grad_(False)
    with pytest.raises(RuntimeError, match=rf"parameter '2.bias' requires grad on rank 0 but is "
                                           rf"frozen on rank {world - 1}"):
        DDP(model)
    t = ddp.ones(1)     # no collective left half done
    dist.all_reduce(t)
    assert t.item() == world


def test_a_parameter_unused_on_every_rank_keeps_grad_none():
    x, y = global_batch()
    ddp.manual_seed(4)
    model = DDP(MaybeUnused().double(), find_unused_parameters=True)
    before = model.module.extra.weight.detach().numpy().copy()
    opt = ddp.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(shard(x), use_extra=False), shard(y)).backward()
        assert model.module.extra.weight.grad is None and model.module.extra.bias.grad is None
        assert model.module.main.weight.grad is not None
        opt.step()
    np.testing.assert_array_equal(model.module.extra.weight.detach().numpy(), before)
    assert_same_on_every_rank(params_np(model.module))


def test_bucket_layouts_that_differ_are_an_error_on_every_rank():
    # checked once per layout, not per step: the allreduces of different buckets would mix
    # gradients of different parameters
    rank, world = rank_world()
    with pytest.raises(RuntimeError, match=r"gradient buckets differ between ranks(.|\n)*"
                                           rf"rank {world - 1}: "):
        DDP(make_model(), bucket_cap_mb=0.0005 if rank == world - 1 else 25.0)
    t = ddp.ones(1)
    dist.all_reduce(t)
    assert t.item() == world


class Counting:
    """Counts the collectives DDP issues on its communicator (synchronous buckets)."""

    def __init__(self, comm, monkeypatch):
        self.calls = []
        for name in ("Allreduce", "Bcast", "allgather_obj", "bcast_obj", "Allreduce_shared",
                     "shared_buffers"):
            method = getattr(comm, name)

            def wrapped(*args, _name=name, _method=method, **kwargs):
                self.calls.append(_name)
                return _method(*args, **kwargs)
            monkeypatch.setattr(comm, name, wrapped)

    def take(self):
        calls, self.calls = self.calls, []
        return calls


class WithBuffers(nn.Module):
    """A constant buffer, and a counter that only the last rank bumps in forward."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3)
        self.register_buffer("scale", ddp.ones(3, dtype=ddp.float64))
        self.register_buffer("counter", ddp.zeros(1, dtype=ddp.float64))
        self.bump = False

    def forward(self, x):
        if self.bump:
            with ddp.no_grad():
                self.counter += 1
        return self.lin(x) * self.scale


@pytest.mark.parametrize("mode", ["sync", "shared"])
def test_the_status_rides_in_the_last_bucket_and_buffers_move_only_when_changed(mode,
                                                                               monkeypatch):
    # sync: buckets allreduced synchronously, countable; shared: summed in shared memory
    monkeypatch.setenv(*(("DDP_SYNC_COMM", "1") if mode == "sync" else ("DDP_COMM_MODE", mode)))
    rank, world = rank_world()
    x, y = global_batch()
    ddp.manual_seed(2)
    model = DDP(WithBuffers().double(), bucket_cap_mb=0.0001)
    assert all((b.shared is not None) == (mode == "shared") for b in model.reducer.buckets)
    count = Counting(model.comm, monkeypatch)
    allreduce = "Allreduce" if mode == "sync" else "Allreduce_shared"
    loss_fn = nn.CrossEntropyLoss()
    buckets = len(model.reducer.buckets)
    assert buckets > 1 and model.reducer.buckets[-1].tail.size == 2
    for step in range(3):
        loss_fn(model(shard(x)), shard(y)).backward()
        calls = count.take()
        # one allreduce per bucket (shared: one sum of them all) and nothing else (the
        # missing-gradient status and the buffer flag ride in the last bucket); the buffers
        # move only before the first forward
        reductions = buckets if mode == "sync" else 1
        assert calls.count(allreduce) == reductions, calls
        assert calls.count("Bcast") == (1 if step == 0 else 0), (step, calls)
        rebuild = ["bcast_obj", "allgather_obj"] if step == 1 else []   # once: the new layout
        if rebuild and mode == "shared":   # and its shared memory: the files' names, success
            rebuild += ["shared_buffers", "allgather_obj", "allgather_obj"]
        assert sorted(calls) == sorted([allreduce] * reductions + ["Bcast"] * (step == 0) +
                                       rebuild), calls
    # a buffer that changes on one rank only: broadcast before the next forward
    model.module.bump = rank == world - 1
    loss_fn(model(shard(x)), shard(y)).backward()
    assert count.take().count("Bcast") == 0
    model.module.bump = False
    loss_fn(model(shard(x)), shard(y)).backward()
    assert count.take().count("Bcast") == 1
    assert model.module.counter.item() == 0.0             # rank 0's value everywhere
    assert_same_on_every_rank([b.numpy() for b in model.module.buffers()])


def test_batchnorm_statistics_still_follow_rank0_every_step():
    rank, _ = rank_world()
    x, y = global_batch()
    ddp.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double())
    ddp.manual_seed(0)
    reference = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    for step in range(3):
        nn.CrossEntropyLoss()(model(shard(x)), shard(y)).backward()
    with ddp.no_grad():   # rank 0's statistics after its 3 batches (each forward starts from
        for step in range(3):   # rank 0's buffers, broadcast because they changed)
            reference(x[:4])
    model.eval()
    model(shard(x))       # the broadcast before this forward brings rank 0's statistics
    np.testing.assert_allclose(model.module[1].running_mean.numpy(),
                               reference[1].running_mean.numpy(), rtol=1e-12)
    assert_same_on_every_rank([b.numpy() for b in model.module.buffers()])
