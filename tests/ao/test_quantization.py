"""Dynamic quantization: quantized tensors, observers, the quantized Linear/LSTM/GRU and
quantize_dynamic, against PyTorch's fbgemm numbers on the same float weights (recorded), against
the float model (within 2 %), and by size (state_dict and ddp.save file >= 3x smaller)."""
import io

import numpy as np
import pytest

import ddp
import ddp.nn as nn
from ddp.ao.nn.quantized import dynamic as nnqd
from ddp.ao.quantization import (MinMaxObserver, PerChannelMinMaxObserver,
                                 per_channel_dynamic_qconfig, quantize_dynamic)



def floats(*shape, scale=1.0, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + offset).astype(np.float32)


def _silenced(torch):
    import warnings
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*quantiz.*")
    torch.backends.quantized.engine = "fbgemm"


# --------------------------------------------------------------------------- quantized tensors

def _tie_heavy(n=4000, seed=0):
    """Values on and near the rounding ties of scale 0.1 (k/20), and ordinary ones."""
    rng = np.random.default_rng(seed)
    ties = (rng.integers(-400, 400, n) / 20).astype(np.float32)
    return np.concatenate([ties, floats(n, scale=5, seed=seed)])


@pytest.mark.parametrize("dtype,scale,zero_point", [("quint8", 0.1, 3), ("qint8", 0.1, -7),
                                                    ("qint8", 0.0371, 0), ("qint32", 0.01, 5)])
def test_quantize_per_tensor_matches_torch(oracle, dtype, scale, zero_point):
    x = _tie_heavy()

    def reference(torch):
        _silenced(torch)
        q = torch.quantize_per_tensor(torch.tensor(x), scale, zero_point, getattr(torch, dtype))
        return {"int": q.int_repr().numpy(), "deq": q.dequantize().numpy(),
                "scale": q.q_scale(), "zp": q.q_zero_point()}

    ref = oracle(reference)
    q = ddp.quantize_per_tensor(ddp.tensor(x), scale, zero_point, getattr(ddp, dtype))
    np.testing.assert_array_equal(q.int_repr().numpy(), ref["int"])
    np.testing.assert_array_equal(q.dequantize().numpy(), ref["deq"])
    assert q.q_scale() == float(ref["scale"]) and q.q_zero_point() == int(ref["zp"])
    assert q.dtype is getattr(ddp, dtype) and q.is_quantized and q.shape == (x.size,)
    assert q.qscheme() is ddp.per_tensor_affine


def test_quantize_per_channel_matches_torch(oracle):
    w = floats(6, 40, seed=3)
    scales = (np.abs(w).max(1) / 127.5).astype(np.float64)
    zero_points = np.array([0, 1, -2, 3, 0, 5])

    def reference(torch):
        _silenced(torch)
        q = torch.quantize_per_channel(torch.tensor(w), torch.tensor(scales),
                                       torch.tensor(zero_points), 0, torch.qint8)
        return {"int": q.int_repr().numpy(), "deq": q.dequantize().numpy(),
                "axis": q.q_per_channel_axis()}

    ref = oracle(reference)
    q = ddp.quantize_per_channel(ddp.tensor(w), ddp.tensor(scales), ddp.tensor(zero_points), 0,
                                 ddp.qint8)
    np.testing.assert_array_equal(q.int_repr().numpy(), ref["int"])
    np.testing.assert_array_equal(q.dequantize().numpy(), ref["deq"])
    assert q.q_per_channel_axis() == int(ref["axis"]) and q.qscheme() is ddp.per_channel_affine
    np.testing.assert_array_equal(q.q_per_channel_scales().numpy(), scales)


