"""ddp.onnx.export: every covered module round-trips through onnxruntime at two batch sizes
(the second one unseen at export: dynamic_axes), the file passes onnx.checker (export runs it),
and unsupported operations raise an error naming them."""
import io

import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.nn.functional as F
from ddp.onnx.errors import UnsupportedOperatorError

onnx = pytest.importorskip("onnx")            # both are in the test extra: CI runs these
ort = pytest.importorskip("onnxruntime")


def roundtrip(model, make, batches=(2, 5), axis=0, opset=None, atol=1e-5, rtol=1e-4,
              export_kwargs=None):
    """Export ``model`` on ``make(batches[0])`` with that axis dynamic, then run the file in
    onnxruntime on ``make(b)`` for every batch size and compare with ddp's forward."""
    model.eval()
    example = make(batches[0])
    example = example if isinstance(example, tuple) else (example,)
    names = [f"in{i}" for i in range(len(example))]
    axes = {n: [axis] for n, t in zip(names, example) if t.ndim > axis}
    buf = io.BytesIO()
    program = ddp.onnx.export(model, example, buf, input_names=names, dynamic_axes=axes,
                              opset_version=opset, **(export_kwargs or {}))
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for b in batches:
        inputs = make(b)
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        with ddp.no_grad():
            want = model(*inputs)
        want = [w.numpy() for w in _flat(want)]
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape, (g.shape, w.shape)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return program


def _flat(out):
    if isinstance(out, ddp.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def ops(program):
    return [n.op_type for n in program.model_proto.graph.node]


def randn(*shape, seed=0):
    return ddp.tensor(np.random.default_rng(seed + sum(shape)).standard_normal(shape)
                      .astype(np.float32))


# --------------------------------------------------------------------------- layers

def test_linear_2d_and_3d_inputs():
    ddp.manual_seed(0)
    p = roundtrip(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)),
                  lambda b: randn(b, 6))
    assert ops(p) == ["Gemm", "Relu", "Gemm"]
    p = roundtrip(nn.Linear(6, 4), lambda b: randn(b, 7, 6))
    assert "MatMul" in ops(p)
    roundtrip(nn.Linear(6, 4, bias=False), lambda b: randn(b, 6))


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(padding="same"),
                                    dict(dilation=2, groups=2, bias=False)])
def test_conv2d(kwargs):
    ddp.manual_seed(1)
    p = roundtrip(nn.Conv2d(4, 6, 3, **kwargs), lambda b: randn(b, 4, 9, 8))
    assert ops(p) == ["Conv"]


def test_conv1d():
    ddp.manual_seed(2)
    roundtrip(nn.Sequential(nn.Conv1d(3, 5, 3, stride=2, padding=1), nn.ReLU(),
                            nn.Conv1d(5, 2, 2, dilation=2)), lambda b: randn(b, 3, 11))


@pytest.mark.parametrize("kwargs", [dict(stride=2), dict(stride=2, padding=1, output_padding=1),
                                    dict(stride=3, dilation=2, groups=2)])
def test_conv_transpose2d(kwargs):
    ddp.manual_seed(3)
    p = roundtrip(nn.ConvTranspose2d(4, 6, 3, **kwargs), lambda b: randn(b, 4, 5, 6))
    assert ops(p) == ["ConvTranspose"]


@pytest.mark.parametrize("layer", [
    nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(2, ceil_mode=True),
    nn.MaxPool2d(2, dilation=2), nn.AvgPool2d(2), nn.AvgPool2d(3, 2, padding=1),
    nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), nn.AvgPool2d(2, ceil_mode=True),
    nn.AvgPool2d(2, divisor_override=3), nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((3, 2)),
    nn.AdaptiveAvgPool2d((4, 3))], ids=repr)
def test_pooling_2d(layer):
    roundtrip(layer, lambda b: randn(b, 3, 9, 7))


@pytest.mark.parametrize("layer", [nn.MaxPool1d(2), nn.AvgPool1d(3, 2, padding=1),
                                   nn.AdaptiveAvgPool1d(4)], ids=repr)
