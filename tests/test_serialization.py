"""ddp.save / ddp.load, the ddp file format, atomic writes, refusal of pickles, map_location and
safetensors interchange."""
import errno
import io
import json
import math
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
import hashlib
from collections import OrderedDict

import numpy as np
import pytest

import ddp
from ddp import backend, serialization
from ddp.nn import Parameter

ALL_DTYPES = [d for d in backend._ALL_DTYPES]


def _random_array(dt, shape, rng):
    npd = dt.np
    if dt is ddp.bool:
        return rng.random(shape) > 0.5
    if dt.is_floating_point:
        a = rng.standard_normal(shape).astype(np.float32) * 100
        return a.astype(npd)
    info = np.iinfo(npd)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=npd)


def _same(a, b):
    """Bit-exact equality of two tensors (dtype, shape, device, bytes)."""
    assert type(a) is type(b)
    assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
    ha, hb = np.ascontiguousarray(a._host()), np.ascontiguousarray(b._host())
    assert ha.reshape(-1).view(np.uint8).tobytes() == hb.reshape(-1).view(np.uint8).tobytes()


def _roundtrip(obj, **load_kwargs):
    buf = io.BytesIO()
    ddp.save(obj, buf)
    buf.seek(0)
    return ddp.load(buf, **load_kwargs)


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("dt", ALL_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", [(2, 3), (), (0,), (3, 0, 2), (4, 1, 5)])
def test_roundtrip_every_dtype_and_shape(dt, shape, tmp_path):
    rng = np.random.default_rng(0)
    t = ddp.tensor(_random_array(dt, shape, rng), dtype=dt)
    path = tmp_path / "t.pt"
    ddp.save(t, path)
    out = ddp.load(path)
    _same(out, t)
    assert out.is_leaf and not out.requires_grad


def test_bfloat16_values_exact():
    vals = [0.0, -0.0, 1.0, -2.5, 3.140625, float("inf"), float("-inf"), 1e38, -1e-38]
    t = ddp.tensor(vals, dtype=ddp.bfloat16)
    out = _roundtrip(t)
    assert out.dtype == ddp.bfloat16
    np.testing.assert_array_equal(out.float().numpy(), t.float().numpy())
    assert np.signbit(out.float().numpy()[1])
    nan = _roundtrip(ddp.tensor([float("nan")], dtype=ddp.bfloat16))
    assert math.isnan(nan.float().item())


def test_non_contiguous_tensor():
    base = ddp.arange(24, dtype=ddp.float32).reshape(2, 3, 4)
    view = base.permute(2, 0, 1)[1:3]
    out = _roundtrip(view)
    np.testing.assert_array_equal(out.numpy(), view.numpy())
    assert out.is_contiguous()


def test_nested_containers_and_plain_values():
    t = ddp.randn(3)
    od = OrderedDict([("z", 1), ("a", 2), ("m", 3)])
    obj = {
        "tuple": (1, 2.0, "three", None, (True, False)),
        "list": [1, [2, [3, []]], ()],
        "odict": od,
        "int_keys": {0: "a", 1: {"x": t}, -5: None},
        "tuple_key": {(1, "a"): 1, None: 2, 2.5: 3, True: 4},
        "floats": [float("inf"), float("-inf"), float("nan"), -0.0, 1.0, 1e-300, 0.1],
        "ints": [0, -1, 2 ** 100, -(2 ** 70)],
        "bools": [True, False],
        "strings": ["", "héllo ✓", "quote\"back\\slash\nnewline", "$"],
        "bytes": b"\x00\xffbytes",
        "bytearray": bytearray(b"ba"),
        "set": {1, 2, 3},
        "frozenset": frozenset({"a"}),
        "size": ddp.Size([2, 3]),
        "dtype": ddp.bfloat16,
        "device": ddp.device("cuda:1"),
        "np": np.arange(6, dtype=np.uint32).reshape(2, 3),
        "npscalar": np.float64(2.5),
        "npint": np.int64(7),
        "dollar_dict": {"$": "ref", "id": 0},   # looks like a tag; must come back as a dict
        "none": None,
    }
    out = _roundtrip(obj)
    assert list(out) == list(obj)
    assert out["tuple"] == obj["tuple"] and type(out["tuple"]) is tuple
    assert type(out["tuple"][4]) is tuple
    assert out["list"] == [1, [2, [3, []]], ()]
    assert type(out["odict"]) is OrderedDict and list(out["odict"].items()) == list(od.items())
    assert set(out["int_keys"]) == {0, 1, -5} and out["int_keys"][0] == "a"
    _same(out["int_keys"][1]["x"], t)
    assert out["tuple_key"] == obj["tuple_key"]
    assert all(type(k) is type(k0) for k, k0 in zip(out["tuple_key"], obj["tuple_key"]))
    f = out["floats"]
    assert f[0] == math.inf and f[1] == -math.inf and math.isnan(f[2])
    assert f[3] == 0.0 and math.copysign(1, f[3]) == -1
    assert type(f[4]) is float and f[4] == 1.0 and f[5] == 1e-300 and f[6] == 0.1
    assert out["ints"] == obj["ints"] and all(type(i) is int for i in out["ints"])
    assert out["bools"] == [True, False] and all(type(b) is bool for b in out["bools"])
    assert out["strings"] == obj["strings"]
    assert out["bytes"] == obj["bytes"] and type(out["bytes"]) is bytes
    assert out["bytearray"] == obj["bytearray"] and type(out["bytearray"]) is bytearray
    assert out["set"] == {1, 2, 3} and type(out["set"]) is set
    assert out["frozenset"] == frozenset({"a"}) and type(out["frozenset"]) is frozenset
    assert out["size"] == (2, 3) and type(out["size"]) is ddp.Size
    assert out["dtype"] is ddp.bfloat16
    assert out["device"] == ddp.device("cuda:1")
    assert out["np"].dtype == np.uint32 and np.array_equal(out["np"], obj["np"])
    assert type(out["npscalar"]) is np.float64 and out["npscalar"] == 2.5
    assert type(out["npint"]) is np.int64 and out["npint"] == 7
    assert out["dollar_dict"] == {"$": "ref", "id": 0}
    assert out["none"] is None


def test_plain_top_level_values():
    for v in [None, 3, "s", [], {}, (), 2.5, float("inf")]:
        assert _roundtrip(v) == v


def test_parameter_and_requires_grad_preserved():
    p = Parameter(ddp.randn(2, 2))
    frozen = Parameter(ddp.randn(3), requires_grad=False)
    leaf = ddp.randn(4, requires_grad=True)
    nonleaf = leaf * 2
    plain = ddp.randn(2)
    out = _roundtrip({"p": p, "frozen": frozen, "leaf": leaf, "nonleaf": nonleaf, "plain": plain})
    assert isinstance(out["p"], Parameter) and out["p"].requires_grad
    assert isinstance(out["frozen"], Parameter) and not out["frozen"].requires_grad
    assert type(out["leaf"]) is ddp.Tensor and out["leaf"].requires_grad and out["leaf"].is_leaf
    assert out["nonleaf"].requires_grad and out["nonleaf"].is_leaf
    assert not out["plain"].requires_grad and type(out["plain"]) is ddp.Tensor
    np.testing.assert_array_equal(out["nonleaf"].detach().numpy(), nonleaf.detach().numpy())
    assert out["p"].grad is None
    (out["p"] * 3).sum().backward()  # the loaded Parameter is a usable leaf
    np.testing.assert_array_equal(out["p"].grad.numpy(), np.full((2, 2), 3, np.float32))


def test_same_tensor_twice_is_stored_once_and_loaded_as_one_object():
    t = ddp.randn(1000)
    buf1, buf2 = io.BytesIO(), io.BytesIO()
    ddp.save([t], buf1)
    ddp.save([t, t, {"again": t}], buf2)
    assert len(buf2.getvalue()) - len(buf1.getvalue()) < 200
    buf2.seek(0)
    out = ddp.load(buf2)
    assert out[0] is out[1] is out[2]["again"]
    # distinct tensors that share storage come back as independent copies
    base = ddp.arange(4, dtype=ddp.float32)
    a, b = _roundtrip([base, base[1:3]])
    a[1] = 100.0
    assert b[0].item() == 1.0


def test_model_and_optimizer_checkpoint(tmp_path):
    model = ddp.nn.Linear(4, 3)
    sd = model.state_dict()
    optim_sd = {
        "state": {0: {"step": ddp.tensor(10.0), "exp_avg": ddp.randn(3, 4),
                      "exp_avg_sq": ddp.rand(3, 4)},
                  1: {"step": ddp.tensor(10.0), "exp_avg": ddp.randn(3),
                      "exp_avg_sq": ddp.rand(3)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                          "amsgrad": False, "maximize": False, "foreach": None,
                          "params": [0, 1]}],
    }
    ckpt = {"epoch": 7, "model": sd, "optimizer": optim_sd, "rng": ddp.get_rng_state(),
            "best": float("inf"), "args": {"arch": "mlp", "layers": (4, 3)}}
    path = tmp_path / "ckpt.pt"
    ddp.save(ckpt, path)
    out = ddp.load(path)
    assert out["epoch"] == 7 and out["best"] == math.inf
    assert type(out["model"]) is OrderedDict and list(out["model"]) == list(sd)
    assert out["model"]._metadata == sd._metadata
    fresh = ddp.nn.Linear(4, 3)
    fresh.load_state_dict(out["model"])
    for k in sd:
        _same(fresh.state_dict()[k], sd[k])
    o = out["optimizer"]
    assert set(o["state"]) == {0, 1}
    for i in (0, 1):
        for k, v in optim_sd["state"][i].items():
            _same(o["state"][i][k], v)
    assert o["param_groups"] == optim_sd["param_groups"]
    assert o["param_groups"][0]["betas"] == (0.9, 0.999)
    assert out["rng"] == ckpt["rng"]
    ddp.set_rng_state(out["rng"])
    assert out["args"] == {"arch": "mlp", "layers": (4, 3)}


# --------------------------------------------------------------------------- files and paths

def test_paths_and_file_objects(tmp_path):
    t = ddp.randn(5)
    for target in (str(tmp_path / "a.pt"), tmp_path / "b.pt"):
        ddp.save({"t": t}, target)
        _same(ddp.load(target)["t"], t)
        _same(ddp.load(os.fspath(target))["t"], t)
    with open(tmp_path / "c.pt", "wb") as fh:
        ddp.save(t, fh)
        assert not fh.closed
    with open(tmp_path / "c.pt", "rb") as fh:
        _same(ddp.load(fh), t)
        assert not fh.closed


def test_several_objects_in_one_stream():
    buf = io.BytesIO()
    ddp.save({"a": ddp.ones(2)}, buf)
    ddp.save([1, 2], buf)
    ddp.save(ddp.zeros(3, dtype=ddp.int64), buf)
    buf.seek(0)
    assert ddp.load(buf)["a"].tolist() == [1.0, 1.0]
    assert ddp.load(buf) == [1, 2]
    assert ddp.load(buf).tolist() == [0, 0, 0]
    assert buf.read() == b""


class _ReadOnlyStream:
    """A minimal non-seekable stream with only read()."""

    def __init__(self, data):
        self._buf = io.BytesIO(data)

    def read(self, n=-1):
        return self._buf.read(min(n, 3) if n and n > 0 else n)  # short reads


def test_minimal_stream_with_short_reads(monkeypatch):
    monkeypatch.setattr(serialization.files, "CHUNK", 5)
    obj = {"w": ddp.randn(300), "x": ddp.arange(7)}
    buf = io.BytesIO()
    ddp.save(obj, buf)
    out = ddp.load(_ReadOnlyStream(buf.getvalue()))
    _same(out["w"], obj["w"])
    _same(out["x"], obj["x"])


def test_large_tensor_with_small_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(serialization.files, "CHUNK", 4099)
    t = ddp.randn(257, 129)
    ddp.save({"t": t}, tmp_path / "big.pt")
    _same(ddp.load(tmp_path / "big.pt")["t"], t)


def test_format_layout(tmp_path):
    """The documented layout: magic, version, header crc, header length, JSON, payload, sha256."""
    path = tmp_path / "x.pt"
    ddp.save({"w": ddp.tensor([1.0, 2.0]), "n": 3}, path)
    raw = path.read_bytes()
    assert raw[:8] == b"\x89DDP\r\n\x1a\n"
    version, crc, hlen = struct.unpack("<IIQ", raw[8:24])
    assert version == 1
    header_bytes = raw[24:24 + hlen]
    assert zlib.crc32(header_bytes) == crc
    header = json.loads(header_bytes)
    assert header["format"] == "ddp.save" and header["version"] == 1
    (entry,) = header["arrays"]
    assert entry == {"kind": "tensor", "dtype": "float32", "shape": [2], "offset": 0,
                     "nbytes": 8, "device": "cpu", "requires_grad": False}
    start = (24 + hlen + 63) // 64 * 64
    assert raw[start:start + 8] == np.array([1.0, 2.0], "<f4").tobytes()
    assert raw[-32:] == hashlib.sha256(raw[:-32]).digest()
    assert len(raw) == start + header["payload_nbytes"] + 32


def test_detect_format_and_verify(tmp_path):
    p = tmp_path / "x.pt"
    ddp.save([ddp.ones(3)], p)
    assert serialization.detect_format(p) == "ddp"
    assert serialization.verify(p) is True
    s = tmp_path / "x.safetensors"
    serialization.save_safetensors({"a": ddp.ones(2)}, s)
    assert serialization.detect_format(s) == "safetensors"
    pk = tmp_path / "x.pkl"
    pk.write_bytes(pickle.dumps([1, 2], protocol=4))
    assert serialization.detect_format(pk) == "pickle"
    e = tmp_path / "empty"
    e.write_bytes(b"")
    assert serialization.detect_format(e) == "empty"
    raw = bytearray(p.read_bytes())
    raw[-40] ^= 0x01
    p.write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="corrupt or truncated"):
        serialization.verify(p)


