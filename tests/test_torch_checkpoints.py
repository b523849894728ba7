"""PyTorch's checkpoint files both ways: ddp.load reads torch.save files (zip and legacy) with
weights_only semantics and never runs code from them; ddp.save(..., format="torch") writes files
torch.load reads; whole objects are pickled as torch.save does. PyTorch's side is recorded
(tests/oracle_data), its files are committed (tests/data/torch, made by make_files.py there)."""
import io
import os
import pathlib
import pickle
import struct
import tracemalloc
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import ddp
from ddp import serialization
from tests.checkpoint_samples import RESNET_WIDTH, describe, resnet18, sample_checkpoint

DATA = pathlib.Path(__file__).parent / "data" / "torch"


def assert_same(ours, ref, where="obj"):
    """``describe`` trees equal: keys, strings, array dtypes, shapes and values (exactly)."""
    if isinstance(ref, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(ref), \
            f"{where}: keys {sorted(ours)} != {sorted(ref)}"
        for k in ref:
            assert_same(ours[k], ref[k], f"{where}/{k}")
    elif isinstance(ref, str) or ref is None:
        assert ours == ref, f"{where}: {ours!r} != {ref!r}"
    else:
        ours, ref = np.asarray(ours), np.asarray(ref)
        assert ours.dtype == ref.dtype and ours.shape == ref.shape, \
            f"{where}: {ours.dtype}{ours.shape} != {ref.dtype}{ref.shape}"
        np.testing.assert_array_equal(ours, ref, err_msg=where)


def _mutate_base(obj):
    """Write through one view: the others see it only if the storage is shared."""
    obj["base"][1, 2] = -100.0
    return obj


# --------------------------------------------------------------------------- reading torch's files

@pytest.mark.parametrize("name", ["sample.pt", "sample_legacy.pt"])
def test_reads_torch_save_files_as_torch_does(oracle, name):
    """Every dtype, views of one storage (shared again after loading), transposed and strided
    tensors, Parameters, a state_dict's _metadata, plain values: what torch.load gives."""
    path = DATA / name

    def reference(torch):
        return describe(_mutate_base(torch.load(path)))   # weights_only=True, torch's default

    ref = oracle(reference)
    for source in (path, io.BytesIO(path.read_bytes()), str(path)):
        assert_same(describe(_mutate_base(ddp.load(source))), ref)
    out = ddp.load(path)
    assert type(out["model"]) is OrderedDict and isinstance(out["param"], ddp.nn.Parameter)
    assert out["leaf"].requires_grad and out["leaf"].is_leaf
    assert out["torch_values"]["dtype"] is ddp.float16
    assert serialization.verify(path) is True


def test_reads_torch_files_from_streams_without_seek(oracle):
    path = DATA / "sample_legacy.pt"

    class Pipe:
        def __init__(self, data):
            self._buf = io.BytesIO(data)

        def read(self, n=-1):
            return self._buf.read(n if n is None or n < 0 else min(n, 7))

        def readline(self):
            return self._buf.readline()

    ref = oracle(lambda torch: describe(torch.load(path)))
    for p in (path, DATA / "sample.pt"):
        assert_same(describe(ddp.load(Pipe(p.read_bytes()))), ref)


def test_map_location_applies_to_torch_files():
    seen = []
    for name in ("sample.pt", "sample_legacy.pt"):
        out = ddp.load(DATA / name, map_location=lambda s, loc: seen.append(loc) or s * 0)
        assert out["base"].tolist() == [[0.0] * 6] * 4 and seen[-1] == "cpu"
        out["base"][0, 0] = 5.0        # the callable's storage is still shared by the views
        assert out["transposed"][0, 0].item() == 5.0
        assert ddp.load(DATA / name, map_location="cpu")["row"].tolist() == \
            [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]


def test_a_whole_torch_module_loads_only_when_opted_in(oracle):
    path = DATA / "linear_module.pt"

    def reference(torch):
        m = torch.load(path, weights_only=False)
        x = torch.ones(1, 2)
        try:
            torch.load(path)
            message = ""
        except pickle.UnpicklingError as exc:
            message = str(exc)
        return {"y": m(x).detach().numpy(), "refused": "Unsupported global: GLOBAL "
                "torch.nn.modules.linear.Linear was not an allowed global" in message}

    ref = oracle(reference)
    assert bool(ref["refused"])
    with pytest.raises(pickle.UnpicklingError,
                       match=r"(?s)Weights only load failed.*weights_only.*False.*Unsupported "
                             r"global: GLOBAL torch.nn.modules.linear.Linear was not an allowed "
                             r"global by default"):
        ddp.load(path)
    m = ddp.load(path, weights_only=False)          # import ddp as torch: torch.nn.Linear is ours
    assert type(m) is ddp.nn.Linear
    np.testing.assert_allclose(m(ddp.ones(1, 2)).detach().numpy(), ref["y"], rtol=1e-6)


# --------------------------------------------------------------------------- torch reads ddp's files

def _ddp_written(obj, **kwargs):
    buf = io.BytesIO()
    ddp.save(obj, buf, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_load_reads_what_ddp_writes(oracle, legacy):
    """torch.load (default weights_only=True) reads ddp.save(..., format="torch") files: the
    same values, dtypes, strides, Parameters, and views that share one storage again."""
    raw = _ddp_written(sample_checkpoint(ddp), format="torch",
                       _use_new_zipfile_serialization=not legacy)
    ref = oracle(lambda torch: describe(_mutate_base(torch.load(io.BytesIO(raw)))))
    assert_same(describe(_mutate_base(ddp.load(io.BytesIO(raw)))), ref)
    assert ref["str:row"]["values"][2] == -100.0           # torch sees the write through base
    assert ref["str:transposed"]["values"][2, 1] == -100.0
    assert list(ref["str:transposed"]["stride"]) == [1, 6]


def test_torch_format_is_aligned_and_named_like_torch_save(tmp_path):
    path = tmp_path / "resnet18-abc123.pth"
    ddp.save({"w": ddp.ones(3), "b": ddp.zeros(2, dtype=ddp.int64)}, path, format="torch")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[0] == "resnet18-abc123/data.pkl"
        assert zf.read("resnet18-abc123/byteorder") == b"little"
        assert zf.read("resnet18-abc123/version") == b"3\n"
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            if "/data/" in info.filename:   # storages start 64-byte aligned (torch.load(mmap=True))
                start = info.header_offset + 30 + len(info.filename) + len(info.extra)
                assert start % 64 == 0
    assert ddp.load(path)["w"].tolist() == [1.0, 1.0, 1.0]
    assert serialization.verify(path) is True


def test_shared_storages_and_strides_round_trip_through_the_torch_format():
    base = ddp.arange(24, dtype=ddp.float32).reshape(2, 3, 4)
    obj = {"base": base, "perm": base.permute(2, 0, 1), "slice": base[1, :, 1:3],
           "flip": ddp.flip(base, [0]),     # negative strides: torch has none, so a copy
           "cols": base.reshape(6, 4)[:, ::2], "other": ddp.ones(3)}
    for legacy in (False, True):
        out = ddp.load(io.BytesIO(_ddp_written(obj, format="torch",
                                               _use_new_zipfile_serialization=not legacy)))
        for k, t in obj.items():
            np.testing.assert_array_equal(out[k].numpy(), t.numpy(), err_msg=k)
        out["base"][1, 2, 2] = -1.0
        assert out["perm"][2, 1, 2].item() == -1.0 and out["slice"][2, 1].item() == -1.0
        out["base"][1, 0, 2] = -2.0
        assert out["slice"][0, 1].item() == -2.0 and out["cols"][3, 1].item() == -2.0
        assert out["other"].tolist() == [1.0, 1.0, 1.0]


# --------------------------------------------------------------------------- whole objects

def test_whole_model_and_optimizer_round_trip_only_when_opted_in(tmp_path):
    ddp.manual_seed(0)
    model = ddp.nn.Sequential(ddp.nn.Linear(3, 4), ddp.nn.BatchNorm1d(4), ddp.nn.ReLU(),
                              ddp.nn.Linear(4, 1))
    opt = ddp.optim.Adam(model.parameters(), lr=1e-2)
    x, y = ddp.randn(8, 3), ddp.randn(8, 1)

    def step(m, o):
        o.zero_grad()
        loss = ddp.nn.functional.mse_loss(m(x), y)
        loss.backward()
        o.step()
        return loss.item()

    step(model, opt)
    path = tmp_path / "whole.pt"
    ddp.save({"model": model, "optimizer": opt, "epoch": 1}, path)   # as torch.save(model)
    assert serialization.detect_format(path) == "zip"
    with pytest.raises(pickle.UnpicklingError,
                       match=r"(?s)Weights only load failed.*GLOBAL ddp\.nn\.container\.Sequential"
                             r" was not an allowed global"):
        ddp.load(path)
    out = ddp.load(path, weights_only=False)
    m2, o2 = out["model"], out["optimizer"]
    assert type(m2) is ddp.nn.Sequential and out["epoch"] == 1
    assert o2.param_groups[0]["params"][0] is m2[0].weight      # one object, as pickled
    for _ in range(3):                                           # training continues identically
        assert step(m2, o2) == step(model, opt)
    for a, b in zip(m2.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    m = ddp.nn.Linear(2, 2)
    ddp.save(m, path)
    assert type(ddp.load(path, weights_only=False)) is ddp.nn.Linear


def test_safe_globals_let_weights_only_build_a_trusted_class(tmp_path):
    path = tmp_path / "cfg.pt"
    ddp.save({"cfg": _Config(3), "w": ddp.ones(1)}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"add_safe_globals\(\[tests\."):
        ddp.load(path)
    with serialization.safe_globals([_Config]):
        out = ddp.load(path)
    assert type(out["cfg"]) is _Config and out["cfg"].depth == 3
    with pytest.raises(pickle.UnpicklingError):
        ddp.load(path)
    with pytest.raises(TypeError, match="add_safe_globals"):
        serialization.add_safe_globals([(_Config, 1)])


class _Config:
    def __init__(self, depth):
        self.depth = depth


# --------------------------------------------------------------------------- transfer learning

def test_transfer_learning_from_a_torchvision_resnet18_file(oracle):
    """A torchvision-layout resnet18 weights file (written by torch.save, 4 channels wide instead
    of 64) loads strictly into a ddp twin, which then computes PyTorch's outputs and gradients."""
    path = DATA / "resnet18-tiny.pth"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    target = np.array([0, 2, 1, 2])
    head_w = rng.standard_normal((3, 8 * RESNET_WIDTH)).astype(np.float32) * 0.1
    head_b = np.zeros(3, np.float32)

    def run(torch, state):
        model = resnet18(torch)
        missing = model.load_state_dict(state, strict=True)
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor(x)).numpy()
        model.fc = torch.nn.Linear(8 * RESNET_WIDTH, 3)        # a new head for 3 classes
        with torch.no_grad():
            model.fc.weight.copy_(torch.tensor(head_w))
            model.fc.bias.copy_(torch.tensor(head_b))
        model.train()
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(target))
        loss.backward()
        return {"keys": "\n".join(state), "missing": repr(list(missing.missing_keys)),
                "logits": logits, "loss": np.float32(loss.item()),
                "grad_fc": model.fc.weight.grad.numpy(),
                "grad_conv1": model.conv1.weight.grad.numpy(),
                "grad_layer4": model.layer4[1].conv2.weight.grad.numpy()[:4],
                "running_mean": model.bn1.running_mean.numpy()}

    ref = oracle(lambda torch: run(torch, torch.load(path)))
    state = ddp.load(path)
    keys = ref["keys"].split("\n")
    assert len(keys) == 122                                     # torchvision's resnet18 has 122
    assert "layer2.0.downsample.0.weight" in keys and "fc.bias" in keys
    ours = run(ddp, state)
    assert ours["keys"] == ref["keys"] and ours["missing"] == ref["missing"] == "[]"
    np.testing.assert_allclose(ours["logits"], ref["logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["loss"], ref["loss"], rtol=1e-5)
    for k in ("grad_fc", "grad_conv1", "grad_layer4", "running_mean"):
        # float32 rounding through 20 layers and train-mode batch norms over 4 images: compare
        # to 1e-4 of the largest entry (a wrong weight or key moves these by order 1)
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-3, atol=1e-4 * np.abs(ref[k]).max(),
                                   err_msg=k)


# --------------------------------------------------------------------------- never run code

class _Evil:
    def __init__(self, marker, target=os.system):
        self.marker, self.target = marker, target

    def __reduce__(self):
        return (self.target, (f"touch {self.marker}",))


class _EvilState:
    """Unpickling calls __setstate__ (BUILD) of this class: refused before it exists."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state["marker"], "w").close()


def _g(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def _s(text):
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n):
    if -2 ** 31 <= n < 2 ** 31:
        return b"J" + struct.pack("<i", n)      # BININT
    raw = pickle.encode_long(n)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _ints(values):
    return b"(" + b"".join(_i(v) for v in values) + b"t"


def _pid(key, numel, storage="FloatStorage", legacy=False):
    return (b"(" + _s("storage") + _g("torch", storage) + _s(key) + _s("cpu") + _i(numel) +
            (b"N" if legacy else b"") + b"tQ")


def _tensor(key, numel, size, stride, offset=0, legacy=False):
    return (_g("torch._utils", "_rebuild_tensor_v2") + b"(" + _pid(key, numel, legacy=legacy) +
            _i(offset) + _ints(size) + _ints(stride) + b"\x89}tR")


def _zip(data_pkl, storages=None, prefix="archive"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", data_pkl)
        zf.writestr(f"{prefix}/byteorder", b"little")
        for key, data in (storages or {}).items():
            zf.writestr(f"{prefix}/data/{key}", data)
        zf.writestr(f"{prefix}/version", b"3\n")
    return buf.getvalue()


def _legacy(main_pkl, storages=None, keys=None):
    out = b"".join(pickle.dumps(v, protocol=2) for v in (
        0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True}))
    storages = storages or {}
    out += main_pkl + pickle.dumps(list(storages) if keys is None else keys, protocol=2)
    for data, numel in storages.values():
        out += struct.pack("<q", numel) + data
    return out


def _both(main_pkl, zip_storages=None):
    """The same pickle in a zip and a legacy container (storages as {key: bytes})."""
    zip_storages = zip_storages or {}
    return [_zip(main_pkl, zip_storages),
            _legacy(main_pkl.replace(b"tQ", b"NtQ"),
                    {k: (v, len(v) // 4) for k, v in zip_storages.items()})]


def _malicious(marker):
    """(name, data.pkl bytes) that would run ``touch marker`` or change ddp if unpickled."""
    m = str(marker)
    evil_reduce = pickle.dumps({"w": _Evil(marker)}, protocol=2)
    nested = pickle.dumps({"model": OrderedDict(w=[1, (2, {"deep": [_Evil(marker)]})])},
                          protocol=2)
    yield "reduce-os.system", evil_reduce
    yield "nested-in-containers", nested
    yield "protocol-4", pickle.dumps([_Evil(marker)], protocol=4)
    yield "builtins.eval", pickle.dumps(_Evil(marker, eval), protocol=2)
    yield "builtins.exec", b"\x80\x02" + _g("builtins", "exec") + _s(f"open({m!r},'w')") + \
        b"\x85R."
    yield "getattr-trick", b"\x80\x02" + _g("builtins", "getattr") + _g("os", "path") + \
        _s("join") + b"\x86R."
    yield "setstate", pickle.dumps(_EvilState(marker), protocol=2)
    yield "code-object", b"\x80\x02" + _g("types", "CodeType") + b")R."
    yield "subprocess", b"\x80\x02" + _g("subprocess", "check_call") + b"(" + _s("touch") + \
        _s(m) + b"l\x85R."
    # BUILD on an allow-listed global: would rename ddp.float32 for the whole process
    yield "build-on-dtype", b"\x80\x02" + _g("torch", "float32") + b"}" + _s("name") + \
        _s("evil") + b"sb."
    yield "build-on-class", b"\x80\x02" + _g("collections", "OrderedDict") + b"}" + \
        _s("__init__") + _g("collections", "Counter") + b"sb."
    yield "build-dunder-on-odict", b"\x80\x02" + _g("collections", "OrderedDict") + b")R}" + \
        _s("__class__") + _g("collections", "Counter") + b"sb."
    yield "build-on-tensor", b"\x80\x02" + _tensor("0", 1, (1,), (1,)) + b"}" + _s("_data") + \
        _s("x") + b"sb."
    yield "reduce-on-tensor-class-attr", b"\x80\x02" + _g("torch", "Size") + _g("torch", "Size") + \
        b"\x85R."
    yield "newobj-unknown", b"\x80\x02" + _g("pathlib", "Path") + _s(m) + b"\x85\x81."
    yield "inst", b"(" + _s(m) + b"ipathlib\nPath\n."
    yield "ext-registry", b"\x80\x02\x82\x01."
    yield "persid-string", b"P" + m.encode() + b"\n."
    yield "persid-module", b"\x80\x02(" + _s("module") + _g("collections", "OrderedDict") + b"tQ."
    yield "persid-not-tuple", b"\x80\x02" + _s("storage") + b"Q."
    yield "append-to-counter", b"\x80\x02" + _g("collections", "Counter") + b")R" + _i(1) + b"a."
    yield "bytearray-size", b"\x80\x02" + _g("builtins", "bytearray") + b"\x8a\x06\x00\x00\x00" \
        b"\x00\x00\x01\x85R."       # bytearray(2**40): a terabyte of zeros
    yield "codecs-other", b"\x80\x02" + _g("_codecs", "encode") + _s("x") + _s("rot13") + \
        b"\x86R."
    yield "rebuild-from-type", b"\x80\x02" + _g("torch._tensor", "_rebuild_from_type_v2") + \
        b"(" + _g("collections", "OrderedDict") + _g("collections", "OrderedDict") + b")}tR."


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_malicious_checkpoints_never_run_code(tmp_path, container):
    marker = tmp_path / "pwned"
    name_before = ddp.float32.name
    cases = list(_malicious(marker))
    assert len(cases) >= 20
    for case, data_pkl in cases:
        storages = {"0": b"\0" * 4} if case == "build-on-tensor" else {}
        raw = _both(data_pkl, storages)[0 if container == "zip" else 1]
        for source in (io.BytesIO(raw), raw):
            if isinstance(source, bytes):
                path = tmp_path / f"{case}.pt"
                path.write_bytes(source)
                source = path
            with pytest.raises((pickle.UnpicklingError, RuntimeError)) as info:
                ddp.load(source)
            text = str(info.value)
            assert "Weights only load failed" in text or "corrupt" in text, (case, text)
        assert not marker.exists(), case
    assert ddp.float32.name == name_before
    # the messages name what was refused, in PyTorch's words
    def message(case):
        raw = _both(dict(cases)[case])[0 if container == "zip" else 1]
        with pytest.raises(pickle.UnpicklingError) as info:
            ddp.load(io.BytesIO(raw))
        return str(info.value)
    assert "GLOBAL posix.system whose module posix is blocked" in message("reduce-os.system")
    assert "Unsupported global: GLOBAL eval was not an allowed global" in message("builtins.eval")
    assert "GLOBAL subprocess.check_call was not an allowed" in message("subprocess")
    assert "Can only build OrderedDict" in message("build-on-dtype")
    assert "Only persistent_load of storage" in message("persid-module")
    assert "only from bytes (no sizes)" in message("bytearray-size")
    assert not marker.exists()


def test_weights_only_false_still_runs_nothing_from_a_pickle_that_is_no_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps(_Evil(marker), protocol=2)
    with pytest.raises(RuntimeError, match="not a torch.save file"):
        ddp.load(io.BytesIO(raw), weights_only=False)
    assert not marker.exists()


# --------------------------------------------------------------------------- damaged and crafted

def test_a_terabyte_storage_announced_in_a_small_file_is_refused_without_allocating():
    tib = 1 << 40
    numel = tib // 4
    pkl = b"\x80\x02" + _tensor("0", numel, (numel,), (1,)) + b"."
    cases = {"zip": _zip(pkl, {"0": b"\0" * 16}),
             "legacy": _legacy(pkl.replace(b"tQ", b"NtQ"), {"0": (b"\0" * 16, numel)})}
    tracemalloc.start()
    try:
        for kind, raw in cases.items():
            with pytest.raises(RuntimeError, match="corrupt or truncated") as info:
                ddp.load(io.BytesIO(raw))
            assert "bytes" in str(info.value), kind
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak} bytes"


def test_a_terabyte_pickle_string_is_refused_without_allocating():
    pkl = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"xyz"      # BINBYTES8 of 1 TiB
    tracemalloc.start()
    try:
        for raw in _both(pkl):
            with pytest.raises(RuntimeError, match="corrupt or truncated"):
                ddp.load(io.BytesIO(raw))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak} bytes"


def test_pickles_nested_200000_deep_are_refused_not_recursion_errors():
    n = 200_000
    pkl = b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."
    for raw in _both(pkl):
        with pytest.raises(RuntimeError, match="nests deeper than 1000 levels"):
            ddp.load(io.BytesIO(raw))
    ok = b"\x80\x02" + b"]" * 100 + b"a" * 99 + b"."
    depth, obj = 0, ddp.load(io.BytesIO(_zip(ok)))
    while obj:
        obj, depth = obj[0], depth + 1
    assert depth == 99


@pytest.mark.parametrize("size,stride,offset", [
    ((3,), (1,), 2),        # runs past the end of a 4-element storage
    ((2, 2), (3, 1), 0),    # last element at 4
    ((2,), (-1,), 1),       # negative stride
    ((-1,), (1,), 0),       # negative size
    ((2,), (1,), -1),       # negative offset
    ((0,), (1,), 9),        # empty, but its offset is outside
])
def test_tensors_reaching_outside_their_storage_are_corrupt(size, stride, offset):
    pkl = b"\x80\x02" + _tensor("0", 4, size, stride, offset) + b"."
    for raw in _both(pkl, {"0": np.arange(4, dtype=np.float32).tobytes()}):
        with pytest.raises(RuntimeError, match="corrupt or truncated"):
            ddp.load(io.BytesIO(raw))


def test_damaged_torch_files_are_corrupt_not_tracebacks(tmp_path):
    raw = (DATA / "sample.pt").read_bytes()
    legacy = (DATA / "sample_legacy.pt").read_bytes()
    good = _zip(b"\x80\x02" + _tensor("0", 4, (4,), (1,)) + b".", {"0": b"\0" * 16})
    bad_crc = bytearray(good)
    bad_crc[good.index(b"\0" * 16) + 3] ^= 1
    cases = {
        "truncated-zip": raw[: len(raw) // 2],
        "truncated-legacy": legacy[: len(legacy) - 10],
        "legacy-bad-magic": pickle.dumps(12345, protocol=2) + legacy[20:],
        "bad-crc": bytes(bad_crc),
        "missing-storage": _zip(b"\x80\x02" + _tensor("../../etc/passwd", 4, (4,), (1,)) + b"."),
        "wrong-storage-size": _zip(b"\x80\x02" + _tensor("0", 8, (8,), (1,)) + b".",
                                   {"0": b"\0" * 16}),
        "legacy-unused-key": _legacy(b"\x80\x02]q\x00.", {"0": (b"\0" * 4, 1)}),
        "truncated-pickle": _zip(b"\x80\x02(J\x01\x00"),
        "stack-underflow": _zip(b"\x80\x02a."),
        "bad-memo": _zip(b"\x80\x02h\x05."),
    }
    for case, data in cases.items():
        with pytest.raises(RuntimeError, match="corrupt or truncated|Invalid magic number") as info:
            ddp.load(io.BytesIO(data))
        assert case and info.value
        path = tmp_path / f"{case}.pt"
        path.write_bytes(data)
        with pytest.raises(RuntimeError):
            serialization.verify(path)
    not_torch = io.BytesIO()
    with zipfile.ZipFile(not_torch, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(RuntimeError, match="zip archive but not a torch.save checkpoint"):
        ddp.load(io.BytesIO(not_torch.getvalue()))
    with pytest.raises(RuntimeError, match="a complex64 tensor|ComplexFloatStorage"):
        ddp.load(io.BytesIO(_zip(b"\x80\x02" + _g("torch", "ComplexFloatStorage") + b".")))
    with pytest.raises(RuntimeError, match="sparse tensor"):
        ddp.load(io.BytesIO(_zip(b"\x80\x02" + _g("torch._utils", "_rebuild_sparse_tensor") +
                                 b".")))
