"""PyTorch as a recorded oracle: its answers live in ``tests/oracle_data/``, so parity tests run
where torch is not installed (CI), and re-check themselves against live torch where it is.

A test asks for PyTorch's answer through the ``oracle`` fixture, giving a function that computes
it from ``torch`` and returns NumPy arrays, numbers, strings, or dicts/lists/tuples of them::

    def test_conv2d_matches_torch(oracle):
        x = np.random.default_rng(0).standard_normal((2, 4, 9, 8)).astype(np.float32)

        def reference(torch):                      # runs only where torch is installed
            conv = torch.nn.Conv2d(4, 6, 3)        # the fixture seeds torch first
            xt = torch.tensor(x, requires_grad=True)
            y = conv(xt)
            y.sum().backward()
            return {"state": {k: v.numpy() for k, v in conv.state_dict().items()},
                    "y": y.detach().numpy(), "gx": xt.grad.numpy(), "repr": repr(conv)}

        ref = oracle(reference)                    # recorded answer (checked against live torch)
        ours = ddp.nn.Conv2d(4, 6, 3)
        ours.load_state_dict({k: ddp.tensor(v) for k, v in ref["state"].items()})
        ...

Modes:

* default: the recorded answer is returned. When torch is importable, the function also runs
  live and the test fails if live torch disagrees with the record (a stale record).
* ``pytest --record-oracle``: the function runs live (torch required) and its answer is written
  to the record of the test's file, ``tests/oracle_data/<dir>__<file>.npz``, at the end of the
  session. Run it after adding or changing an oracle case; commit the ``.npz`` files.

A case with no record fails (it does not skip): a test skipped for want of torch checks nothing.
Inputs must be made deterministically (NumPy seeds) and passed into the function; anything drawn
from torch's generator (initial weights) must be part of the answer.
"""
from __future__ import annotations

import pathlib

import numpy as np

DATA_DIR = pathlib.Path(__file__).parent / "oracle_data"
TORCH_VERSION_KEY = "__torch_version__"
_NONE = "__None__"
_SEP = "/"
_LIVE_TOLERANCE = {False: 1e-4, True: 1e-9}   # float32 (and less), float64: relative

_cache: dict[pathlib.Path, dict] = {}      # record file -> {flat key: array}
_pending: dict[pathlib.Path, dict] = {}    # what --record-oracle will write


def record_path(test_file) -> pathlib.Path:
    """The record of one test file: ``tests/nn/test_conv_pool.py`` -> ``nn__test_conv_pool.npz``."""
    rel = pathlib.Path(test_file).resolve().relative_to(pathlib.Path(__file__).parent.resolve())
    return DATA_DIR / ("__".join(rel.with_suffix("").parts) + ".npz")


def _flatten(value, prefix, out):
    if isinstance(value, dict):
        if not value:
            out[prefix + _SEP + "__emptydict__"] = np.array(0)
        for k, v in value.items():
            if not isinstance(k, str) or _SEP in k:
                raise TypeError(f"oracle: dict keys must be strings without '/', got {k!r}")
            _flatten(v, prefix + _SEP + k, out)
    elif isinstance(value, (list, tuple)):
        out[prefix + _SEP + ("__tuple__" if isinstance(value, tuple) else "__list__")] = \
            np.array(len(value))
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}{_SEP}{i}", out)
    elif value is None:
        out[prefix] = np.array(_NONE)
    elif isinstance(value, str):
        out[prefix] = np.array(value)
    else:
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"oracle: {prefix!r} is not an array, number or string: {value!r}")
        out[prefix] = arr


def _unflatten(flat, prefix):
    if prefix in flat:
        arr = flat[prefix]
        if arr.dtype.kind == "U":
            text = str(arr)
            return None if text == _NONE else text
        return arr
    head = prefix + _SEP
    children = {k[len(head):] for k in flat if k.startswith(head)}
    if not children:
        raise KeyError(prefix)
    for kind in ("__list__", "__tuple__"):
        if kind in children:
            n = int(flat[head + kind])
            items = [_unflatten(flat, f"{head}{i}") for i in range(n)]
            return items if kind == "__list__" else tuple(items)
    names = sorted({c.split(_SEP, 1)[0] for c in children} - {"__emptydict__"})
    return {name: _unflatten(flat, head + name) for name in names}