# --------------------------------------------------------------------------- unsupported input

def test_unsupported_objects_raise_before_creating_a_file(tmp_path):
    path = tmp_path / "m.pt"
    with pytest.raises(TypeError, match="state_dict"):
        ddp.save({"model": ddp.nn.Linear(2, 2)}, path, format="ddp")
    with pytest.raises(TypeError, match=r"at obj\['x'\]\[1\]"):
        ddp.save({"x": [1, object()]}, path, format="ddp")
    with pytest.raises(TypeError, match="complex|supported"):
        ddp.save(1 + 2j, path, format="ddp")
    with pytest.raises(TypeError, match="NumPy array of dtype object"):
        ddp.save(np.array([None]), path, format="ddp")
    cyc = []
    cyc.append(cyc)
    with pytest.raises(ValueError, match="cycle"):
        ddp.save(cyc, path, format="ddp")
    with pytest.raises(ValueError, match="format must be one of"):
        ddp.save([1], path, format="pickle")
    # what not even pickle can store fails before a file appears (the default format pickles)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        ddp.save({"f": lambda x: x}, path)
    assert os.listdir(tmp_path) == []


def test_objects_the_ddp_format_cannot_hold_are_pickled_as_torch_does(tmp_path):
    """ddp.save(model) works as torch.save(model); loading it is an explicit opt-in."""
    path = tmp_path / "whole.pt"
    ddp.save({"x": [1, 2 + 3j], "cycle": None}, path)
    assert serialization.detect_format(path) == "zip"
    assert ddp.load(path) == {"x": [1, 2 + 3j], "cycle": None}   # complex is allow-listed
    cyc = []
    cyc.append(cyc)
    ddp.save(cyc, path)
    out = ddp.load(path)
    assert out[0] is out


