"""Every nn layer, loss and functional op on the CUDA path, against the same computation on the CPU.

These run on a real GPU (CuPy) where one is visible and on the simulated device of tests/simcuda
elsewhere (CI), which refuses what CuPy refuses. On the simulated device the tests also count
device->host synchronisations: a training step's forward and backward must make none (range
checks of targets and indices are skipped on a GPU unless DDP_DEBUG is set, as --debug does).
"""
import copy

import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.nn.functional as F

pytestmark = pytest.mark.gpu
F64 = ddp.float64


def _host_syncs():
    """Device->host transfers so far on the simulated device (None on a real GPU: not counted)."""
    from ddp import backend
    stats = getattr(backend.cuda_module(), "is_simulated", False) and _sim_stats()
    return None if stats is False else stats["to_host"]


def _sim_stats():
    from tests import simcuda
    return simcuda.stats


def _inputs(shapes, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _run(module, arrays, device, targets=None, train=True):
    """Forward and backward of ``module`` on ``device``: (outputs, input grads, param grads)."""
    m = copy.deepcopy(module).to(device)
    m.train(train)
    xs = [ddp.tensor(a, device=device, requires_grad=a.dtype.kind == "f") for a in arrays]
    extra = [] if targets is None else [ddp.tensor(t, device=device) for t in targets]
    before = _host_syncs() if device != "cpu" else None
    out = m(*xs, *extra)
    out = out[0] if isinstance(out, tuple) else out
    seed_grad = ddp.tensor(np.linspace(-1, 1, out.numel()).reshape(tuple(out.shape)),
                           dtype=out.dtype, device=device)
    out.backward(seed_grad)
    after = _host_syncs() if device != "cpu" else None
    assert out.device.type == device.split(":")[0]
    grads = [x.grad for x in xs if x.requires_grad]
    assert all(g is not None and g.device == out.device for g in grads)
    pgrads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
    syncs = None if before is None else after - before
    return (out.detach().cpu().numpy(), [g.cpu().numpy() for g in grads],
            {n: g.cpu().numpy() for n, g in pgrads.items()}, syncs)


def _compare(module, shapes, seed=0, targets=None, train=True, rtol=1e-10, atol=1e-12,
             syncs_allowed=0):
    arrays = _inputs(shapes, seed)
    ddp.manual_seed(seed)
    cpu = _run(module, arrays, "cpu", targets, train)
    ddp.manual_seed(seed)
    gpu = _run(module, arrays, "cuda", targets, train)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=rtol, atol=atol)
    for g, c in zip(gpu[1], cpu[1]):
        np.testing.assert_allclose(g, c, rtol=rtol, atol=atol)
    assert gpu[2].keys() == cpu[2].keys()
    for name in cpu[2]:
        np.testing.assert_allclose(gpu[2][name], cpu[2][name], rtol=rtol, atol=atol,
                                   err_msg=name)
    if gpu[3] is not None:
        assert gpu[3] <= syncs_allowed, f"{gpu[3]} device->host syncs in forward + backward"


def _double(m):
    return m.to(F64)