def test_pooling_1d(layer):
    roundtrip(layer, lambda b: randn(b, 3, 10))


def _trained(norm, make):
    norm.train()
    for s in range(3):  # non-trivial running statistics
        norm(make(8) * (s + 1) + s)
    with ddp.no_grad():
        for p in norm.parameters():
            p.add_(randn(*p.shape, seed=7) * 0.1)
    return norm


def test_batch_norm_uses_running_statistics():
    p = roundtrip(_trained(nn.BatchNorm2d(3), lambda b: randn(b, 3, 5, 4)),
                  lambda b: randn(b, 3, 5, 4))
    assert ops(p) == ["BatchNormalization"]
    roundtrip(_trained(nn.BatchNorm1d(4), lambda b: randn(b, 4)), lambda b: randn(b, 4))
    roundtrip(_trained(nn.BatchNorm1d(4, affine=False), lambda b: randn(b, 4, 6)),
              lambda b: randn(b, 4, 6))


def test_layer_norm_and_group_norm():
    p = roundtrip(_trained(nn.LayerNorm((5, 6)), lambda b: randn(b, 3, 5, 6)),
                  lambda b: randn(b, 3, 5, 6))
    assert ops(p) == ["LayerNormalization"]
    roundtrip(nn.LayerNorm(6, elementwise_affine=False), lambda b: randn(b, 6))
    roundtrip(_trained(nn.GroupNorm(2, 6), lambda b: randn(b, 6, 4, 3)),
              lambda b: randn(b, 6, 4, 3))
    roundtrip(nn.GroupNorm(3, 6, affine=False), lambda b: randn(b, 6, 5))


def test_instance_norm():   # as group norm with a group per channel; tracked stats in eval
    roundtrip(_trained(nn.InstanceNorm2d(3, affine=True), lambda b: randn(b, 3, 4, 5)),
              lambda b: randn(b, 3, 4, 5))
    roundtrip(_trained(nn.InstanceNorm1d(4, track_running_stats=True), lambda b: randn(b, 4, 6)),
              lambda b: randn(b, 4, 6))


def test_layer_norm_at_opset_17_and_reductions_before_opset_18():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(5)

        def forward(self, x):
            return self.norm(x).mean(-1, keepdim=True) + x.amax(1, keepdim=True)
    roundtrip(Model(), lambda b: randn(b, 5), opset=17)


ACTIVATIONS = [nn.ReLU(), nn.LeakyReLU(0.2), nn.ELU(0.7), nn.SELU(), nn.CELU(1.3),
               nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.Mish(), nn.Softplus(),
               nn.Softplus(beta=2, threshold=1), nn.Sigmoid(), nn.Tanh(), nn.Hardtanh(-0.5, 1.5),
               nn.ReLU6(), nn.Hardsigmoid(), nn.Hardswish(), nn.Softsign(), nn.LogSigmoid(),
               nn.Softmax(dim=1), nn.LogSoftmax(dim=-1), nn.PReLU(), nn.Threshold(0.1, -2.0),
               nn.Tanhshrink(), nn.Softshrink(0.3), nn.Hardshrink(0.4), nn.GLU()]


@pytest.mark.parametrize("layer", ACTIVATIONS, ids=lambda m: type(m).__name__ + repr(m)[-20:])
def test_activations(layer):
    roundtrip(layer, lambda b: randn(b, 6) * 3)


@pytest.mark.parametrize("opset", [17, 20])
def test_gelu_at_both_opsets(opset):
    p = roundtrip(nn.GELU(), lambda b: randn(b, 6) * 3, opset=opset)
    assert ("Gelu" in ops(p)) == (opset >= 20)


def test_dropout_flatten_and_inplace_relu_in_eval():
    ddp.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(inplace=True), nn.Dropout(0.5),
                          nn.Flatten(), nn.Dropout1d(0.3) if hasattr(nn, "Dropout1d")
                          else nn.Identity(), nn.Linear(3 * 4 * 4, 2))
    p = roundtrip(model, lambda b: randn(b, 2, 6, 6))
    assert "Dropout" not in ops(p) and "RandomUniform" not in ops(p)