def test_quantized_tensor_refuses_arithmetic_and_quantized_dtypes_refuse_creation():
    q = ddp.quantize_per_tensor(ddp.ones(3), 0.5, 0, ddp.qint8)
    with pytest.raises(NotImplementedError, match="quantized tensor.*dequantize"):
        q + 1
    with pytest.raises(RuntimeError, match="quantized dtype"):
        ddp.zeros(2, dtype=ddp.qint8)
    with pytest.raises(RuntimeError, match="dtype must be"):
        ddp.quantize_per_tensor(ddp.ones(3), 0.5, 0, ddp.int8)
    with pytest.raises(RuntimeError, match="zero_point"):
        ddp.quantize_per_tensor(ddp.ones(3), 0.5, 300, ddp.quint8)
    with pytest.raises(RuntimeError, match="kPerTensorAffine"):
        ddp.quantize_per_channel(ddp.ones(2, 2), ddp.ones(2), ddp.zeros(2), 0,
                                 ddp.qint8).q_scale()
    assert "quantization_scheme=ddp.per_tensor_affine, scale=0.5, zero_point=0" in \
        repr(q).replace("\n", " ").replace("  ", " ")
    assert not ddp.qint8.is_floating_point and ddp.qint8.is_quantized


def test_quantized_tensors_survive_save_and_load():
    per_tensor = ddp.quantize_per_tensor(ddp.tensor(floats(4, 5)), 0.02, 3, ddp.quint8)
    per_channel = ddp.quantize_per_channel(ddp.tensor(floats(3, 4)),
                                           ddp.tensor([0.1, 0.2, 0.3], dtype=ddp.float64),
                                           ddp.tensor([0, 1, 2]), 0, ddp.qint8)
    buf = io.BytesIO()
    ddp.save({"a": per_tensor, "b": per_channel, "dtype": ddp.qint8}, buf)
    buf.seek(0)
    back = ddp.load(buf)
    for name, q in (("a", per_tensor), ("b", per_channel)):
        np.testing.assert_array_equal(back[name].int_repr().numpy(), q.int_repr().numpy())
        np.testing.assert_array_equal(back[name].dequantize().numpy(), q.dequantize().numpy())
        assert back[name].dtype is q.dtype and back[name].qscheme() is q.qscheme()
    assert back["dtype"] is ddp.qint8


# --------------------------------------------------------------------------- observers

@pytest.mark.parametrize("qscheme,dtype,reduce_range", [
    ("per_tensor_symmetric", "qint8", False), ("per_tensor_affine", "quint8", True),
    ("per_tensor_affine", "qint8", False), ("per_tensor_symmetric", "quint8", False)])
def test_min_max_observer_matches_torch(oracle, qscheme, dtype, reduce_range):
    xs = [floats(50, scale=2, offset=0.3, seed=s) for s in range(3)]

    def reference(torch):
        _silenced(torch)
        obs = torch.ao.quantization.MinMaxObserver(dtype=getattr(torch, dtype),
                                                   qscheme=getattr(torch, qscheme),
                                                   reduce_range=reduce_range)
        for x in xs:
            obs(torch.tensor(x))
        scale, zp = obs.calculate_qparams()
        return {"scale": scale.numpy(), "zp": zp.numpy()}

    ref = oracle(reference)
    obs = MinMaxObserver(dtype=getattr(ddp, dtype), qscheme=getattr(ddp, qscheme),
                         reduce_range=reduce_range)
    for x in xs:
        obs(ddp.tensor(x))
    scale, zp = obs.calculate_qparams()
    np.testing.assert_array_equal(scale.numpy(), ref["scale"])
    np.testing.assert_array_equal(zp.numpy(), ref["zp"])


