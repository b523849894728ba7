"""The namespaces PyTorch programs import: ddp.multiprocessing (shared-memory tensors, spawn),
ddp.backends, ddp.accelerator, and the device flags of Tensor."""
from __future__ import annotations

import pytest

import ddp
import ddp.backends.cudnn as cudnn
import ddp.multiprocessing as mp


def _add_rank(rank, shared, plain):
    shared.add_(rank + 1)      # lands in the parent's tensor: the same bytes
    plain.add_(100)            # a copy: the parent's stays as it was


def _fail(rank):
    if rank == 1:
        raise ValueError("rank one is broken")


def _put(q, t):
    q.put(t * 2)


def test_shared_tensors_are_the_same_bytes_in_spawned_processes():
    shared = ddp.zeros(3).share_memory_()
    plain = ddp.zeros(3)
    assert shared.is_shared() and not plain.is_shared()
    mp.spawn(_add_rank, args=(shared, plain), nprocs=2)
    assert shared.tolist() == [3.0, 3.0, 3.0]        # 1 + 2 from the two children
    assert plain.tolist() == [0.0, 0.0, 0.0]


def test_module_share_memory_shares_parameters_with_a_process():
    model = ddp.nn.Linear(3, 2).share_memory()
    assert all(p.is_shared() for p in model.parameters())
    before = model.weight.detach().clone()
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_add_rank, args=(0, model.weight.data, ddp.zeros(1)))
    p.start()
    p.join()
    assert p.exitcode == 0
    assert ddp.allclose(model.weight.detach(), before + 1)


def test_queue_carries_tensors():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_put, args=(q, ddp.arange(3.0)))
    p.start()
    out = q.get(timeout=120)
    p.join()
    assert out.tolist() == [0.0, 2.0, 4.0]


def test_spawn_raises_the_child_traceback():
    with pytest.raises(mp.ProcessRaisedException, match="rank one is broken"):
        mp.spawn(_fail, nprocs=2)


def test_multiprocessing_has_pythons_names():
    for name in ("Process", "Queue", "set_start_method", "get_context", "Pool", "Manager"):
        assert hasattr(mp, name), name
    assert mp.get_sharing_strategy() in mp.get_all_sharing_strategies()


def test_backends_flags_are_settable_and_truthful():
    assert cudnn.is_available() is False and cudnn.version() is None
    old = cudnn.benchmark, cudnn.deterministic, cudnn.enabled
    cudnn.benchmark, cudnn.deterministic = True, True
    assert ddp.backends.cudnn.benchmark and ddp.backends.cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic, cudnn.enabled = old
    assert ddp.backends.mps.is_available() is False and ddp.backends.mps.is_built() is False
    assert ddp.backends.cuda.matmul.allow_tf32 in (True, False)


def test_accelerator_follows_cuda():
    assert ddp.accelerator.is_available() == ddp.cuda.is_available()
    dev = ddp.accelerator.current_accelerator()
    if ddp.cuda.is_available():
        assert dev == ddp.device("cuda")
    else:
        assert dev is None
        with pytest.raises(RuntimeError, match="no accelerator"):
            ddp.accelerator.current_device_index()


def test_device_flags():
    t = ddp.zeros(2)
    assert (t.is_xpu, t.is_mps, t.is_meta, t.is_cuda, t.is_pinned()) == (False,) * 5
    assert t.pin_memory() is t


def test_number_facts_and_switches_match_torch(oracle):
    def reference(torch):
        out = {}
        for name in ("float32", "float64", "float16", "bfloat16"):
            f = torch.finfo(getattr(torch, name))
            out[name] = [f.bits, f.eps, f.max, f.min, f.tiny, f.smallest_normal, f.resolution,
                         repr(f)]
        for name in ("int8", "int16", "int32", "int64", "uint8"):
            i = torch.iinfo(getattr(torch, name))
            out[name] = [i.bits, i.max, i.min, repr(i)]
        torch.set_printoptions(precision=2)
        out["short"] = repr(torch.tensor([1.23456, 2.0]))
        torch.set_printoptions(sci_mode=True)
        out["sci"] = repr(torch.tensor([1.5, 2.0]))
        torch.set_printoptions(profile="default")
        out["default"] = repr(torch.tensor([1.23456, 2.0]))
        out["typename"] = torch.typename(torch.ones(1, dtype=torch.int64))
        out["precision"] = torch.get_float32_matmul_precision()
        return out

    ref = oracle(reference)
    for name in ("float32", "float64", "float16", "bfloat16"):
        f = ddp.finfo(getattr(ddp, name))
        mine = [f.bits, f.eps, f.max, f.min, f.tiny, f.smallest_normal, f.resolution]
        assert mine == pytest.approx([float(v) for v in ref[name][:7]], rel=1e-12), name
        assert repr(f) == ref[name][7]
    for name in ("int8", "int16", "int32", "int64", "uint8"):
        i = ddp.iinfo(getattr(ddp, name))
        assert [i.bits, i.max, i.min] == [int(v) for v in ref[name][:3]] and repr(i) == ref[name][3]
    try:
        ddp.set_printoptions(precision=2)
        assert repr(ddp.tensor([1.23456, 2.0])) == ref["short"]
        ddp.set_printoptions(sci_mode=True)
        assert repr(ddp.tensor([1.5, 2.0])) == ref["sci"]
    finally:
        ddp.set_printoptions(profile="default")
    assert repr(ddp.tensor([1.23456, 2.0])) == ref["default"]
    assert ddp.typename(ddp.ones(1, dtype=ddp.int64)) == ref["typename"]
    assert ddp.get_float32_matmul_precision() == ref["precision"]


def test_switches_are_recorded_and_compile_is_identity():
    model = ddp.nn.Linear(2, 2)
    assert ddp.compile(model) is model and ddp.compile()(len) is len
    ddp.use_deterministic_algorithms(True)
    assert ddp.are_deterministic_algorithms_enabled()
    ddp.use_deterministic_algorithms(False)
    ddp.set_num_threads(1)
    assert ddp.get_num_threads() == 1
    with pytest.raises(RuntimeError, match="positive"):
        ddp.set_num_threads(0)
    assert ddp.version.__version__ == ddp.__version__ and ddp.version.cuda is None
    assert ddp.ones(2, 3).t().contiguous(memory_format=ddp.contiguous_format).is_contiguous()
