"""Training on the CUDA path: device selection, optimizers, AMP, checkpoints, random streams.

Real GPU (CuPy) where one is visible, the simulated device of tests/simcuda elsewhere.
"""
import copy
import threading

import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.optim as optim

pytestmark = pytest.mark.gpu


def _model():
    ddp.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 6)), rng.integers(0, 3, 16)


def _train(model, opt_cls, kw, device, steps=4):
    model = copy.deepcopy(model).to(device)
    opt = opt_cls(model.parameters(), **kw)
    x, y = _data()
    x, y = ddp.tensor(x, device=device), ddp.tensor(y, device=device)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return [p.detach().cpu().numpy() for p in model.parameters()], opt


OPTIMIZERS = [(optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
              (optim.Adam, {"lr": 1e-2, "amsgrad": True}),
              (optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
              (optim.RMSprop, {"lr": 1e-2, "momentum": 0.5, "centered": True}),
              (optim.Adagrad, {"lr": 0.1}),
              (optim.Adadelta, {"lr": 1.0})]
for _name in ("NAdam", "RAdam", "Adamax", "ASGD", "Rprop"):   # where ddp has them
    if hasattr(optim, _name):
        OPTIMIZERS.append((getattr(optim, _name), {"lr": 1e-2}))


@pytest.mark.parametrize("cls,kw", OPTIMIZERS, ids=[c.__name__ for c, _ in OPTIMIZERS])
def test_optimizer_trajectory_on_device_equals_cpu(cls, kw):
    model = _model()
    cpu, _ = _train(model, cls, kw, "cpu")
    gpu, opt = _train(model, cls, kw, "cuda")
    for c, g in zip(cpu, gpu):
        np.testing.assert_allclose(g, c, rtol=1e-10, atol=1e-12)
    for state in opt.state.values():   # the optimizer's state lives beside its parameter
        for v in state.values():
            if isinstance(v, ddp.Tensor) and v.dim() > 0:
                assert v.is_cuda


def test_cuda_index_selects_the_device():
    """'cuda:1', .cuda(1), set_device and the device context all choose the GPU; each thread
    has its own current device."""
    assert ddp.cuda.device_count() >= 2
    t = ddp.ones(3, device="cuda:1")
    assert t.device == ddp.device("cuda", 1) and t.device.index == 1
    assert ddp.ones(2).cuda(1).device.index == 1
    assert ddp.ones(2).cuda().device.index == ddp.cuda.current_device() == 0
    with ddp.cuda.device(1):
        assert ddp.cuda.current_device() == 1
        assert ddp.zeros(2, device="cuda").device.index == 1
        assert ddp.randn(2, device="cuda").device.index == 1
        seen = []
        th = threading.Thread(target=lambda: seen.append(ddp.cuda.current_device()))
        th.start()
        th.join()
        assert seen == [0]   # a new thread starts on GPU 0, as in CUDA
    assert ddp.cuda.current_device() == 0
    ddp.cuda.set_device(1)
    try:
        assert ddp.tensor([1.0]).cuda().device.index == 1
        y = (t * 2 + ddp.ones(3, device="cuda:1")).sum()
        assert y.device.index == 1 and y.item() == 9.0
    finally:
        ddp.cuda.set_device(0)
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        ddp.zeros(1, device=f"cuda:{ddp.cuda.device_count()}")


def test_a_model_on_gpu_1_trains_there_while_gpu_0_is_current():
    """Ops run on their tensors' GPU (PyTorch's device guard), whichever GPU is current."""
    assert ddp.cuda.current_device() == 0
    model = _model().to("cuda:1")
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x, y = _data()
    loss = nn.functional.cross_entropy(model(ddp.tensor(x, device="cuda:1")),
                                       ddp.tensor(y, device="cuda:1"))
    loss.backward()
    assert all(p.grad.device.index == 1 for p in model.parameters())
    opt.step()
    assert all(p.device.index == 1 for p in model.parameters())


def test_random_streams_are_seeded_per_device():
    ddp.manual_seed(3)
    a = ddp.rand(5, device="cuda")
    b = ddp.randn(2, 3, device="cuda:1")
    ddp.manual_seed(3)
    np.testing.assert_array_equal(ddp.rand(5, device="cuda").cpu().numpy(), a.cpu().numpy())
    np.testing.assert_array_equal(ddp.randn(2, 3, device="cuda:1").cpu().numpy(),
                                  b.cpu().numpy())
    g = ddp.Generator(device="cuda").manual_seed(11)
    state = g.get_state()
    first = ddp.randint(0, 100, (6,), generator=g, device="cuda")
    g.set_state(state)
    np.testing.assert_array_equal(ddp.randint(0, 100, (6,), generator=g, device="cuda")
                                  .cpu().numpy(), first.cpu().numpy())
    perm = ddp.randperm(10, device="cuda")
    assert perm.is_cuda and sorted(perm.cpu().numpy().tolist()) == list(range(10))
    with pytest.raises(RuntimeError, match="Expected a 'cuda' device type for generator"):
        ddp.rand(2, device="cuda", generator=ddp.Generator())
    w = ddp.empty(4, 4, device="cuda").normal_(0, 1)
    assert w.is_cuda and float(w.std()) > 0


def test_autocast_and_grad_scaler_on_device():
    model = _model().float().cuda()
    opt = optim.SGD(model.parameters(), lr=0.1)
    scaler = ddp.amp.GradScaler("cuda")
    x, y = _data()
    x, y = ddp.tensor(x, dtype=ddp.float32, device="cuda"), ddp.tensor(y, device="cuda")
    with ddp.autocast("cuda"):
        out = model(x)
        assert out.dtype == ddp.float16 and out.is_cuda
        loss = nn.functional.cross_entropy(out, y)
        assert loss.dtype == ddp.float32
    scaler.scale(loss).backward()
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 65536.0
    assert any(not bool((p == b).all()) for p, b in zip(model.parameters(), before))
    assert all(p.dtype == ddp.float32 and p.is_cuda for p in model.parameters())


def test_bfloat16_on_device():
    x = ddp.randn(4, 5, device="cuda").to(ddp.bfloat16).requires_grad_()
    (x * x).sum().backward()
    assert x.grad.dtype == ddp.bfloat16 and x.grad.is_cuda
    np.testing.assert_allclose(x.grad.float().cpu().numpy(), 2 * x.detach().float().cpu().numpy(),
                               rtol=1e-2)


def test_checkpoint_of_a_gpu_model(tmp_path):
    model = _model().cuda()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    _train(model, optim.Adam, {"lr": 1e-2}, "cuda", steps=1)
    path = tmp_path / "gpu.pt"
    ddp.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)
    back = ddp.load(path)
    assert all(v.is_cuda for v in back["model"].values())
    on_cpu = ddp.load(path, map_location="cpu")
    assert not any(v.is_cuda for v in on_cpu["model"].values())
    on_1 = ddp.load(path, map_location="cuda:1")
    assert all(v.device.index == 1 for v in on_1["model"].values())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(on_cpu["model"][k].numpy(), v.cpu().numpy())


def test_cuda_tensor_refuses_silent_host_conversion():
    t = ddp.ones(3, device="cuda")
    with pytest.raises(TypeError, match="Tensor.cpu"):
        np.asarray(t)
    with pytest.raises(TypeError, match="Tensor.cpu"):
        t.numpy()
    np.testing.assert_array_equal(t.cpu().numpy(), np.ones(3, np.float32))


def test_index_add_and_scatter_add_for_every_dtype():
    for dt in (ddp.int64, ddp.int32, ddp.int16, ddp.int8, ddp.uint8, ddp.bool, ddp.float16,
               ddp.bfloat16, ddp.float32, ddp.float64):
        base = ddp.zeros(4, dtype=dt, device="cuda")
        src = ddp.ones(5, dtype=dt, device="cuda")
        idx = ddp.tensor([0, 1, 1, 3, 3], device="cuda")
        out = base.index_add(0, idx, src)
        want = [1, 2, 0, 2] if dt != ddp.bool else [True, True, False, True]
        assert out.dtype == dt and out.cpu().tolist() == want, dt
        sc = ddp.zeros(4, dtype=dt, device="cuda").scatter_add(0, idx, src)
        assert sc.cpu().tolist() == want, dt
    emb = nn.Embedding(5, 2).to(ddp.bfloat16).cuda()
    emb(ddp.tensor([1, 1, 4], device="cuda")).float().sum().backward()
    assert emb.weight.grad.cpu().float().numpy()[1].tolist() == [2.0, 2.0]


def test_indexing_with_a_list_of_cuda_tensors():
    t = ddp.arange(12.0, device="cuda").reshape(3, 4)
    i, j = ddp.tensor(1, device="cuda"), ddp.tensor(2, device="cuda")
    assert t[[i, j]].cpu().tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]]
    assert ddp.Tensor(t._data).is_cuda   # a Tensor from a device array stays there


def test_overlapping_in_place_updates_are_buffered():
    t = ddp.arange(6.0, device="cuda")
    t[1:].add_(t[:-1])
    assert t.cpu().tolist() == [0, 1, 3, 5, 7, 9]   # NumPy's (and PyTorch's) answer
    u = ddp.arange(6.0, device="cuda")
    u[1:] = u[:-1]
    assert u.cpu().tolist() == [0, 0, 1, 2, 3, 4]
    v = ddp.arange(6.0, device="cuda")
    v[2:].copy_(v[:-2])
    assert v.cpu().tolist() == [0, 1, 0, 1, 2, 3]