def test_per_channel_observer_matches_torch(oracle):
    w = floats(5, 7, seed=9)

    def reference(torch):
        _silenced(torch)
        obs = torch.ao.quantization.PerChannelMinMaxObserver(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        obs(torch.tensor(w))
        scale, zp = obs.calculate_qparams()
        return {"scale": scale.numpy(), "zp": zp.numpy()}

    ref = oracle(reference)
    obs = PerChannelMinMaxObserver(dtype=ddp.qint8, qscheme=ddp.per_channel_symmetric)
    obs(ddp.tensor(w))
    scale, zp = obs.calculate_qparams()
    np.testing.assert_array_equal(scale.numpy(), ref["scale"])
    np.testing.assert_array_equal(zp.numpy(), ref["zp"])


# --------------------------------------------------------------------------- quantized Linear

LINEAR_INPUTS = {"2d": floats(9, 48, seed=1), "3d_offset": floats(2, 5, 48, offset=1.5, seed=2),
                 "all_positive": np.abs(floats(4, 48, scale=3, seed=3)),
                 "tiny": floats(3, 48, scale=1e-6, seed=4)}


def _float_linear(k, n, seed):
    return floats(n, k, scale=1 / np.sqrt(k), seed=seed), floats(n, scale=0.1, seed=seed + 1)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_dynamic_linear_matches_torch(oracle, per_channel):
    weight, bias = _float_linear(48, 20, seed=5)

    def reference(torch):
        _silenced(torch)
        lin = torch.nn.Linear(48, 20)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(weight))
            lin.bias.copy_(torch.tensor(bias))
        spec = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig} \
            if per_channel else {torch.nn.Linear}
        q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), spec,
                                                   dtype=torch.qint8)[0]
        w = q.weight()
        out = {"int": w.int_repr().numpy(), "repr": repr(q).replace("torch.", "ddp.")}
        out["scale"] = w.q_per_channel_scales().numpy() if per_channel else np.array(
            w.q_scale())
        out["y"] = {k: q(torch.tensor(x)).numpy() for k, x in LINEAR_INPUTS.items()}
        return out

    ref = oracle(reference)
    lin = nn.Linear(48, 20)
    lin.load_state_dict({"weight": ddp.tensor(weight), "bias": ddp.tensor(bias)})
    spec = {nn.Linear: per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
    q = quantize_dynamic(nn.Sequential(lin), spec, dtype=ddp.qint8)[0]
    w = q.weight()
    np.testing.assert_array_equal(w.int_repr().numpy(), ref["int"])
    scale = w.q_per_channel_scales().numpy() if per_channel else np.array(w.q_scale())
    np.testing.assert_array_equal(scale, ref["scale"])
    assert repr(q) == ref["repr"]
    for key, x in LINEAR_INPUTS.items():
        y = q(ddp.tensor(x)).numpy()
        # the same integer codes: the float32 results agree to a rounding or two
        np.testing.assert_allclose(y, ref["y"][key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_dynamic_linear_uses_float64_accumulation_for_long_rows():
    """K = 3000 inner products overflow float32's exact integers (2**24); the result must
    still be the exact integer product, as FBGEMM's int32 accumulator gives."""
    w = ddp.quantize_per_tensor(ddp.tensor(floats(3, 3000, seed=6)), 0.02, 0, ddp.qint8)
    x = floats(2, 3000, scale=4, seed=7)
    y = nnqd.linear_dynamic(ddp.tensor(x), w).numpy()
    scale, zp = nnqd.linear.choose_qparams(x.min(), x.max())
    qx = np.clip(np.rint((x.astype(np.float64) * np.float64(np.float32(1) / scale) + zp)
                         .astype(np.float32)), 0, 255).astype(np.int64) - zp
    acc = qx @ w.int_repr().numpy().astype(np.int64).T
    np.testing.assert_array_equal(y, acc.astype(np.float32) * (scale * np.float32(0.02)))


# --------------------------------------------------------------------------- quantized RNNs

@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True,
                                         "batch_first": True}], ids=["plain", "stacked"])