# --------------------------------------------------------------------------- atomic writes

def _write_then_fail(exc):
    real = serialization.files.write_bytes
    state = {"n": 0}

    def failing(fh, data):
        state["n"] += 1
        if state["n"] == 3:  # after the preamble and the header went out
            real(fh, bytes(memoryview(data).cast("B"))[: max(1, len(data) // 2)])
            raise exc
        real(fh, data)
    return failing


@pytest.mark.parametrize("exc", [RuntimeError("simulated crash mid-write"),
                                 OSError(errno.ENOSPC, "No space left on device"),
                                 KeyboardInterrupt()],
                         ids=["exception", "disk-full", "interrupt"])
def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch, exc):
    path = tmp_path / "ckpt.pt"
    old = {"epoch": 1, "w": ddp.randn(100)}
    ddp.save(old, path)
    old_bytes = path.read_bytes()
    monkeypatch.setattr(serialization.files, "write_bytes", _write_then_fail(exc))
    with pytest.raises(type(exc)):
        ddp.save({"epoch": 2, "w": ddp.randn(100)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    assert path.read_bytes() == old_bytes
    out = ddp.load(path)
    assert out["epoch"] == 1
    _same(out["w"], old["w"])


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(serialization.files, "write_bytes",
                        _write_then_fail(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError):
        ddp.save({"w": ddp.randn(100)}, tmp_path / "new.pt")
    assert os.listdir(tmp_path) == []


def test_save_fsyncs_and_replaces(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", os.path.dirname(a),
                                                                   str(b))), real_replace(a, b))[1])
    path = tmp_path / "x.pt"
    ddp.save([1], path)
    assert calls[0] == "fsync"                                  # the data, before the rename
    assert calls[1] == ("replace", str(tmp_path), str(path))    # temp file in the same directory
    assert calls[2] == "fsync"                                  # the directory, after it
    assert ddp.load(path) == [1]


def test_save_keeps_permissions_of_existing_file(tmp_path):
    path = tmp_path / "x.pt"
    ddp.save([1], path)
    os.chmod(path, 0o640)
    ddp.save([2], path)
    assert (os.stat(path).st_mode & 0o777) == 0o640
    assert ddp.load(path) == [2]


_KILLED_WRITER = textwrap.dedent("""
    import signal, sys
    import ddp
    from ddp.serialization import files
    real = files.write_bytes

    def write_then_hang(fh, data):   # once the payload is out: say so, then wait to be killed
        real(fh, data)
        if fh.tell() >= 1 << 20:
            fh.flush()
            print("mid-save", flush=True)
            signal.pause()

    files.write_bytes = write_then_hang
    ddp.save({"w": ddp.zeros(1 << 18)}, sys.argv[1])
""")


def _kill_a_writer_mid_save(path):
    """Run ddp.save(1 MiB, path) in a child and SIGKILL it once the payload is written."""
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)],
                             stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout.readline() == b"mid-save\n"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    return child.pid