def _load(path):
    if path not in _cache:
        if path.exists():
            with np.load(path, allow_pickle=False) as f:
                _cache[path] = {k: f[k] for k in f.files}
        else:
            _cache[path] = {}
    return _cache[path]


def _assert_same(recorded, live, where, tolerance=None):
    if isinstance(recorded, dict):
        assert isinstance(live, dict) and sorted(recorded) == sorted(live), \
            f"{where}: keys {sorted(live)} (live torch) differ from the record {sorted(recorded)}"
        for k in recorded:
            _assert_same(recorded[k], live[k], f"{where}/{k}", tolerance)
    elif isinstance(recorded, (list, tuple)):
        assert len(recorded) == len(live), f"{where}: length differs from the record"
        for i, (a, b) in enumerate(zip(recorded, live)):
            _assert_same(a, b, f"{where}/{i}", tolerance)
    elif recorded is None or isinstance(recorded, str):
        assert recorded == live, f"{where}: live torch gives {live!r}, the record {recorded!r}"
    else:
        live = np.asarray(live)
        assert recorded.shape == live.shape and recorded.dtype == live.dtype, \
            f"{where}: live torch gives {live.dtype}{live.shape}, the record " \
            f"{recorded.dtype}{recorded.shape}"
        if recorded.dtype.kind in "fc":
            # a stale record differs by O(1); torch itself differs from run to run by rounding
            # (its reductions split by thread count and CPU), so the tolerance is rounding's,
            # relative to the array's scale (a near-zero entry of a large gradient included)
            tol = tolerance or _LIVE_TOLERANCE[np.finfo(recorded.dtype).bits > 32]
            scale = float(np.max(np.abs(recorded[np.isfinite(recorded)]), initial=0.0))
            np.testing.assert_allclose(live, recorded, rtol=tol, atol=tol * max(scale, 1e-3),
                                       err_msg=where)
        else:
            np.testing.assert_array_equal(live, recorded, err_msg=where)


def _normalise(value):
    """An answer as it reads back from the record (tuples, lists, arrays, strings, None)."""
    flat = {}
    _flatten(value, "", flat)
    return _unflatten(flat, "")


class Oracle:
    """Bound to one test: ``oracle(fn)`` or ``oracle(fn, key="second")`` for several answers."""

    def __init__(self, node, record):
        self._node = node
        self._record = record
        self._path = record_path(node.path)

    def __call__(self, compute, key=None, tolerance=None):
        """PyTorch's answer: ``compute(torch)``'s recorded value (see the module's docstring).

        ``tolerance`` (relative) replaces rounding's for the live re-check of a computation
        that amplifies rounding (an iterative method run for several steps)."""
        # the test's id inside its file: "test_x[param]", or "TestY::test_x[param]" in a class
        # (two classes may both have a test_x)
        case = self._node.nodeid.split("::", 1)[1] + ("" if key is None else f"[{key}]")
        prefix = _SEP + case
        if self._record:
            value = _normalise(_run_live(compute))
            flat = {}
            _flatten(value, prefix, flat)
            _pending.setdefault(self._path, {}).update(flat)
            return value
        flat = _load(self._path)
        try:
            recorded = _unflatten(flat, prefix)
        except KeyError:
            raise AssertionError(
                f"no recorded PyTorch answer for {case!r} in {self._path.name}: run "
                f"`python -m pytest {self._node.nodeid.split('::')[0]} --record-oracle` where "
                f"torch is installed and commit the file") from None
        torch = _torch_or_none()
        if torch is not None:
            _assert_same(recorded, _normalise(_run_live(compute)), f"oracle {case}", tolerance)
        return recorded


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _run_live(compute):
    torch = _torch_or_none()
    if torch is None:
        raise RuntimeError("--record-oracle needs torch installed")
    torch.manual_seed(0)
    with torch.random.fork_rng():
        return compute(torch)


def write_pending():
    """Merge what this session recorded into the record files (called at session end)."""
    torch = _torch_or_none()
    for path, flat in _pending.items():
        merged = dict(_load(path))
        prefixes = {k.split(_SEP, 2)[1] for k in flat}
        merged = {k: v for k, v in merged.items()   # the version key has no separator
                  if k != TORCH_VERSION_KEY and k.split(_SEP, 2)[1] not in prefixes}
        merged.update(flat)
        merged[TORCH_VERSION_KEY] = np.array(torch.__version__ if torch else "?")
        DATA_DIR.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **merged)
        tmp.replace(path)
        _cache[path] = merged
    _pending.clear()