def test_dynamic_rnn_matches_torch(oracle, mode, kwargs):
    x = floats(5, 7, 6, seed=8)
    float_cls = getattr(nn, mode)
    ddp.manual_seed(0)
    model = float_cls(6, 8, **kwargs)
    state = {k: v.numpy() for k, v in model.state_dict().items()}

    def reference(torch):
        _silenced(torch)
        m = getattr(torch.nn, mode)(6, 8, **kwargs)
        m.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
        q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(m),
                                                   {getattr(torch.nn, mode)})[0]
        out, hidden = q(torch.tensor(x))
        hidden = hidden if isinstance(hidden, tuple) else (hidden,)
        return {"out": out.detach().numpy(), "hidden": [h.detach().numpy() for h in hidden]}

    ref = oracle(reference)
    q = quantize_dynamic(nn.Sequential(model), {float_cls})[0]
    assert type(q) is getattr(nnqd, mode)
    out, hidden = q(ddp.tensor(x))
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    np.testing.assert_allclose(out.numpy(), ref["out"], rtol=1e-5, atol=1e-6)
    for h, r in zip(hidden, ref["hidden"]):
        np.testing.assert_allclose(h.numpy(), r, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- against float

class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.lstm = nn.LSTM(16, 64, batch_first=True)
        self.head = nn.Linear(256 + 64, 10)

    def forward(self, x):
        features = self.mlp(x)
        _, (h, _) = self.lstm(x.view(x.size(0), 4, 16))
        return self.head(ddp.cat([features, h[0]], dim=1))


def _relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_quantized_model_is_within_two_percent_of_float():
    ddp.manual_seed(0)
    model = Classifier().eval()
    x = ddp.tensor(floats(32, 64, seed=10))
    q = quantize_dynamic(model, {nn.Linear, nn.LSTM}, dtype=ddp.qint8)
    assert type(q.mlp[0]) is nnqd.Linear and type(q.lstm) is nnqd.LSTM
    assert type(model.mlp[0]) is nn.Linear  # a copy: the float model is untouched
    with ddp.no_grad():
        want = model(x).numpy()
    got = q(x).numpy()
    assert _relative_error(got, want) < 0.02
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_state_dict_and_file_are_three_times_smaller():
    ddp.manual_seed(0)
    model = Classifier().eval()
    q = quantize_dynamic(model, {nn.Linear, nn.LSTM})

    def tensor_bytes(obj):
        if isinstance(obj, ddp.Tensor):
            return obj.nbytes
        if isinstance(obj, (tuple, list)):
            return sum(tensor_bytes(o) for o in obj)
        return 0

    float_bytes = sum(tensor_bytes(v) for v in model.state_dict().values())
    quant_bytes = sum(tensor_bytes(v) for v in q.state_dict().values())
    assert float_bytes / quant_bytes >= 3
    files = []
    for m in (model, q):
        buf = io.BytesIO()
        ddp.save(m.state_dict(), buf)
        files.append(len(buf.getvalue()))
    assert files[0] / files[1] >= 3
    # the file loads into a freshly quantized model and gives the same outputs
    buf.seek(0)
    ddp.manual_seed(1)
    other = quantize_dynamic(Classifier().eval(), {nn.Linear, nn.LSTM})
    other.load_state_dict(ddp.load(buf))
    x = ddp.tensor(floats(3, 64, seed=11))
    np.testing.assert_array_equal(other(x).numpy(), q(x).numpy())


# --------------------------------------------------------------------------- quantize_dynamic

def test_quantize_dynamic_choices():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.GRU(4, 4)))
    by_name = quantize_dynamic(model, {"1": per_channel_dynamic_qconfig})
    assert type(by_name[0]) is nn.Linear
    assert by_name[1][0].weight().qscheme() is ddp.per_channel_affine
    assert type(by_name[1][1]) is nnqd.GRU
    default = quantize_dynamic(model)
    assert type(default[0]) is nnqd.Linear and type(default[1][1]) is nnqd.GRU
    same = quantize_dynamic(model, {nn.Linear}, inplace=True)
    assert same is model and type(model[0]) is nnqd.Linear
    from ddp import quantization as legacy_name
    assert legacy_name.quantize_dynamic is quantize_dynamic
    with pytest.raises(ValueError, match="dtype"):
        quantize_dynamic(nn.Linear(2, 2), dtype=ddp.float16)
    with pytest.raises(TypeError, match="from_float only works for nn.Linear"):
        nnqd.Linear.from_float(nn.Conv2d(1, 1, 1))
    with pytest.raises(RuntimeError, match="does not fit"):
        nnqd.Linear(3, 2)(ddp.ones(1, 4))