def _temporaries(directory):
    return sorted(n for n in os.listdir(directory) if ".ddp-tmp." in n)


def test_temporaries_of_killed_writers_are_removed_by_the_next_save_or_load(tmp_path):
    path = tmp_path / "ckpt.pt"
    ddp.save({"epoch": 1}, path)
    pid = _kill_a_writer_mid_save(path)
    (left,) = _temporaries(tmp_path)
    host = serialization.files._host_tag()
    assert left.startswith(f".ckpt.pt.ddp-tmp.{host}.{pid}.")
    assert os.path.getsize(tmp_path / left) >= 1 << 20      # the size of the checkpoint
    assert ddp.load(tmp_path / "ckpt.pt", map_location="cpu") == {"epoch": 1} \
        and _temporaries(tmp_path) == []                    # the previous file survived; load cleans
    _kill_a_writer_mid_save(path)
    live = tmp_path / f".other.pt.ddp-tmp.{host}.{os.getpid()}.0123abcd"  # a live writer (us)
    live.write_bytes(b"in progress")
    remote = tmp_path / ".other.pt.ddp-tmp.otherhost.1.89abcdef"     # another host, fresh
    remote.write_bytes(b"in progress elsewhere")
    remote_old = tmp_path / ".old.pt.ddp-tmp.otherhost.2.fedcba98"    # another host, a day idle
    remote_old.write_bytes(b"abandoned")
    os.utime(remote_old, (0, 0))
    ddp.save({"epoch": 2}, tmp_path / "next.pt")
    assert _temporaries(tmp_path) == sorted([live.name, remote.name])
    assert ddp.load(path) == {"epoch": 1}