def test_embedding_with_integer_input():
    ddp.manual_seed(5)

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 4, padding_idx=0)
            self.fc = nn.Linear(4, 3)

        def forward(self, tokens):
            return self.fc(self.emb(tokens).mean(1))

    rng = np.random.default_rng(0)
    p = roundtrip(Bag(), lambda b: ddp.tensor(rng.integers(0, 20, (b, 7))))
    assert "Gather" in ops(p)


# --------------------------------------------------------------------------- recurrent layers

@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("kwargs", [dict(), dict(num_layers=2, bidirectional=True)])
def test_rnn_sequence_first(cls, kwargs):
    ddp.manual_seed(6)
    p = roundtrip(cls(5, 4, **kwargs), lambda b: randn(7, b, 5), axis=1)
    assert cls.__name__ in ops(p)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_rnn_batch_first_with_initial_state(cls):
    ddp.manual_seed(7)
    model = cls(3, 6, num_layers=2, batch_first=True)
    lstm = cls is nn.LSTM

    def make(b):
        x = randn(b, 5, 3)
        h = randn(2, b, 6, seed=1)
        return (x, h, randn(2, b, 6, seed=2)) if lstm else (x, h)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = model

        def forward(self, x, h, c=None):
            return self.rnn(x, (h, c) if lstm else h)

    model.eval()
    example = make(2)
    names = ["x", "h", "c"][:len(example)]
    buf = io.BytesIO()
    ddp.onnx.export(Wrapper(), example, buf, input_names=names,
                    dynamic_axes={"x": [0], "h": [1], "c": [1]} if lstm else {"x": [0], "h": [1]})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for b in (2, 4):
        inputs = make(b)
        with ddp.no_grad():
            want = _flat(Wrapper()(*inputs))
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)


def test_unbatched_lstm_and_relu_rnn():
    ddp.manual_seed(8)
    roundtrip(nn.LSTM(3, 4), lambda b: randn(b, 3))  # (L, H_in): the sequence is dynamic
    roundtrip(nn.RNN(3, 4, nonlinearity="relu"), lambda b: randn(6, b, 3), axis=1)


def test_lstm_classifier_reads_the_last_step():
    ddp.manual_seed(9)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 16, batch_first=True)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    roundtrip(Classifier(), lambda b: randn(b, 8, 8))


def test_projected_lstm_is_refused():
    with pytest.raises(UnsupportedOperatorError, match="LSTM.*proj_size"):
        ddp.onnx.export(nn.LSTM(3, 4, proj_size=2), randn(5, 2, 3), io.BytesIO())


# --------------------------------------------------------------------------- attention

needs_attention = pytest.mark.skipif(not hasattr(nn, "MultiheadAttention"),
                                     reason="attention layers are not in this build")


@needs_attention
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_self_attention_with_weights(batch_first):
    ddp.manual_seed(12)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)

        def forward(self, x):
            return self.attn(x, x, x)            # (output, head-averaged weights)

    roundtrip(SelfAttention(), lambda b: randn(b, 5, 8) if batch_first else randn(5, b, 8),
              axis=0 if batch_first else 1)


@needs_attention
def test_attention_with_a_causal_float_mask_and_sdpa():
    ddp.manual_seed(13)
    mask = ddp.tensor(np.triu(np.full((5, 5), -np.inf, np.float32), 1))

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x, y):
            out = self.attn(x, y, y, attn_mask=mask, need_weights=False)[0]
            q = out.view(x.size(0), 5, 2, 4).transpose(1, 2)
            return F.scaled_dot_product_attention(q, q, q, is_causal=True)

    roundtrip(Masked(), lambda b: (randn(b, 5, 8), randn(b, 5, 8, seed=1)))


@needs_attention
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder(norm_first):
    ddp.manual_seed(14)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True,
                                       norm_first=norm_first)
    p = roundtrip(nn.TransformerEncoder(layer, 2), lambda b: randn(b, 6, 8))
    assert "LayerNormalization" in ops(p)


# --------------------------------------------------------------------------- forward code

