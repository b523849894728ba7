"""Transformers: ``nn.TransformerEncoderLayer``/``TransformerEncoder``,
``nn.TransformerDecoderLayer``/``TransformerDecoder`` and ``nn.Transformer``.

Against PyTorch 2.13's recorded answers (the ``oracle`` fixture): the same weights through
state_dict, the same inputs; outputs and the gradients of inputs and of every parameter agree to
float32 rounding, for norm_first, activations (by name, a function, a module), batch_first,
bias, masks (float, bool, causal, padding) and unbatched input; state_dict keys and reprs are
identical. Dropout is off (``dropout=0.0`` in training mode, or ``eval()``) where numbers are
compared, since the random streams differ; its train/eval behaviour is tested on its own.
"""
import copy
import math
import warnings

import numpy as np
import pytest

import ddp
import ddp.nn as nn
from ddp.autograd import gradcheck

from tests.nn.test_attention import check_module, rand

D, HEADS, FF = 8, 2, 16   # d_model, heads, dim_feedforward
S, T, N = 5, 4, 3          # source length, target length, batch


def seq(rng, length, batch_first, batched=True):
    if not batched:
        return rand(rng, length, D)
    return rand(rng, N, length, D) if batch_first else rand(rng, length, N, D)


def causal(n):
    return np.triu(np.full((n, n), -np.inf, np.float32), 1)


def activation(lib, name):
    """The activation argument named ``name`` for ``lib`` (torch or ddp)."""
    return {"relu": "relu", "gelu": "gelu", "fn_gelu": lib.nn.functional.gelu,
            "fn_silu": lib.nn.functional.silu, "module_gelu": lib.nn.GELU(),
            "module_tanh": lib.nn.Tanh()}[name]