LAYERS = [
    ("linear", lambda: nn.Linear(5, 3), [(4, 5)]),
    ("conv1d", lambda: nn.Conv1d(3, 4, 3, padding=1), [(2, 3, 9)]),
    ("conv2d", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), [(2, 3, 8, 7)]),
    ("conv2d_groups_dilation", lambda: nn.Conv2d(4, 4, 3, groups=2, dilation=2), [(2, 4, 9, 9)]),
    ("conv_transpose2d", lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1,
                                                   output_padding=1), [(2, 3, 5, 4)]),
    ("maxpool1d", lambda: nn.MaxPool1d(2), [(2, 3, 8)]),
    ("maxpool2d", lambda: nn.MaxPool2d(3, stride=2, padding=1), [(2, 3, 9, 8)]),
    ("avgpool1d", lambda: nn.AvgPool1d(3, stride=2, padding=1), [(2, 3, 9)]),
    ("avgpool2d_pad_exclude", lambda: nn.AvgPool2d(3, stride=2, padding=1,
                                                   count_include_pad=False), [(2, 3, 9, 8)]),
    ("adaptive_avgpool1d", lambda: nn.AdaptiveAvgPool1d(4), [(2, 3, 10)]),
    ("adaptive_avgpool2d", lambda: nn.AdaptiveAvgPool2d((3, 2)), [(2, 3, 7, 5)]),
    ("batchnorm1d", lambda: nn.BatchNorm1d(4), [(6, 4)]),
    ("batchnorm2d", lambda: nn.BatchNorm2d(3), [(4, 3, 5, 5)]),
    ("layernorm", lambda: nn.LayerNorm(6), [(3, 4, 6)]),
    ("groupnorm", lambda: nn.GroupNorm(2, 4), [(3, 4, 5)]),
    ("instancenorm2d", lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
     [(2, 3, 4, 5)]),
    ("embedding_bag_of_rows", None, None),   # below: integer input
    ("lstm", lambda: nn.LSTM(4, 5, num_layers=2, batch_first=True), [(3, 6, 4)]),
    ("gru_bidirectional", lambda: nn.GRU(4, 3, bidirectional=True), [(5, 2, 4)]),
    ("rnn_relu", lambda: nn.RNN(3, 4, nonlinearity="relu"), [(5, 2, 3)]),
    ("lstm_cell", lambda: nn.LSTMCell(3, 4), [(2, 3)]),
    ("multihead_attention", None, None),     # below: three inputs
    ("transformer_encoder_layer", lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0,
                                                                     batch_first=True),
     [(2, 5, 8)]),
    ("prelu", lambda: nn.PReLU(3), [(2, 3, 4)]),
    ("glu_gelu_silu_mish", lambda: nn.Sequential(nn.GLU(), nn.GELU(), nn.SiLU(), nn.Mish()),
     [(3, 8)]),
    ("softmax_logsoftmax", lambda: nn.Sequential(nn.Softmax(dim=1), nn.LogSoftmax(dim=-1)),
     [(3, 5)]),
]


@pytest.mark.parametrize("name,make,shapes", [c for c in LAYERS if c[1] is not None],
                         ids=[c[0] for c in LAYERS if c[1] is not None])
def test_layer_matches_cpu(name, make, shapes):
    ddp.manual_seed(0)
    _compare(_double(make()), shapes, train=True)


def _nan_cases():
    from tests.nn.test_conv_pool import _NAN_TORCH
    return _NAN_TORCH


@pytest.mark.parametrize("case,y,idx,grad", _nan_cases(), ids=lambda v: str(v)[:40])
def test_max_pool_takes_nan_and_minus_infinity_as_pytorch(case, y, idx, grad):
    """The device's path (the NumPy path's code): a window's last NaN is its maximum, a window
    of -inf's maximum is its first element inside the input (PyTorch 2.13's answers, recorded
    in tests/nn/test_conv_pool.py), with no device->host transfer."""
    from tests.nn.test_conv_pool import _NAN_INPUT
    x = ddp.tensor(np.array(_NAN_INPUT)[None, None], device="cuda", requires_grad=True)
    before = _host_syncs()
    out, where = F.max_pool2d(x, return_indices=True, **case)
    out.backward(ddp.arange(1, out.numel() + 1, dtype=out.dtype, device="cuda").reshape(out.shape))
    if before is not None:
        assert _host_syncs() == before
    np.testing.assert_array_equal(out.detach().cpu().numpy()[0, 0], np.array(y))
    np.testing.assert_array_equal(where.cpu().numpy()[0, 0], idx)
    np.testing.assert_array_equal(x.grad.cpu().numpy()[0, 0], np.array(grad))


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_layer_norm_under_a_sum_loss_matches_cpu(loss):
    """y.sum() / y.mean() hand layer norm one value broadcast over its output (its own backward
    for that case): the same gradients on the device, and no device->host transfer."""
    _sum_loss_matches_cpu(nn.LayerNorm(6), (3, 4, 6), loss)


def _sum_loss_matches_cpu(module, shape, loss):
    """``module``'s gradients under ``y.sum()``/``y.mean()`` on the device are the CPU's, and
    forward + backward make no device->host transfer."""
    ddp.manual_seed(0)
    m = _double(module)
    x = _inputs([shape], 0)[0]
    got = {}
    for device in ("cpu", "cuda"):
        mod = copy.deepcopy(m).to(device)
        xt = ddp.tensor(x, device=device, requires_grad=True)
        before = _host_syncs() if device != "cpu" else None
        y = mod(xt)
        (y.sum() if loss == "sum" else y.mean()).backward()
        syncs = None if before is None else _host_syncs() - before
        got[device] = [t.grad.cpu().numpy() for t in (xt, mod.weight, mod.bias)]
    for g, c in zip(got["cuda"], got["cpu"]):
        np.testing.assert_allclose(g, c, rtol=1e-10, atol=1e-12)
    assert not syncs, f"{syncs} device->host syncs in forward + backward"