class Elementwise(nn.Module):
    """The tensor operations a hand-written forward uses."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.register_buffer("offset", ddp.arange(6.0))

    def forward(self, x, mask):
        y = self.fc(x)
        y = y * 2 - x / 3 + self.offset ** 2
        y = ddp.cat([y, x.abs().sqrt(), x.exp().clamp(max=5)], dim=1)       # (B, 18)
        a, b, c = y.chunk(3, dim=1)
        z = ddp.stack([a, b.tanh(), c.sigmoid()], dim=1)                     # (B, 3, 6)
        z = z.transpose(1, 2).reshape(x.size(0), 3, 2, 3).permute(0, 3, 1, 2)
        z = z.view(x.shape[0], -1)                                           # (B, 18)
        z = z.unsqueeze(1).squeeze(1)
        w = z[:, 1:13:2] + z[:, -6:] - z[:, :1].expand(-1, 6)
        w = w.masked_fill(mask, 0.5)
        w = ddp.where(w > 0.2, w, -w) + (x >= 0).float() + x.max(dim=1, keepdim=True).values
        w += x.mean(dim=1, keepdim=True)                                     # in place
        w = w + x.sum(1, keepdim=True).repeat(1, 6) * (x.argmax(1, keepdim=True) == 2)
        return w.log_softmax(-1), F.normalize(w, dim=1)


def test_elementwise_and_shape_operations():
    ddp.manual_seed(10)
    rng = np.random.default_rng(1)
    p = roundtrip(Elementwise(), lambda b: (randn(b, 6), ddp.tensor(rng.random((b, 6)) < 0.3)))
    assert "Where" in ops(p) and "Concat" in ops(p) and "Slice" in ops(p)


def test_indexing_with_integer_arrays_and_none():
    class Pick(nn.Module):
        def forward(self, x):
            return x[:, ddp.tensor([2, 0, 1])][..., None, 1] * x[None, :, 0].sum()
    roundtrip(Pick(), lambda b: randn(b, 3, 4))


def test_batch_sized_zeros_follow_the_batch():
    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.GRUCell(3, 4)

        def forward(self, x):
            h = x.new_zeros(x.size(0), 4)          # a constant whose shape follows the batch
            for t in range(x.size(1)):
                h = self.cell(x[:, t], h)
            return h
    ddp.manual_seed(11)
    roundtrip(Cell(), lambda b: randn(b, 5, 3))


def test_custom_autograd_function_exports_through_its_forward():
    class Twice(ddp.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2 + 1

        @staticmethod
        def backward(ctx, g):
            return g * 2

    class Model(nn.Module):
        def forward(self, x):
            return Twice.apply(x).relu()
    roundtrip(Model(), lambda b: randn(b, 3))


# --------------------------------------------------------------------------- export's contract

def test_static_shapes_without_dynamic_axes_and_file_output(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    path = tmp_path / "model.onnx"
    program = ddp.onnx.export(model, (randn(2, 4),), str(path))
    loaded = onnx.load(str(path))
    dims = [d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 4]
    assert [i.name for i in loaded.graph.input] == ["input"]      # Sequential.forward(input)
    assert [o.name for o in loaded.graph.output] == ["output"]
    assert sorted(i.name for i in loaded.graph.initializer) == ["0.bias", "0.weight"]
    out = program(randn(2, 4))[0]
    np.testing.assert_allclose(out.numpy(), model(randn(2, 4)).detach().numpy(), rtol=1e-5)


def test_dynamic_axis_names_reach_the_outputs_and_verify_runs():
    program = ddp.onnx.export(nn.Linear(4, 3), (randn(2, 4),), input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}}, verify=True)
    out = program.model_proto.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in out] == ["batch", 3]


def test_export_params_false_makes_weights_inputs():
    program = ddp.onnx.export(nn.Linear(4, 3), (randn(2, 4),), export_params=False)
    graph = program.model_proto.graph
    assert not graph.initializer and sorted(i.name for i in graph.input) == [
        "bias", "input", "weight"]


def test_model_modes_are_restored_and_is_in_onnx_export():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((self.training, ddp.onnx.is_in_onnx_export()))
            return x + 1
    model = Probe().train()
    ddp.onnx.export(model, (randn(2, 3),), io.BytesIO())
    assert seen == [(False, True)] and model.training and not ddp.onnx.is_in_onnx_export()


def test_tracing_leaves_nothing_patched():
    from ddp.autograd import graph
    from ddp.ops import elementwise
    before = (graph.apply, elementwise.compare, ddp.Tensor.__invert__, ddp.Tensor.logical_not)
    lstm = nn.LSTM(3, 4)

    class Fails(nn.Module):
        def forward(self, x):
            return F.unfold(lstm(x)[0].unsqueeze(0), 1)
    with pytest.raises(UnsupportedOperatorError):
        ddp.onnx.export(Fails(), (randn(2, 1, 3),))
    ddp.onnx.export(lstm, (randn(2, 1, 3),))
    assert (graph.apply, elementwise.compare, ddp.Tensor.__invert__,
            ddp.Tensor.logical_not) == before
    assert "forward" not in lstm.__dict__


# --------------------------------------------------------------------------- errors

def test_unsupported_operation_is_named():
    class Fold(nn.Module):
        def forward(self, x):
            return F.unfold(x, 2)
    with pytest.raises(UnsupportedOperatorError, match="'Im2Col' to ONNX opset version 20"):
        ddp.onnx.export(Fold(), (randn(1, 2, 4, 4),))


def test_loss_in_forward_is_refused_with_advice():
    class WithLoss(nn.Module):
        def forward(self, x, y):
            return F.cross_entropy(x, y)
    with pytest.raises(UnsupportedOperatorError, match="CrossEntropy.*export the model alone"):
        ddp.onnx.export(WithLoss(), (randn(3, 4), ddp.tensor([0, 1, 2])))


def test_boolean_mask_indexing_is_refused():
    class Masked(nn.Module):
        def forward(self, x):
            return x[x > 0]
    with pytest.raises(UnsupportedOperatorError, match="boolean mask"):
        ddp.onnx.export(Masked(), (randn(3, 4),))


def test_value_computed_from_a_dynamic_axis_outside_ops_is_refused():
    class Positions(nn.Module):
        def forward(self, x):
            return x + ddp.arange(x.size(0) * 1.0).unsqueeze(1)
    with pytest.raises(UnsupportedOperatorError, match="dynamic axis"):
        ddp.onnx.export(Positions(), (randn(3, 4),), dynamic_axes={"x": [0]})
    ddp.onnx.export(Positions(), (randn(3, 4),))  # fine with static shapes


def test_shape_dependent_control_flow_is_refused_with_dynamic_axes():
    class Branch(nn.Module):
        def forward(self, x):
            return x.relu() if x.size(0) % 2 else x.tanh()
    with pytest.raises(ddp.onnx.OnnxExporterError, match="different operations"):
        ddp.onnx.export(Branch(), (randn(3, 4),), dynamic_axes={"x": [0]})


def test_bad_opset_and_training_mode():
    with pytest.raises(ValueError, match="opset_version"):
        ddp.onnx.export(nn.Linear(2, 2), (randn(1, 2),), opset_version=9)
    with pytest.raises(ddp.onnx.OnnxExporterError, match="training mode"):
        ddp.onnx.export(nn.Linear(2, 2), (randn(1, 2),), training=ddp.onnx.TrainingMode.TRAINING)


def test_outputs_computed_outside_traced_ops_are_refused():
    class Detour(nn.Module):
        def forward(self, x):
            return ddp.tensor(np.tanh(x.detach().numpy())) * 2    # through NumPy: invisible to tracing
    with pytest.raises(ddp.onnx.OnnxExporterError, match="does not depend on the inputs"):
        ddp.onnx.export(Detour(), (randn(2, 3),))


def test_quantized_layers_are_refused():
    q = ddp.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    with pytest.raises(UnsupportedOperatorError, match="DynamicQuantized|Linear.*float model"):
        ddp.onnx.export(q, (randn(2, 3),))