# --------------------------------------------------------------------------- damaged files

def _saved_bytes(obj=None):
    buf = io.BytesIO()
    ddp.save({"w": ddp.randn(50), "meta": {"epoch": 3}} if obj is None else obj, buf)
    return buf.getvalue()


def _payload_start(raw):
    hlen = struct.unpack("<Q", raw[16:24])[0]
    return (24 + hlen + 63) // 64 * 64


@pytest.mark.parametrize("where", ["payload", "payload_end", "header", "preamble_len", "crc",
                                   "digest", "padding"])
def test_flipped_byte_is_detected(tmp_path, where):
    raw = bytearray(_saved_bytes())
    start = _payload_start(raw)
    pos = {"payload": start + 5, "payload_end": len(raw) - 33, "header": 40,
           "preamble_len": 16, "crc": 13, "digest": len(raw) - 1, "padding": start - 1}[where]
    raw[pos] ^= 0x10
    path = tmp_path / "bad.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match=r"ddp.load: .*bad.pt is corrupt or truncated"):
        ddp.load(path)
    with pytest.raises(RuntimeError, match="corrupt or truncated"):
        ddp.load(io.BytesIO(bytes(raw)))


def test_checksum_message_names_the_payload(tmp_path):
    raw = bytearray(_saved_bytes())
    raw[_payload_start(raw) + 3] ^= 0xFF
    with pytest.raises(RuntimeError, match="checksum"):
        ddp.load(io.BytesIO(bytes(raw)))


@pytest.mark.parametrize("keep", [3, 8, 12, 24, 30, -200, -33, -32, -1])
def test_truncated_file_raises(tmp_path, keep):
    raw = _saved_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(raw[:keep])
    with pytest.raises(RuntimeError, match=r"cut.pt is corrupt or truncated"):
        ddp.load(path)
    with pytest.raises(RuntimeError, match="corrupt or truncated"):
        ddp.load(io.BytesIO(raw[:keep]))