@pytest.mark.parametrize("make", [lambda: nn.GroupNorm(2, 4), lambda: nn.BatchNorm2d(4),
                                  lambda: nn.InstanceNorm2d(4, affine=True)],
                         ids=["group_norm", "batch_norm", "instance_norm"])
@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_channel_norms_under_a_sum_loss_match_cpu(make, loss):
    """y.sum() / y.mean() hand group and batch norm one value broadcast over the output (their
    backward's constant-gradient case): the same gradients on the device, and no device->host
    transfer."""
    _sum_loss_matches_cpu(make(), (3, 4, 5, 6), loss)


def test_batchnorm_running_stats_and_eval_on_device():
    ddp.manual_seed(0)
    bn = _double(nn.BatchNorm2d(3))
    x = _inputs([(4, 3, 5, 5)], 1)[0]
    cpu, gpu = copy.deepcopy(bn), copy.deepcopy(bn).to("cuda")
    for _ in range(3):
        cpu(ddp.tensor(x))
        gpu(ddp.tensor(x, device="cuda"))
    for name, buf in cpu.named_buffers():
        got = dict(gpu.named_buffers())[name]
        assert got.is_cuda
        np.testing.assert_allclose(got.cpu().numpy(), buf.numpy(), rtol=1e-12)
    _compare(bn, [(4, 3, 5, 5)], train=False)


def test_embedding_and_its_scatter_gradient():
    ddp.manual_seed(0)
    emb = _double(nn.Embedding(7, 3, padding_idx=0))
    idx = np.array([[1, 2, 2, 0], [6, 1, 1, 1]])
    cpu = _run(emb, [idx], "cpu")
    gpu = _run(emb, [idx], "cuda")
    np.testing.assert_allclose(gpu[0], cpu[0])
    np.testing.assert_allclose(gpu[2]["weight"], cpu[2]["weight"], rtol=1e-12)
    assert gpu[3] in (None, 0)


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_embedding_under_a_sum_loss_matches_cpu(loss):
    """y.sum() / y.mean() hand the embedding one value broadcast over its output (a count per
    row): the same weight gradient on the device, and no device->host transfer."""
    ddp.manual_seed(0)
    emb = _double(nn.Embedding(7, 3, padding_idx=0))
    idx = np.array([[1, 2, 2, 0], [6, 1, 1, 1]])
    got = {}
    for device in ("cpu", "cuda"):
        m = copy.deepcopy(emb).to(device)
        before = _host_syncs() if device != "cpu" else None
        y = m(ddp.tensor(idx, device=device))
        (y.sum() if loss == "sum" else y.mean()).backward()
        syncs = None if before is None else _host_syncs() - before
        got[device] = m.weight.grad.cpu().numpy()
    np.testing.assert_allclose(got["cuda"], got["cpu"], rtol=1e-12)
    assert got["cpu"][0].tolist() == [0, 0, 0] and not syncs


def test_multihead_attention_with_masks():
    ddp.manual_seed(0)
    mha = _double(nn.MultiheadAttention(8, 2, batch_first=True))
    q, k = _inputs([(2, 4, 8), (2, 6, 8)], 3)
    pad = np.array([[False] * 5 + [True], [False] * 6])

    def run(device):
        m = copy.deepcopy(mha).to(device)
        qt = ddp.tensor(q, device=device, requires_grad=True)
        kt = ddp.tensor(k, device=device, requires_grad=True)
        out, w = m(qt, kt, kt, key_padding_mask=ddp.tensor(pad, device=device))
        (out.sum() + w.sum()).backward()
        return out.detach().cpu().numpy(), qt.grad.cpu().numpy(), kt.grad.cpu().numpy()
    for g, c in zip(run("cuda"), run("cpu")):
        np.testing.assert_allclose(g, c, rtol=1e-10, atol=1e-12)