def quiet(fn):
    """Run ``fn`` without deprecation warnings about mixed mask types (tested on their own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


# --------------------------------------------------------------------------- encoder layer

ENC_LAYER_CASES = [
    # (norm_first, activation, batch_first, bias)
    (False, "relu", False, True), (True, "relu", False, True), (False, "gelu", True, True),
    (True, "gelu", True, False), (False, "fn_silu", False, True), (True, "module_gelu", True, True),
    (False, "module_tanh", True, False), (False, "fn_gelu", False, True),
]


@pytest.mark.parametrize("masks", ["none", "float_causal", "bool_padding", "both"])
@pytest.mark.parametrize("case", ENC_LAYER_CASES, ids=["-".join(map(str, c)) for c in ENC_LAYER_CASES])
def test_encoder_layer_matches_torch(oracle, case, masks):
    norm_first, act, batch_first, bias = case
    rng = np.random.default_rng(ENC_LAYER_CASES.index(case))
    inputs = {"src": seq(rng, S, batch_first)}
    if masks in ("float_causal", "both"):
        inputs["mask"] = causal(S)
    if masks in ("bool_padding", "both"):
        kpm = rng.random((N, S)) < 0.3
        kpm[:, 0] = False
        inputs["kpm"] = kpm if masks == "bool_padding" else np.where(kpm, -np.inf, 0).astype(np.float32)

    def make(lib):
        return lib.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0,
                                              activation=activation(lib, act),
                                              batch_first=batch_first, norm_first=norm_first,
                                              bias=bias, layer_norm_eps=1e-6)

    def call(m, t):
        return m(t["src"], src_mask=t.get("mask"), src_key_padding_mask=t.get("kpm"))

    check_module(oracle, make, inputs, call)


@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_layer_is_causal_and_eval_match_torch(oracle, batch_first):
    rng = np.random.default_rng(40)
    inputs = {"src": seq(rng, S, batch_first), "mask": causal(S)}

    def make(lib):
        return lib.nn.TransformerEncoderLayer(D, HEADS, FF, batch_first=batch_first).eval()

    def call(m, t):
        return m(t["src"], src_mask=t["mask"], is_causal=True)

    check_module(oracle, make, inputs, call)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_unbatched_matches_torch(oracle, norm_first):
    rng = np.random.default_rng(41)
    inputs = {"src": seq(rng, S, False, batched=False), "kpm": np.array([0, 0, 1, 0, 1], bool)}

    def make(lib):
        return lib.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, norm_first=norm_first,
                                              batch_first=True)

    check_module(oracle, make, inputs, lambda m, t: m(t["src"], src_key_padding_mask=t["kpm"]))


# --------------------------------------------------------------------------- encoder

@pytest.mark.parametrize("is_causal", [None, True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_norm", [False, True])
def test_encoder_matches_torch(oracle, with_norm, batch_first, is_causal):
    rng = np.random.default_rng(42)
    inputs = {"src": seq(rng, S, batch_first), "mask": causal(S),
              "kpm": np.where(rng.random((N, S)) < 0.3, -np.inf, 0).astype(np.float32)}
    inputs["kpm"][:, 0] = 0

    def make(lib):
        layer = lib.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=batch_first)
        norm = lib.nn.LayerNorm(D) if with_norm else None
        return quiet(lambda: lib.nn.TransformerEncoder(layer, 2, norm=norm))

    def call(m, t):
        return m(t["src"], mask=t["mask"], src_key_padding_mask=t["kpm"], is_causal=is_causal)

    check_module(oracle, make, inputs, call)


def test_encoder_detects_the_causal_mask():
    from ddp.nn.transformer import _detect_is_causal_mask
    mask = nn.Transformer.generate_square_subsequent_mask(4)
    assert _detect_is_causal_mask(mask) is True
    assert _detect_is_causal_mask(mask, size=4) is True
    assert _detect_is_causal_mask(mask, size=3) is False
    assert _detect_is_causal_mask(ddp.zeros(4, 4)) is False
    assert _detect_is_causal_mask(ddp.zeros(4, 4), is_causal=True) is True
    assert _detect_is_causal_mask(mask, is_causal=False) is False
    assert _detect_is_causal_mask(None) is False


def test_encoder_layers_are_deep_copies():
    layer = nn.TransformerEncoderLayer(D, HEADS, FF)
    enc = nn.TransformerEncoder(layer, 3)
    assert all(mod is not layer for mod in enc.layers)
    ws = [mod.self_attn.in_proj_weight for mod in enc.layers]
    assert ws[0] is not ws[1] and ws[0]._data is not ws[1]._data
    np.testing.assert_array_equal(ws[0].detach().numpy(), ws[2].detach().numpy())
    with ddp.no_grad():
        ws[0].add_(1.0)
    assert not np.array_equal(ws[0].detach().numpy(), ws[1].detach().numpy())
    assert len(list(enc.parameters())) == 3 * len(list(layer.parameters()))
    assert enc.num_layers == 3 and enc.enable_nested_tensor and enc.mask_check
    assert copy.deepcopy(enc).layers[0].activation is enc.layers[0].activation


# --------------------------------------------------------------------------- decoder

DEC_LAYER_CASES = [(False, "relu", False, True), (True, "gelu", True, True),
                   (False, "fn_gelu", True, False), (True, "module_tanh", False, True)]


@pytest.mark.parametrize("masks", ["none", "all"])
@pytest.mark.parametrize("case", DEC_LAYER_CASES, ids=["-".join(map(str, c)) for c in DEC_LAYER_CASES])
def test_decoder_layer_matches_torch(oracle, case, masks):
    norm_first, act, batch_first, bias = case
    rng = np.random.default_rng(50 + DEC_LAYER_CASES.index(case))
    inputs = {"tgt": seq(rng, T, batch_first), "memory": seq(rng, S, batch_first)}
    if masks == "all":
        kpm = rng.random((N, T)) < 0.3
        kpm[:, 0] = False
        mkpm = rng.random((N, S)) < 0.3
        mkpm[:, 0] = False
        inputs.update(tgt_mask=causal(T), memory_mask=rand(rng, T, S), tgt_kpm=kpm,
                      memory_kpm=mkpm)

    def make(lib):
        return lib.nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0,
                                              activation=activation(lib, act),
                                              batch_first=batch_first, norm_first=norm_first,
                                              bias=bias)

    def call(m, t):
        return quiet(lambda: m(t["tgt"], t["memory"], tgt_mask=t.get("tgt_mask"),
                               memory_mask=t.get("memory_mask"),
                               tgt_key_padding_mask=t.get("tgt_kpm"),
                               memory_key_padding_mask=t.get("memory_kpm")))

    check_module(oracle, make, inputs, call)


@pytest.mark.parametrize("tgt_is_causal", [None, True])
@pytest.mark.parametrize("with_norm", [False, True])
def test_decoder_matches_torch(oracle, with_norm, tgt_is_causal):
    rng = np.random.default_rng(60)
    inputs = {"tgt": seq(rng, T, False), "memory": seq(rng, S, False), "tgt_mask": causal(T)}

    def make(lib):
        layer = lib.nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0)
        return lib.nn.TransformerDecoder(layer, 2, norm=lib.nn.LayerNorm(D) if with_norm else None)

    def call(m, t):
        return m(t["tgt"], t["memory"], tgt_mask=t["tgt_mask"], tgt_is_causal=tgt_is_causal)

    check_module(oracle, make, inputs, call)


def test_decoder_unbatched_matches_torch(oracle):
    rng = np.random.default_rng(61)
    inputs = {"tgt": seq(rng, T, False, batched=False), "memory": seq(rng, S, False, batched=False)}

    def make(lib):
        return lib.nn.TransformerDecoder(lib.nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0),
                                         1)

    check_module(oracle, make, inputs, lambda m, t: m(t["tgt"], t["memory"]))


# --------------------------------------------------------------------------- Transformer

@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_matches_torch(oracle, batch_first, norm_first):
    rng = np.random.default_rng(70)
    inputs = {"src": seq(rng, S, batch_first), "tgt": seq(rng, T, batch_first),
              "tgt_mask": causal(T), "src_kpm": np.zeros((N, S), bool)}
    inputs["src_kpm"][1, 3:] = True

    def make(lib):
        return quiet(lambda: lib.nn.Transformer(D, HEADS, 2, 1, FF, dropout=0.0,
                                                batch_first=batch_first, norm_first=norm_first))

    def call(m, t):
        return m(t["src"], t["tgt"], tgt_mask=t["tgt_mask"], src_key_padding_mask=t["src_kpm"],
                 memory_key_padding_mask=t["src_kpm"])

    check_module(oracle, make, inputs, call)


def test_transformer_default_sizes_state_dict_and_repr(oracle):
    def answer(torch):
        m = quiet(lambda: torch.nn.Transformer())
        return {"keys": "\n".join(m.state_dict()), "repr": repr(m),
                "shapes": [list(v.shape) for v in m.state_dict().values()],
                "d_model": m.d_model, "nhead": m.nhead}

    ref = oracle(answer)
    m = nn.Transformer()
    assert "\n".join(m.state_dict()) == ref["keys"]
    assert repr(m) == ref["repr"]
    assert [list(v.shape) for v in m.state_dict().values()] == [list(s) for s in ref["shapes"]]
    assert (m.d_model, m.nhead, m.batch_first) == (512, 8, False)


def test_transformer_reset_parameters_is_xavier_on_matrices():
    ddp.manual_seed(0)
    m = nn.Transformer(16, 2, 1, 1, 32)
    for name, p in m.named_parameters():
        a = p.detach().numpy()
        if p.dim() > 1:
            fan_out, fan_in = a.shape
            assert np.abs(a).max() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-7, name
        elif "norm" in name and name.endswith("weight"):
            assert (a == 1).all(), name
        elif name.endswith("in_proj_bias") or name.endswith("out_proj.bias") or "norm" in name:
            assert not a.any(), name


def test_transformer_custom_encoder_and_decoder():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, HEADS, FF), 1)
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, HEADS, FF), 1)
    m = nn.Transformer(D, HEADS, custom_encoder=enc, custom_decoder=dec)
    assert m.encoder is enc and m.decoder is dec
    assert m(ddp.randn(S, N, D), ddp.randn(T, N, D)).shape == (T, N, D)


def test_generate_square_subsequent_mask(oracle):
    def answer(torch):
        T_ = torch.nn.Transformer
        return {"m3": T_.generate_square_subsequent_mask(3).numpy(),
                "m1": T_.generate_square_subsequent_mask(1).numpy(),
                "f64": T_.generate_square_subsequent_mask(4, dtype=torch.float64).numpy(),
                "legacy": torch.nn.modules.transformer._generate_square_subsequent_mask(2).numpy()}

    ref = oracle(answer)
    G = nn.Transformer.generate_square_subsequent_mask
    np.testing.assert_array_equal(G(3).numpy(), ref["m3"])
    np.testing.assert_array_equal(G(1).numpy(), ref["m1"])
    assert G(4, dtype=ddp.float64).dtype == ddp.float64
    np.testing.assert_array_equal(G(4, dtype=ddp.float64).numpy(), ref["f64"])
    from ddp.nn.transformer import _generate_square_subsequent_mask
    np.testing.assert_array_equal(_generate_square_subsequent_mask(2).numpy(), ref["legacy"])
    # the static method also works on an instance, as older code calls it
    inst = nn.Transformer(D, HEADS, 1, 1, FF)
    np.testing.assert_array_equal(inst.generate_square_subsequent_mask(3).numpy(), ref["m3"])
    assert G(3, device="cpu").device == ddp.device("cpu")


def test_word_language_model_style_subclass():
    """pytorch/examples' word_language_model subclasses nn.Transformer, replaces its decoder with
    a Linear and masks with log(tril(ones)) — which must be detected as the causal mask."""
    class TransformerModel(nn.Transformer):
        def __init__(self, ntoken, ninp, nhead, nhid, nlayers):
            super().__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid,
                             num_encoder_layers=nlayers)
            self.input_emb = nn.Embedding(ntoken, ninp)
            self.decoder = nn.Linear(ninp, ntoken)

        def forward(self, src):
            mask = ddp.log(ddp.tensor(np.tril(np.ones((len(src), len(src)), np.float32))))
            out = self.encoder(self.input_emb(src) * math.sqrt(16), mask=mask)
            return nn.functional.log_softmax(self.decoder(out), dim=-1)

    ddp.manual_seed(0)
    model = TransformerModel(20, 16, 2, 32, 2)
    src = ddp.tensor(np.random.default_rng(0).integers(0, 20, (7, 3)))
    opt = ddp.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        out = model(src)
        loss = nn.functional.nll_loss(out[:-1].reshape(-1, 20), src[1:].reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --------------------------------------------------------------------------- dropout, errors

def test_dropout_train_and_eval():
    ddp.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.5)
    x = ddp.randn(S, N, D)
    a, b = layer(x), layer(x)
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())  # fresh masks each call
    layer.eval()
    np.testing.assert_array_equal(layer(x).detach().numpy(), layer(x).detach().numpy())
    no_drop = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0)
    no_drop.load_state_dict(layer.state_dict())
    np.testing.assert_allclose(layer(x).detach().numpy(), no_drop(x).detach().numpy(), rtol=1e-6)


def test_encoder_layer_gradcheck_float64():
    ddp.manual_seed(0)
    layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, dtype=ddp.float64, norm_first=True,
                                       activation="gelu")
    x = ddp.tensor(np.random.default_rng(3).standard_normal((3, 2, 4)), requires_grad=True)
    mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=ddp.float64)
    assert gradcheck(lambda t: layer(t, src_mask=mask), (x,))


def test_bad_input():
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        nn.TransformerEncoderLayer(D, HEADS, activation="tanh")
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not swish"):
        nn.TransformerDecoderLayer(D, HEADS, activation="swish")
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        nn.TransformerEncoderLayer(10, 3)
    m = nn.Transformer(D, HEADS, 1, 1, FF)
    with pytest.raises(RuntimeError, match="the batch number of src and tgt must be equal"):
        m(ddp.randn(S, 2, D), ddp.randn(T, 3, D))
    with pytest.raises(RuntimeError, match="the feature number of src and tgt must be equal to "
                                           "d_model"):
        m(ddp.randn(S, N, D), ddp.randn(T, N, D + 1))
    layer = nn.TransformerEncoderLayer(D, HEADS, FF)
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        layer(ddp.randn(S, N, D), is_causal=True)
    with pytest.raises(RuntimeError, match=r"The shape of the 2D attn_mask is .*\[4, 4\].*, but "
                                           r"should be \(5, 5\)"):
        layer(ddp.randn(S, N, D), src_mask=ddp.zeros(4, 4))
    with pytest.raises(AssertionError, match="only bool and floating types of src_key_padding_mask"):
        layer(ddp.randn(S, N, D), src_key_padding_mask=ddp.zeros(N, S, dtype=ddp.int64))
    with pytest.warns(UserWarning, match="Support for mismatched src_key_padding_mask and "
                                         "src_mask is deprecated"):
        layer(ddp.randn(S, N, D), src_mask=ddp.zeros(S, S),
              src_key_padding_mask=ddp.zeros(N, S, dtype=ddp.bool))


def test_signatures_match_torch(oracle):
    from tests.nn.test_attention import signature_of
    names = {"Transformer": ["__init__", "forward", "generate_square_subsequent_mask"],
             "TransformerEncoder": ["__init__", "forward"],
             "TransformerDecoder": ["__init__", "forward"],
             "TransformerEncoderLayer": ["__init__", "forward"],
             "TransformerDecoderLayer": ["__init__", "forward"]}

    def answer(torch):
        return {f"{c}.{m}": signature_of(getattr(getattr(torch.nn, c), m))
                for c, ms in names.items() for m in ms}

    ref = oracle(answer)
    for key, want in ref.items():
        cls, method = key.split(".")
        assert signature_of(getattr(getattr(nn, cls), method)) == [list(p) for p in want], key