def test_trailing_garbage_in_a_path_is_corrupt(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(_saved_bytes() + b"junk")
    with pytest.raises(RuntimeError, match="corrupt"):
        ddp.load(path)


def test_empty_and_foreign_files(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(RuntimeError, match="empty"):
        ddp.load(empty)
    text = tmp_path / "notes.txt"
    text.write_text("hello world, this is text")
    with pytest.raises(RuntimeError, match="not a ddp.save, torch.save or safetensors file"):
        ddp.load(text)
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(RuntimeError, match="not a ddp.save"):
        ddp.load(npy)


# --------------------------------------------------------------------------- crafted headers

def _rewrite_header(raw, edit):
    """Re-encode a ddp file after ``edit(header)``, with valid checksums."""
    hlen = struct.unpack("<Q", raw[16:24])[0]
    old_start = (24 + hlen + 63) // 64 * 64
    payload = raw[old_start:-32]
    header = json.loads(raw[24:24 + hlen])
    edit(header)
    hb = json.dumps(header, separators=(",", ":")).encode()
    version = header["version"]
    out = bytearray(raw[:8] + struct.pack("<IIQ", version, zlib.crc32(hb), len(hb)) + hb)
    out += b"\0" * ((-len(out)) % 64)
    out += payload
    out += hashlib.sha256(bytes(out)).digest()
    return bytes(out)


def _cuda_file(tmp_path):
    raw = _saved_bytes({"w": ddp.tensor([1.0, 2.0]), "b": ddp.tensor([3])})

    def edit(h):
        for e in h["arrays"]:
            e["device"] = "cuda:0"
    path = tmp_path / "cuda.pt"
    path.write_bytes(_rewrite_header(raw, edit))
    return path


def test_crafted_header_roundtrip_helper_is_valid(tmp_path):
    raw = _saved_bytes()
    assert _rewrite_header(raw, lambda h: None) == raw


def test_newer_format_version_is_refused(tmp_path):
    raw = _rewrite_header(_saved_bytes(), lambda h: h.update(version=2))
    with pytest.raises(RuntimeError, match="version 2.*upgrade ddp"):
        ddp.load(io.BytesIO(raw))


@pytest.mark.parametrize("edit", [
    lambda h: h["arrays"][0].update(dtype="object"),
    lambda h: h["arrays"][0].update(dtype="float64"),
    lambda h: h["arrays"][0].update(shape=[10 ** 12]),
    lambda h: h["arrays"][0].update(offset=-64),
    lambda h: h["arrays"][0].update(kind="pickle"),
    lambda h: h.update(root={"$": "exec", "v": "os.system('x')"}),
    lambda h: h.update(root={"$": "ref", "id": 99}),
    lambda h: h.update(root={"$": "dict", "items": [[[1], 2]]}),
    lambda h: h.update(format="other"),
], ids=["object-dtype", "wrong-dtype-size", "huge-shape", "negative-offset", "bad-kind",
        "unknown-tag", "bad-ref", "unhashable-key", "bad-format"])
def test_inconsistent_headers_are_rejected(edit):
    raw = _rewrite_header(_saved_bytes(), edit)
    with pytest.raises(RuntimeError, match="corrupt or truncated"):
        ddp.load(io.BytesIO(raw))


def _ddp_file_with_header(header_text, payload=b""):
    """A ddp file around raw header JSON text, with valid crc32 and sha256."""
    hb = header_text.encode()
    out = bytearray(b"\x89DDP\r\n\x1a\n" + struct.pack("<IIQ", 1, zlib.crc32(hb), len(hb)) + hb)
    out += b"\0" * ((-len(out)) % 64) + payload
    return bytes(out + hashlib.sha256(bytes(out)).digest())


def _safetensors_with_header(header_text, data=b""):
    hb = header_text.encode()
    return struct.pack("<Q", len(hb)) + hb + data


DEEP = 200_000


@pytest.mark.parametrize("nesting", ["[" * DEEP + "]" * DEEP,
                                     '{"a":' * DEEP + "1" + "}" * DEEP],
                         ids=["lists", "objects"])
def test_headers_nested_200000_deep_are_corrupt_not_recursion_errors(nesting):
    ddp_raw = _ddp_file_with_header('{"format":"ddp.save","version":1,"arrays":[],'
                                    '"payload_nbytes":0,"root":' + nesting + "}")
    st_raw = _safetensors_with_header('{"__metadata__":' + nesting + "}")
    for raw in (ddp_raw, st_raw):
        with pytest.raises(RuntimeError, match="corrupt or truncated.*nests too deeply"):
            ddp.load(io.BytesIO(raw))
    with pytest.raises(RuntimeError, match="nests too deeply"):
        serialization.load_safetensors(io.BytesIO(st_raw))
    with pytest.raises(RuntimeError, match="nests too deeply"):
        serialization.verify(io.BytesIO(ddp_raw))


def test_a_terabyte_tensor_announced_in_a_bytesio_is_corrupt_not_memory_error():
    tib = 1 << 40
    entry = {"kind": "tensor", "dtype": "float32", "shape": [tib // 4], "offset": 0,
             "nbytes": tib, "device": "cpu", "requires_grad": False}
    ddp_raw = _ddp_file_with_header(json.dumps(
        {"format": "ddp.save", "version": 1, "arrays": [entry], "payload_nbytes": tib,
         "root": {"$": "ref", "id": 0}}), b"\0" * 64)
    st_raw = _safetensors_with_header(json.dumps(
        {"w": {"dtype": "F32", "shape": [tib // 4], "data_offsets": [0, tib]}}), b"\0" * 64)
    tracemalloc.start()
    try:
        for raw in (ddp_raw, st_raw):
            for stream in (io.BytesIO(raw), _ReadOnlyStream(raw)):   # seekable, and not
                with pytest.raises(RuntimeError, match="corrupt or truncated"):
                    ddp.load(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak} bytes"


# --------------------------------------------------------------------------- never unpickle

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("weights_only", [True, False])
def test_malicious_pickle_is_refused_without_running(tmp_path, protocol, weights_only):
    """A bare pickle is no torch.save file: even weights_only=False runs nothing from it."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": _Evil(marker)}, protocol=protocol))
    if protocol == 0:
        expected, match = RuntimeError, "not a ddp.save, torch.save or safetensors file"
    elif weights_only:
        expected, match = pickle.UnpicklingError, (r"(?s)Weights only load failed.*GLOBAL "
                                                   r"posix.system whose module posix is blocked")
    else:
        expected, match = RuntimeError, "(?s)not a torch.save file.*never arbitrary pickles"
    with pytest.raises(expected, match=match):
        ddp.load(path, weights_only=weights_only)
    with pytest.raises(expected):
        ddp.load(io.BytesIO(path.read_bytes()), weights_only=weights_only)
    with pytest.raises(RuntimeError):
        serialization.load_safetensors(path)
    assert not marker.exists()


def test_pickle_module_argument_is_ignored(tmp_path):
    path = tmp_path / "x.pt"
    ddp.save([1], path, pickle_module=pickle, pickle_protocol=4)
    assert ddp.load(path, pickle_module=pickle, weights_only=False, mmap=True) == [1]


# --------------------------------------------------------------------------- map_location

def test_map_location_variants_on_cpu_file(tmp_path):
    path = tmp_path / "x.pt"
    t = ddp.randn(3)
    ddp.save({"t": t}, path)
    for ml in (None, "cpu", ddp.device("cpu"), {"cpu": "cpu"}, {"cuda:0": "cpu"}):
        out = ddp.load(path, map_location=ml)["t"]
        assert out.device == ddp.device("cpu")
        _same(out, t)
    seen = []

    def keep(storage, location):
        seen.append(location)
        return None  # default restore
    assert ddp.load(path, map_location=keep)["t"].device.type == "cpu"
    assert seen == ["cpu"]
    out = ddp.load(path, map_location=lambda s, loc: s * 2)["t"]
    np.testing.assert_allclose(out.numpy(), t.numpy() * 2)
    with pytest.raises(TypeError, match="map_location"):
        ddp.load(path, map_location=3)


@pytest.mark.skipif(ddp.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_saved_tensor_without_cuda(tmp_path):
    path = _cuda_file(tmp_path)
    with pytest.raises(RuntimeError, match=r"saved on cuda:0.*CUDA is not available.*"
                                           r"map_location='cpu'"):
        ddp.load(path)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        ddp.load(path, map_location={"cuda:1": "cpu"})   # cuda:0 is not remapped
    for ml in ("cpu", ddp.device("cpu"), {"cuda:0": "cpu"}, {ddp.device("cuda:0"): "cpu"},
               lambda storage, loc: storage):
        out = ddp.load(path, map_location=ml)
        assert out["w"].device.type == "cpu" and out["w"].tolist() == [1.0, 2.0]
        assert out["b"].dtype == ddp.int64 and out["b"].tolist() == [3]
    seen = []
    ddp.load(path, map_location=lambda s, loc: seen.append(loc) or s)
    assert seen == ["cuda:0", "cuda:0"]


@pytest.mark.gpu
def test_cuda_tensors_roundtrip(tmp_path):
    t = ddp.randn(4, 5).cuda()
    p = Parameter(ddp.randn(3, dtype=ddp.bfloat16).cuda())
    path = tmp_path / "gpu.pt"
    ddp.save({"t": t, "p": p}, path)
    out = ddp.load(path)
    assert out["t"].device == ddp.device("cuda:0") and isinstance(out["p"], Parameter)
    _same(out["t"], t)
    _same(out["p"], p)
    cpu = ddp.load(path, map_location="cpu")
    assert cpu["t"].device.type == "cpu"
    np.testing.assert_array_equal(cpu["t"].numpy(), t.cpu().numpy())
    ddp.save({"t": t.cpu()}, path)
    assert ddp.load(path, map_location="cuda")["t"].device.type == "cuda"
    assert ddp.load(path, map_location={"cpu": "cuda:0"})["t"].device == ddp.device("cuda:0")
    st = tmp_path / "gpu.safetensors"
    serialization.save_safetensors({"t": t}, st)
    assert serialization.load_safetensors(st, device="cuda")["t"].device.type == "cuda"


# --------------------------------------------------------------------------- safetensors

def _st_tensors():
    rng = np.random.default_rng(1)
    out = {}
    for dt in ALL_DTYPES:
        out[f"{dt.name}.w"] = ddp.tensor(_random_array(dt, (3, 2), rng), dtype=dt)
    out["scalar"] = ddp.tensor(2.5)
    out["empty"] = ddp.zeros(0, 4)
    out["param"] = Parameter(ddp.randn(5))
    return out


def test_safetensors_roundtrip_and_layout(tmp_path):
    tensors = _st_tensors()
    path = tmp_path / "m.safetensors"
    serialization.save_safetensors(tensors, path, metadata={"format": "pt", "epoch": "3"})
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0
    header_text = raw[8:8 + n].decode()
    header = json.loads(header_text)
    assert header_text == header_text.rstrip() + " " * (len(header_text) - len(header_text.rstrip()))
    assert header.pop("__metadata__") == {"format": "pt", "epoch": "3"}
    assert header["bfloat16.w"]["dtype"] == "BF16" and header["bool.w"]["dtype"] == "BOOL"
    assert header["scalar"]["shape"] == [] and header["empty"]["shape"] == [0, 4]
    spans = sorted(v["data_offsets"] for v in header.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert spans[-1][1] == len(raw) - 8 - n
    for v in header.values():   # every tensor starts aligned to its element size
        assert v["data_offsets"][0] % np.dtype(
            serialization.tensors.NP_DTYPES[serialization.safetensors_format.ST_TO_NAME[v["dtype"]]]).itemsize == 0
    out = serialization.load_safetensors(path)
    assert set(out) == set(tensors)
    for k, t in tensors.items():
        _same(out[k], ddp.Tensor._make(t._data))   # Parameters come back as plain tensors
    assert serialization.safetensors_metadata(path) == {"format": "pt", "epoch": "3"}
    # ddp.load detects safetensors by content, whatever the file is called
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(raw)
    loaded = ddp.load(renamed)
    assert isinstance(loaded, dict) and set(loaded) == set(tensors)
    _same(loaded["float32.w"], tensors["float32.w"])
    buf = io.BytesIO()
    serialization.save_safetensors(tensors, buf)
    buf.seek(0)
    _same(serialization.load_safetensors(buf)["int64.w"], tensors["int64.w"])


def test_safetensors_errors(tmp_path):
    with pytest.raises(TypeError, match="keys must be str"):
        serialization.save_safetensors({1: ddp.ones(1)}, tmp_path / "a.st")
    with pytest.raises(TypeError, match="not a tensor"):
        serialization.save_safetensors({"a": [1, 2]}, tmp_path / "a.st")
    with pytest.raises(TypeError, match="metadata"):
        serialization.save_safetensors({"a": ddp.ones(1)}, tmp_path / "a.st", {"k": 1})
    assert os.listdir(tmp_path) == []
    path = tmp_path / "m.safetensors"
    serialization.save_safetensors({"a": ddp.ones(100), "b": ddp.zeros(3)}, path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:-7])
    with pytest.raises(RuntimeError, match="corrupt or truncated"):
        serialization.load_safetensors(cut)
    with pytest.raises(RuntimeError, match="corrupt or truncated"):
        ddp.load(cut)
    with pytest.raises(RuntimeError, match="corrupt or truncated"):
        ddp.load(io.BytesIO(raw[:-7]))
    n = struct.unpack("<Q", raw[:8])[0]
    bad = json.loads(raw[8:8 + n])
    bad["a"]["dtype"] = "F8_E4M3"
    hb = json.dumps(bad).encode()
    hb += b" " * (-len(hb) % 8)
    odd = tmp_path / "odd.safetensors"
    odd.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
    with pytest.raises(RuntimeError, match="F8_E4M3"):
        serialization.load_safetensors(odd)
    ddp_file = tmp_path / "x.pt"
    ddp.save({"a": ddp.ones(1)}, ddp_file)
    with pytest.raises(RuntimeError, match="use ddp.load"):
        serialization.load_safetensors(ddp_file)


def safetensors_library_arrays():
    """The arrays in tests/data/safetensors/numpy.safetensors (written by safetensors.numpy)."""
    rng = np.random.default_rng(7)
    return {"f32": rng.standard_normal((3, 4)).astype(np.float32),
            "f16": rng.standard_normal(5).astype(np.float16),
            "f64": rng.standard_normal((2, 2)),
            "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
            "i32": np.arange(3, dtype=np.int32), "i16": np.arange(3, dtype=np.int16),
            "i8": np.arange(-3, 3, dtype=np.int8), "u8": np.arange(4, dtype=np.uint8),
            "bool": np.array([True, False]), "scalar": np.array(1.5, np.float32),
            "empty": np.zeros((0, 2), np.float32)}


def _check_library_arrays(out):
    expected = safetensors_library_arrays()
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert out[k].dtype.name == v.dtype.name and list(out[k].shape) == list(v.shape), k
        np.testing.assert_array_equal(out[k].numpy(), v, err_msg=k)


def test_reads_a_file_the_safetensors_library_wrote():
    path = pathlib.Path(__file__).parent / "data" / "safetensors" / "numpy.safetensors"
    _check_library_arrays(serialization.load_safetensors(path))
    _check_library_arrays(ddp.load(path))
    assert serialization.safetensors_metadata(path) == {"source": "safetensors.numpy"}


def test_writes_the_bytes_the_safetensors_library_writes():
    """The library's own file (tests/data/safetensors, written by safetensors.numpy) is what
    ddp writes for the same arrays and metadata, byte for byte: header order, JSON spacing,
    padding and data. Runs without the library; the live interop below repeats it with it."""
    library_file = pathlib.Path(__file__).parent / "data" / "safetensors" / "numpy.safetensors"
    buf = io.BytesIO()
    serialization.save_safetensors({k: ddp.tensor(v) for k, v in
                                    safetensors_library_arrays().items()}, buf,
                                   metadata={"source": "safetensors.numpy"})
    assert buf.getvalue() == library_file.read_bytes()


def test_safetensors_interop_with_the_safetensors_package(tmp_path):
    """Live against the safetensors library (in the test extra, so CI runs it; numpy flavour,
    no torch). Its numpy flavour has no bfloat16: that one is checked on the raw bytes. Where
    the library is not installed, its recorded answers stand in: the file it wrote
    (tests/data/safetensors) and the bytes it writes (the test above)."""
    try:
        import safetensors
        import safetensors.numpy as st_numpy
    except ImportError:
        test_reads_a_file_the_safetensors_library_wrote()
        test_writes_the_bytes_the_safetensors_library_writes()
        return
    ours = tmp_path / "ours.safetensors"
    tensors = _st_tensors()
    serialization.save_safetensors(tensors, ours, metadata={"epoch": "3"})
    no_bf16 = {k: v for k, v in tensors.items() if v.dtype != ddp.bfloat16}
    plain = tmp_path / "plain.safetensors"
    serialization.save_safetensors(no_bf16, plain)
    theirs_view = st_numpy.load_file(str(plain))
    assert set(theirs_view) == set(no_bf16)
    for k, t in no_bf16.items():
        got = theirs_view[k]
        assert got.dtype == t.detach().numpy().dtype and got.shape == tuple(t.shape), k
        np.testing.assert_array_equal(got, t.detach().numpy(), err_msg=k)
    raw = dict(safetensors.deserialize(ours.read_bytes()))
    bf16 = raw["bfloat16.w"]
    assert bf16["dtype"] == "BF16" and list(bf16["shape"]) == [3, 2]
    assert bytes(bf16["data"]) == tensors["bfloat16.w"]._data.tobytes()
    with safetensors.safe_open(str(ours), framework="numpy") as f:
        assert f.metadata() == {"epoch": "3"}

    assert plain.read_bytes() == st_numpy.save({k: t.detach().numpy() for k, t in
                                                no_bf16.items()})   # byte for byte
    theirs = tmp_path / "theirs.safetensors"
    st_numpy.save_file(safetensors_library_arrays(), str(theirs), metadata={"source": "np"})
    _check_library_arrays(serialization.load_safetensors(theirs))
    _check_library_arrays(ddp.load(theirs))
    assert serialization.safetensors_metadata(theirs) == {"source": "np"}