LOSSES = [
    ("cross_entropy", nn.CrossEntropyLoss(), (5, 4), np.array([0, 3, 1, 1, 2])),
    ("cross_entropy_smoothing_ignore", nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=1),
     (5, 4), np.array([0, 3, 1, 1, 2])),
    ("nll", nn.NLLLoss(), (5, 4), np.array([0, 3, 1, 1, 2])),
    ("mse", nn.MSELoss(), (4, 3), None),
    ("l1", nn.L1Loss(), (4, 3), None),
    ("smooth_l1", nn.SmoothL1Loss(beta=0.5), (4, 3), None),
    ("huber", nn.HuberLoss(delta=0.7), (4, 3), None),
    ("bce_with_logits", nn.BCEWithLogitsLoss(), (4, 3), None),
    ("kl_div", nn.KLDivLoss(reduction="batchmean", log_target=True), (4, 3), None),
]


@pytest.mark.parametrize("name,loss,shape,classes", LOSSES, ids=[c[0] for c in LOSSES])
def test_loss_matches_cpu_without_syncs(name, loss, shape, classes):
    target = classes if classes is not None else _inputs([shape], 5)[0]
    if name == "bce_with_logits":
        target = (target > 0).astype(np.float64)

    class WithTarget(nn.Module):
        def forward(self, x, t):
            return loss(x, t)
    _compare(WithTarget(), [shape], seed=2, targets=[target])


def test_bce_on_probabilities():
    x = 1 / (1 + np.exp(-_inputs([(4, 3)], 4)[0]))
    t = (x > 0.5).astype(np.float64)
    res = [F.binary_cross_entropy(ddp.tensor(x, device=d), ddp.tensor(t, device=d)).item()
           for d in ("cpu", "cuda")]
    assert res[0] == pytest.approx(res[1], rel=1e-12)


def test_dropout_draws_its_mask_on_the_device():
    x = ddp.ones(1000, 10, device="cuda", dtype=F64, requires_grad=True)
    simulated = getattr(ddp.backend.cuda_module(), "is_simulated", False)
    if simulated:
        from tests import simcuda
        simcuda.reset_stats()
    y = F.dropout(x, 0.3, training=True)
    y.sum().backward()
    if simulated:   # the mask was drawn on the device: nothing crossed to or from the host
        assert simcuda.stats == {"to_host": 0, "to_device": 0}, simcuda.stats
    assert y.is_cuda and x.grad.is_cuda
    kept = (y != 0).float().mean().item()
    assert 0.65 < kept < 0.75
    np.testing.assert_allclose(x.grad.cpu().numpy(), (y != 0).cpu().numpy() / 0.7)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_modes(mode):
    x = _inputs([(2, 3, 5, 6)], 6)[0]

    class Pad(nn.Module):
        def forward(self, t):
            return F.pad(t, (1, 2, 2, 1), mode=mode)
    _compare(Pad(), [x.shape], seed=6)


@pytest.mark.parametrize("mode,kw", [("nearest", {}), ("bilinear", {"align_corners": False}),
                                     ("bilinear", {"align_corners": True})])
def test_interpolate_modes(mode, kw):
    class Up(nn.Module):
        def forward(self, t):
            return F.interpolate(t, size=(7, 9), mode=mode, **kw)
    _compare(Up(), [(2, 3, 4, 5)], seed=7)


def test_tables_are_built_once_per_shape_and_device():
    """Pooling divisors, interpolation matrices and pad indices are cached on the device: a
    second identical call copies nothing from the host."""
    from tests import simcuda
    x = ddp.tensor(_inputs([(2, 3, 8, 8)], 8)[0], device="cuda")

    def step():
        F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        F.adaptive_avg_pool2d(x, (3, 5))
        F.interpolate(x, size=(5, 11), mode="bilinear", align_corners=False)
        F.pad(x, (1, 1, 2, 0), mode="reflect")
    step()
    if not getattr(ddp.backend.cuda_module(), "is_simulated", False):
        return
    simcuda.reset_stats()
    step()
    assert simcuda.stats["to_device"] == 0, simcuda.stats


