"""Legacy names old PyTorch programs use: FloatTensor/LongTensor/... constructors and type
strings, autograd.Variable, nn.DataParallel, cuda.device, sizes by keyword, negative sizes,
``add_(alpha, other)``, and torch.load's environment switch — against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

import ddp


NAMES = ["FloatTensor", "DoubleTensor", "HalfTensor", "BFloat16Tensor", "ByteTensor",
         "CharTensor", "ShortTensor", "IntTensor", "LongTensor", "BoolTensor"]


def test_legacy_types_match_torch(oracle):
    data = np.array([[1, 0, 3]], dtype=np.int32)

    def reference(torch):
        out = {}
        for name in NAMES:
            cls = getattr(torch, name)
            out[name] = {"dtype": str(cls(data).dtype).split(".")[-1],
                         "sized": list(cls(2, 3).shape), "empty": list(cls().shape),
                         "type": cls(data).type(), "list": cls([1, 0]).float().numpy(),
                         "isinstance": [isinstance(torch.zeros(1), cls),
                                        isinstance(torch.zeros(1, dtype=torch.int64), cls)]}
        t = torch.ones(2)
        out["conv"] = [t.type(torch.DoubleTensor).type(), t.type("torch.IntTensor").type(),
                       t.type(torch.int16).type()]
        return out

    ref = oracle(reference)
    for name in NAMES:
        cls, r = getattr(ddp, name), ref[name]
        assert cls(data).dtype.name == r["dtype"], name
        assert list(cls(2, 3).shape) == list(r["sized"]) and list(cls().shape) == list(r["empty"])
        assert cls(data).type() == r["type"]
        np.testing.assert_array_equal(cls([1, 0]).float().numpy(), r["list"])
        assert [isinstance(ddp.zeros(1), cls),
                isinstance(ddp.zeros(1, dtype=ddp.int64), cls)] == list(r["isinstance"])
    t = ddp.ones(2)
    assert [t.type(ddp.DoubleTensor).type(), t.type("torch.IntTensor").type(),
            t.type(ddp.int16).type()] == list(ref["conv"])
    assert not isinstance(ddp.zeros(1), ddp.cuda.FloatTensor)
    with pytest.raises(TypeError, match="expected ddp.float32"):
        ddp.FloatTensor(ddp.zeros(2, dtype=ddp.int64))
    with pytest.raises(ValueError, match="invalid type"):
        t.type("torch.NoSuchTensor")


def test_sizes_by_keyword_and_negative_sizes(oracle):
    def reference(torch):
        errors = {}
        for name, fn in (("zeros", lambda: torch.zeros(2, -3)), ("empty", lambda: torch.empty(-1)),
                         ("randn", lambda: torch.randn(size=(2, -2)))):
            try:
                fn()
            except Exception as exc:
                errors[name] = [type(exc).__name__, str(exc)]
        return {"shapes": [list(torch.empty(size=(2, 3)).shape),
                           list(torch.zeros(size=[4]).shape),
                           list(torch.ones(size=(1, 2)).shape),
                           list(torch.rand(size=(3,)).shape)],
                "errors": errors}

    ref = oracle(reference)
    assert [list(ddp.empty(size=(2, 3)).shape), list(ddp.zeros(size=[4]).shape),
            list(ddp.ones(size=(1, 2)).shape), list(ddp.rand(size=(3,)).shape)] == \
        [list(s) for s in ref["shapes"]]
    for name, fn in (("zeros", lambda: ddp.zeros(2, -3)), ("empty", lambda: ddp.empty(-1)),
                     ("randn", lambda: ddp.randn(size=(2, -2)))):
        kind, message = ref["errors"][name]
        with pytest.raises(getattr(__builtins__, kind, RuntimeError)) as info:
            fn()
        assert type(info.value).__name__ == kind
        assert message.split(":")[0] in str(info.value)    # torch's op name or its sentence
        assert "negative dimension" in str(info.value)


def test_add_with_alpha_first_matches_torch(oracle):
    def reference(torch):
        p = torch.ones(3)
        p.add_(-0.5, torch.tensor([1.0, 2.0, 3.0]))
        q = torch.ones(3).sub(2, torch.tensor([1.0, 1.0, 1.0]))
        return {"p": p.numpy(), "q": q.numpy()}

    ref = oracle(reference)
    p = ddp.ones(3)
    p.add_(-0.5, ddp.tensor([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(p.numpy(), ref["p"])
    np.testing.assert_allclose(ddp.ones(3).sub(2, ddp.ones(3)).numpy(), ref["q"])


def test_load_default_follows_torchs_environment_switch(tmp_path, monkeypatch):
    path = tmp_path / "whole.pt"
    ddp.save(ddp.nn.Linear(2, 1), path)
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    import pickle
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        ddp.load(path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert isinstance(ddp.load(path), ddp.nn.Linear)
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")      # wins, as in torch
    with pytest.raises(pickle.UnpicklingError):
        ddp.load(path)
    assert isinstance(ddp.load(path, weights_only=False), ddp.nn.Linear)


def test_data_parallel_is_a_plain_wrapper_like_torchs(oracle):
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)

    def reference(torch):
        inner = torch.nn.Linear(3, 2)
        net = torch.nn.DataParallel(inner)          # no GPU: a plain wrapper in torch too
        y = net(torch.tensor(x))
        y.sum().backward()
        return {"state": {k.replace(".", "_"): v.numpy() for k, v in net.state_dict().items()},
                "keys": list(net.state_dict()), "y": y.detach().numpy(),
                "gw": inner.weight.grad.numpy(), "repr": repr(net)}

    ref = oracle(reference)
    inner = ddp.nn.Linear(3, 2)
    net = ddp.nn.DataParallel(inner)
    net.load_state_dict({k: ddp.tensor(ref["state"][k.replace(".", "_")]) for k in ref["keys"]})
    assert list(net.state_dict()) == list(ref["keys"]) and repr(net) == ref["repr"]
    assert net.module is inner
    y = net(ddp.tensor(x))
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), ref["y"], rtol=1e-6)
    np.testing.assert_allclose(inner.weight.grad.numpy(), ref["gw"], rtol=1e-6)
    np.testing.assert_allclose(ddp.nn.parallel.data_parallel(inner, ddp.tensor(x)).detach()
                               .numpy(), ref["y"], rtol=1e-6)    # the same module, called


def test_variable_like_torchs(oracle):
    def reference(torch):
        from torch.autograd import Variable
        t = torch.ones(2)
        v = Variable(t, requires_grad=True)
        (v * 3).sum().backward()
        return {"same": Variable(t) is t, "leaf": v.is_leaf, "rg": v.requires_grad,
                "grad": v.grad.numpy(), "isinstance": isinstance(t, Variable),
                "shares": v.data_ptr() == t.data_ptr()}

    ref = oracle(reference)
    from ddp.autograd import Variable
    t = ddp.ones(2)
    v = Variable(t, requires_grad=True)
    (v * 3).sum().backward()
    assert (Variable(t) is t, v.is_leaf, v.requires_grad, isinstance(t, Variable)) == \
        (ref["same"], ref["leaf"], ref["rg"], ref["isinstance"])
    np.testing.assert_allclose(v.grad.numpy(), ref["grad"])
    assert (v.data_ptr() == t.data_ptr()) == ref["shares"]
    with pytest.raises(TypeError, match="Variable data has to be a tensor"):
        Variable([1.0, 2.0])


def test_cuda_device_context_is_a_no_op_for_none_and_negative():
    with ddp.cuda.device(None), ddp.cuda.device(-1):
        pass
    with pytest.raises(ValueError, match="Expected a cuda device"):
        ddp.cuda.device("cpu")


def test_randint_forms():
    assert ddp.randint(9, size=(2,)).shape == (2,) and ddp.randint(3, (4,)).shape == (4,)
    assert ddp.randint(1, 4, (3,)).shape == (3,)
    v = ddp.randint(low=2, high=5, size=(50,))
    assert int(v.min()) >= 2 and int(v.max()) < 5 and v.dtype == ddp.int64