def test_linear_writes_its_gradients_into_device_sinks():
    # DDP's buckets on a GPU: linear's weight and bias gradients written into the sinks
    # (device arrays), scaled, and adopted as .grad (see tests/core/test_grad_adoption.py)
    ddp.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    x = _inputs([(7, 5)], 3)[0]
    F.linear(ddp.tensor(x), lin.weight, lin.bias).pow(2).sum().backward()
    want = [lin.weight.grad.numpy(), lin.bias.grad.numpy()]
    lin = lin.to("cuda")
    lin.zero_grad()
    sinks = []
    for p in (lin.weight, lin.bias):
        sinks.append(ddp.zeros_like(p)._data)
        p._grad_sink = lambda out=sinks[-1]: (out, 0.5)
    F.linear(ddp.tensor(x, device="cuda"), lin.weight, lin.bias).pow(2).sum().backward()
    for p, sink, w in zip((lin.weight, lin.bias), sinks, want):
        assert p.grad._data is sink
        np.testing.assert_allclose(p.grad.cpu().numpy(), 0.5 * w, rtol=1e-12)


def test_embedding_scatters_its_gradient_into_a_device_sink():
    ddp.manual_seed(0)
    emb = nn.Embedding(30, 4).double()
    idx = np.random.default_rng(5).integers(0, 30, (3, 5))
    upstream = _inputs([(3, 5, 4)], 6)[0]
    emb(ddp.tensor(idx)).backward(ddp.tensor(upstream))
    want = emb.weight.grad.numpy()
    emb = emb.to("cuda")
    emb.zero_grad()
    sink = ddp.ones_like(emb.weight)._data   # what the bucket held before: overwritten
    emb.weight._grad_sink = lambda: (sink, 0.25)
    emb(ddp.tensor(idx, device="cuda")).backward(ddp.tensor(upstream, device="cuda"))
    assert emb.weight.grad._data is sink
    np.testing.assert_allclose(emb.weight.grad.cpu().numpy(), 0.25 * want, rtol=1e-12)


def test_convolution_writes_its_weight_gradient_into_a_device_sink():
    ddp.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    xv, upstream = _inputs([(2, 2, 5, 5), (2, 3, 5, 5)], 7)
    conv(ddp.tensor(xv, requires_grad=True)).backward(ddp.tensor(upstream))
    want = conv.weight.grad.numpy()
    conv = conv.to("cuda")
    conv.zero_grad()
    sink = ddp.ones_like(conv.weight)._data
    conv.weight._grad_sink = lambda: (sink, 0.25)
    conv(ddp.tensor(xv, device="cuda", requires_grad=True)).backward(
        ddp.tensor(upstream, device="cuda"))
    assert conv.weight.grad._data is sink
    np.testing.assert_allclose(conv.weight.grad.cpu().numpy(), 0.25 * want, rtol=1e-12)


def _into_device_sinks(module, run, scale):
    """``run(module, device)`` (forward and backward) on the CPU, then on the GPU with every
    parameter offered a device sink holding ones (what the bucket held before): each .grad must
    be its sink, holding ``scale`` times the CPU's gradient."""
    run(module, "cpu")
    want = [p.grad.numpy() for p in module.parameters()]
    module = module.to("cuda")
    module.zero_grad()
    sinks = []
    for p in module.parameters():
        sinks.append(ddp.ones_like(p)._data)
        p._grad_sink = lambda out=sinks[-1]: (out, scale)
    run(module, "cuda")
    for p, sink, w in zip(module.parameters(), sinks, want):
        assert p.grad._data is sink
        np.testing.assert_allclose(p.grad.cpu().numpy(), scale * w, rtol=1e-12, atol=1e-14)


def test_transposed_convolution_writes_its_gradients_into_device_sinks():
    ddp.manual_seed(0)
    xv, upstream = _inputs([(2, 3, 4, 4), (2, 2, 8, 8)], 8)

    def run(m, device):
        m(ddp.tensor(xv, device=device, requires_grad=True)).backward(
            ddp.tensor(upstream, device=device))
    _into_device_sinks(nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1).double(), run, 0.25)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_recurrent_layers_write_their_gradients_into_device_sinks(kind):
    ddp.manual_seed(0)
    (xv,) = _inputs([(6, 2, 3)], 9)

    def run(m, device):
        out, _ = m(ddp.tensor(xv, device=device))
        out.pow(2).sum().backward()
    _into_device_sinks(getattr(nn, kind)(3, 4, bidirectional=True).double(), run, 0.5)
