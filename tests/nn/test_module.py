"""nn.Module, its containers and the state dict: registration, traversal, modes, conversion,
hooks, printing, copying. Models are written once against a framework module ``fw`` (``ddp``
or ``torch``) so that the same code builds both; torch, when installed, is the oracle for key
names, printouts and error messages.
"""
import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import ddp
import ddp.nn as nn


def arr(t):
    return np.asarray(t.detach().cpu().numpy())


# ---------------------------------------------------------------------- models, for both

def tiny_linear_cls(fw):
    """A Linear-like module written against ``fw`` (so it runs on ddp and torch)."""

    class TinyLinear(fw.nn.Module):
        def __init__(self, i, o, bias=True):
            super().__init__()
            self.in_features, self.out_features = i, o
            self.weight = fw.nn.Parameter(fw.empty(o, i))
            if bias:
                self.bias = fw.nn.Parameter(fw.empty(o))
            else:
                self.register_parameter("bias", None)
            with fw.no_grad():
                self.weight.uniform_(-0.5, 0.5)
                if bias:
                    self.bias.uniform_(-0.5, 0.5)

        def forward(self, x):
            y = x @ self.weight.t()
            return y if self.bias is None else y + self.bias

        def extra_repr(self):
            return (f"in_features={self.in_features}, out_features={self.out_features}, "
                    f"bias={self.bias is not None}")

    return TinyLinear


def norm_cls(fw):
    """A BatchNorm-like module: affine parameters, running buffers (one integer), a
    non-persistent buffer, and a _load_from_state_dict that fills in a missing
    num_batches_tracked as BatchNorm does."""

    class Norm(fw.nn.Module):
        _version = 2

        def __init__(self, n):
            super().__init__()
            self.weight = fw.nn.Parameter(fw.ones(n))
            self.bias = fw.nn.Parameter(fw.zeros(n))
            self.register_buffer("running_mean", fw.zeros(n))
            self.register_buffer("running_var", fw.ones(n))
            self.register_buffer("num_batches_tracked", fw.tensor(0, dtype=fw.long))
            self.register_buffer("scratch", fw.zeros(n), persistent=False)

        def forward(self, x):
            return (x - self.running_mean) * self.weight + self.bias

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                                  missing_keys, unexpected_keys, error_msgs):
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                state_dict[key] = fw.tensor(0, dtype=fw.long)
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                          missing_keys, unexpected_keys, error_msgs)

        def extra_repr(self):
            return f"{self.weight.shape[0]}"

    return Norm


def build_net(fw):
    """A tree using every container kind."""
    Lin, Norm = tiny_linear_cls(fw), norm_cls(fw)
    nn_ = fw.nn

    class Net(nn_.Module):
        def __init__(self):
            super().__init__()
            self.features = nn_.Sequential(OrderedDict([("fc1", Lin(4, 8)), ("bn", Norm(8)),
                                                        ("fc2", Lin(8, 8, bias=False))]))
            self.blocks = nn_.ModuleList([Lin(8, 8) for _ in range(3)] + [Norm(8)])
            self.heads = nn_.ModuleDict({"cls": Lin(8, 3), "reg": nn_.Sequential(Lin(8, 1))})
            self.scales = nn_.ParameterList([fw.ones(3), nn_.Parameter(fw.zeros(2))])
            self.extra = nn_.ParameterDict({"beta": fw.ones(1), "alpha": fw.zeros(2)})
            self.register_buffer("step", fw.zeros(()))

        def forward(self, x):
            x = self.features(x)
            for b in self.blocks:
                x = b(x)
            return self.heads["cls"](x) * self.scales[0] + self.extra["beta"]

    return Net()


def state_of(module):
    """A torch model's state as NumPy arrays (what an oracle answer holds)."""
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def member_names(net):
    """The names each traversal gives, for comparing ddp with torch."""
    names = {fn: [n for n, _ in getattr(net, fn)()] for fn in
             ("named_parameters", "named_buffers", "named_modules", "named_children")}
    names["params_prefixed"] = [n for n, _ in net.named_parameters(prefix="model")]
    names["modules_prefixed"] = [n for n, _ in net.named_modules(prefix="m")]
    names["counts"] = [len(list(net.parameters())), len(list(net.buffers())),
                       len(list(net.modules()))]
    return names


# ====================================================================== registration

class TestRegistration:
    def test_attributes_register_in_order(self):
        Lin = tiny_linear_cls(ddp)
        m = nn.Module()
        m.b = nn.Parameter(ddp.zeros(1))
        m.a = nn.Parameter(ddp.zeros(1))
        m.register_buffer("buf", ddp.zeros(2))
        m.child = Lin(1, 1)
        m.plain = 3
        assert list(m._parameters) == ["b", "a"]
        assert list(m._buffers) == ["buf"]
        assert list(m._modules) == ["child"]
        assert m.plain == 3 and "plain" in m.__dict__
        assert m.b is m._parameters["b"] and m.child is m._modules["child"]
        assert [n for n, _ in m.named_parameters()] == ["b", "a", "child.weight", "child.bias"]

    def test_plain_dicts_hold_ordered_dicts(self):
        m = nn.Module()
        assert isinstance(m._parameters, OrderedDict) and isinstance(m._modules, OrderedDict)
        assert isinstance(m._buffers, OrderedDict) and m._non_persistent_buffers_set == set()

    def test_assigning_none_and_tensors_to_a_parameter_slot(self):
        m = nn.Module()
        m.w = nn.Parameter(ddp.ones(2))
        with pytest.raises(TypeError, match="cannot assign"):
            m.w = ddp.ones(2)
        m.w = None
        assert m.w is None and list(m.parameters()) == []
        assert "w" in m._parameters

    def test_buffer_slot_and_buffer_class(self):
        m = nn.Module()
        m.register_buffer("rm", ddp.zeros(2))
        m.rm = ddp.ones(2)                                # stays a buffer
        assert "rm" in m._buffers and float(m.rm.sum()) == 2
        with pytest.raises(TypeError):
            m.rm = 5
        m.cache = nn.Buffer(ddp.zeros(3), persistent=False)
        assert "cache" in m._buffers and "cache" in m._non_persistent_buffers_set
        assert list(m.state_dict()) == ["rm"]
        m.count = nn.Buffer(ddp.tensor(0, dtype=ddp.long))
        assert m.count.dtype == ddp.int64 and "count" in m.state_dict()

    def test_reassigning_moves_between_kinds(self):
        m = nn.Module()
        m.x = nn.Module()
        m.x = nn.Parameter(ddp.ones(1))                   # module -> parameter
        assert "x" in m._parameters and "x" not in m._modules
        with pytest.raises(TypeError, match="as parameter 'x'"):
            m.x = nn.Module()                             # a parameter slot takes Parameters
        m.y = 1
        m.y = nn.Parameter(ddp.ones(1))                   # plain attribute -> parameter
        assert "y" in m._parameters and "y" not in m.__dict__

    def test_delattr(self):
        m = nn.Module()
        m.w = nn.Parameter(ddp.ones(1))
        m.register_buffer("b", ddp.ones(1), persistent=False)
        m.c = nn.Module()
        m.o = 1
        del m.w, m.b, m.c, m.o
        assert not m._parameters and not m._buffers and not m._modules
        assert not m._non_persistent_buffers_set
        with pytest.raises(AttributeError):
            m.w

    def test_name_validation(self):
        m = nn.Module()
        m.attr = 1
        for register in (lambda n: m.register_parameter(n, None),
                         lambda n: m.register_buffer(n, None),
                         lambda n: m.add_module(n, None)):
            with pytest.raises(KeyError):
                register("a.b")
            with pytest.raises(KeyError):
                register("")
            with pytest.raises(KeyError, match="already exists"):
                register("attr")
        with pytest.raises(TypeError):
            m.register_parameter("p", ddp.ones(1))
        with pytest.raises(TypeError):
            m.register_buffer("b", [1.0])
        with pytest.raises(TypeError):
            m.add_module("m", 3)
        with pytest.raises(ValueError, match="non-leaf"):
            w = ddp.ones(2, requires_grad=True)
            p = nn.Parameter(ddp.ones(2))
            p.grad_fn = (w * 2).grad_fn
            m.register_parameter("q", p)

    def test_assign_before_init(self):
        class Bad(nn.Module):
            def __init__(self):
                self.w = nn.Parameter(ddp.ones(1))

        with pytest.raises(AttributeError, match="before Module.__init__"):
            Bad()

        class Bad2(nn.Module):
            def __init__(self):
                self.m = nn.Module()

        with pytest.raises(AttributeError, match="before Module.__init__"):
            Bad2()

    def test_unknown_attribute_message(self):
        with pytest.raises(AttributeError, match="'Module' object has no attribute 'nope'"):
            nn.Module().nope

    def test_init_rejects_arguments(self):
        with pytest.raises(TypeError):
            nn.Module(1)
        with pytest.raises(TypeError):
            nn.Module(x=1)

    def test_forward_missing(self):
        with pytest.raises(NotImplementedError, match='missing the required "forward"'):
            nn.Module()(1)

    def test_get_submodule_parameter_buffer(self):
        net = build_net(ddp)
        assert net.get_submodule("") is net
        assert net.get_submodule("features.bn") is net.features.bn
        assert net.get_parameter("features.fc1.weight") is net.features.fc1.weight
        assert net.get_buffer("features.bn.running_mean") is net.features.bn.running_mean
        assert net.get_parameter("scales.1") is net.scales[1]
        with pytest.raises(AttributeError, match="has no attribute `nope`"):
            net.get_submodule("features.nope")
        with pytest.raises(AttributeError, match="is not an nn.Module"):
            net.get_submodule("features.fc1.weight")
        with pytest.raises(AttributeError, match="is not an nn.Parameter"):
            net.get_parameter("features.bn.running_mean")
        with pytest.raises(AttributeError, match="is not a buffer"):
            net.get_buffer("features.bn.weight")
        new = nn.Sequential()
        net.set_submodule("heads.reg", new)
        assert net.heads["reg"] is new

    def test_dir_lists_members(self):
        net = build_net(ddp)
        d = dir(net)
        assert {"features", "blocks", "step", "forward", "training"} <= set(d)
        assert "0" not in dir(net.blocks) and d == sorted(d)


# ====================================================================== traversal

class TestTraversal:
    def test_named_members_against_torch(self, oracle):
        a = build_net(ddp)
        want = oracle(lambda torch: member_names(build_net(torch)))
        got = member_names(a)
        for key in want:
            if key == "counts":
                assert got[key] == [int(n) for n in want[key]], key
            else:
                assert got[key] == list(want[key]), key
        assert [n for n, _ in a.extra.named_parameters(recurse=False)] == ["alpha", "beta"]
        assert [n for n, _ in a.named_parameters(recurse=False)] == []
        assert [n for n, _ in a.named_buffers(recurse=False)] == ["step"]
        assert len(list(a.buffers())) == 9
        assert len(list(a.children())) == 5

    def test_named_parameters_prefix_names(self):
        Lin = tiny_linear_cls(ddp)
        net = nn.Sequential(Lin(2, 2), nn.Sequential(Lin(2, 1, bias=False)))
        assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "1.0.weight"]
        assert [n for n, _ in net.named_modules()] == ["", "0", "1", "1.0"]

    def test_shared_parameters_and_modules(self, oracle):
        def make(fw):
            Lin = tiny_linear_cls(fw)
            shared = Lin(2, 2)
            other = Lin(2, 2)
            other.weight = shared.weight                   # tied weight
            return fw.nn.Sequential(shared, other, shared)

        def names(net):
            return [[n for n, _ in net.named_parameters()],
                    [n for n, _ in net.named_parameters(remove_duplicate=False)],
                    [n for n, _ in net.named_modules()],
                    [n for n, _ in net.named_modules(remove_duplicate=False)],
                    list(net.state_dict())]

        a = make(ddp)
        assert len(list(a.parameters())) == 3
        assert names(a) == oracle(lambda torch: names(make(torch)))
        assert len(list(a.children())) == 2

    def test_apply_visits_children_first(self):
        net = nn.Sequential(nn.Sequential(), nn.ModuleList())
        seen = []
        assert net.apply(lambda m: seen.append(type(m).__name__)) is net
        assert seen == ["Sequential", "ModuleList", "Sequential"]


# ====================================================================== modes and grads

class TestModesAndGrads:
    def test_train_eval_propagate(self):
        net = build_net(ddp)
        assert all(m.training for m in net.modules())
        assert net.eval() is net
        assert not any(m.training for m in net.modules())
        net.train()
        assert all(m.training for m in net.modules())
        net.blocks.train(False)
        assert net.training and not net.blocks[0].training
        with pytest.raises(ValueError):
            net.train("yes")

    def test_requires_grad_(self):
        net = build_net(ddp)
        net.features.requires_grad_(False)
        assert not any(p.requires_grad for p in net.features.parameters())
        assert all(p.requires_grad for p in net.blocks.parameters())

    def test_zero_grad_modes(self):
        Lin = tiny_linear_cls(ddp)
        m = Lin(3, 2)
        m(ddp.ones(4, 3)).sum().backward()
        g = m.weight.grad
        m.zero_grad(set_to_none=False)
        assert m.weight.grad is g and float(g.abs().sum()) == 0.0
        m(ddp.ones(4, 3)).sum().backward()
        m.zero_grad()
        assert m.weight.grad is None and m.bias.grad is None

    def test_forward_backward_against_torch(self, oracle):
        x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)

        def reference(torch):
            b = build_net(torch)
            state = state_of(b)
            yb = b(torch.tensor(x))
            yb.square().sum().backward()
            return {"state": state, "y": yb.detach().numpy(),
                    "grads": [(n, None if p.grad is None else p.grad.numpy())
                              for n, p in b.named_parameters()]}
        want = oracle(reference)
        a = build_net(ddp)
        a.load_state_dict({k: ddp.tensor(v) for k, v in want["state"].items()})
        ya = a(ddp.tensor(x))
        np.testing.assert_allclose(arr(ya), want["y"], rtol=1e-5, atol=1e-5)
        ya.square().sum().backward()
        assert [n for n, _ in a.named_parameters()] == [n for n, _ in want["grads"]]
        for (na, pa), (_, gb) in zip(a.named_parameters(), want["grads"]):
            if gb is None:
                assert pa.grad is None, na
            else:
                np.testing.assert_allclose(arr(pa.grad), gb, rtol=1e-4, atol=1e-5)


# ====================================================================== conversion

class TestConversion:
    def test_to_dtype_keeps_parameter_identity(self):
        net = build_net(ddp)
        params = list(net.parameters())
        net(ddp.ones(2, 4)).sum().backward()
        assert net.to(ddp.float64) is net
        assert [id(p) for p in net.parameters()] == [id(p) for p in params]
        assert all(p.dtype == ddp.float64 and p.requires_grad for p in params)
        assert all(p.grad is None or p.grad.dtype == ddp.float64 for p in params)
        assert net.features.bn.running_mean.dtype == ddp.float64
        assert net.features.bn.num_batches_tracked.dtype == ddp.int64   # integers keep theirs
        # the model still trains in the new dtype
        net.zero_grad()
        net(ddp.ones(2, 4, dtype=ddp.float64)).sum().backward()
        assert params[0].grad.dtype == ddp.float64

    def test_float_double_half_and_to_tensor(self):
        Lin = tiny_linear_cls(ddp)
        m = Lin(2, 2)
        w = m.weight
        assert m.double().weight is w and w.dtype == ddp.float64
        assert m.half().weight.dtype == ddp.float16
        assert m.float().weight.dtype == ddp.float32
        m.to(ddp.zeros(1, dtype=ddp.float64))
        assert w.dtype == ddp.float64
        m.to(dtype=ddp.float32)
        assert w.dtype == ddp.float32
        assert m.to("cpu").weight is w and m.cpu().weight.device == ddp.device("cpu")
        if ddp.bfloat16 is not None:
            assert m.bfloat16().weight.dtype == ddp.bfloat16

    def test_to_rejects_integer_dtype(self):
        with pytest.raises(TypeError, match="floating point"):
            nn.Module().to(ddp.int64)

    def test_optimizer_style_reference_sees_conversion(self):
        Lin = tiny_linear_cls(ddp)
        m = Lin(2, 2)
        held = [p for p in m.parameters()]
        m.double()
        out = m(ddp.ones(1, 2, dtype=ddp.float64)).sum()
        out.backward()
        assert held[0].grad is not None and held[0].grad.dtype == ddp.float64

    @pytest.mark.gpu
    def test_to_cuda_keeps_identity(self):
        net = build_net(ddp)
        params = list(net.parameters())
        net.cuda()
        assert [id(p) for p in net.parameters()] == [id(p) for p in params]
        assert all(p.device.type == "cuda" for p in net.parameters())
        assert all(b.device.type == "cuda" for b in net.buffers())
        y = net(ddp.ones(2, 4, device="cuda"))
        y.sum().backward()
        assert params[0].grad.device.type == "cuda"
        sd = net.state_dict()
        net.cpu()
        assert params[0].device.type == "cpu"
        net.load_state_dict(sd)                       # cuda tensors copied into cpu params


# ====================================================================== state dict

class TestStateDict:
    def test_keys_match_torch(self, oracle):
        a = build_net(ddp)
        want = oracle(lambda torch: [list(build_net(torch).state_dict()),
                                     list(build_net(torch).state_dict()._metadata)])
        assert list(a.state_dict()) == want[0]
        assert "features.bn.num_batches_tracked" in a.state_dict()
        assert "features.bn.scratch" not in a.state_dict()        # non-persistent
        assert list(a.state_dict()._metadata) == want[1]

    def test_keys_without_torch(self):
        Lin = tiny_linear_cls(ddp)
        net = nn.Sequential(OrderedDict([("fc1", Lin(2, 3)), ("bn", norm_cls(ddp)(3))]))
        assert list(net.state_dict()) == ["fc1.weight", "fc1.bias", "bn.weight", "bn.bias",
                                          "bn.running_mean", "bn.running_var",
                                          "bn.num_batches_tracked"]
        seq = nn.Sequential(Lin(1, 1), Lin(1, 1, bias=False))
        assert list(seq.state_dict()) == ["0.weight", "0.bias", "1.weight"]

    def test_values_are_detached_views(self):
        Lin = tiny_linear_cls(ddp)
        m = Lin(2, 2)
        sd = m.state_dict()
        assert type(sd) is OrderedDict
        w = sd["weight"]
        assert not w.requires_grad and not isinstance(w, nn.Parameter)
        with ddp.no_grad():
            m.weight.fill_(3.0)
        assert float(w[0, 0]) == 3.0                                # shares storage
        kv = m.state_dict(keep_vars=True)
        assert kv["weight"] is m.weight
        assert list(m.state_dict(prefix="model.")) == ["model.weight", "model.bias"]

    def test_round_trip_in_place(self):
        a, b = build_net(ddp), build_net(ddp)
        params_b = list(b.parameters())
        res = b.load_state_dict(a.state_dict())
        assert res.missing_keys == [] and res.unexpected_keys == []
        assert repr(res) == "<All keys matched successfully>"
        assert [id(p) for p in b.parameters()] == [id(p) for p in params_b]
        for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            np.testing.assert_array_equal(arr(va), arr(vb), err_msg=k)
            assert va.dtype == vb.dtype
        assert all(p.requires_grad for p in b.parameters())

    def test_load_from_torch_state_dict(self, oracle):
        want = oracle(lambda torch: [(k, v.numpy()) for k, v in
                                     build_net(torch).state_dict().items()])
        a = build_net(ddp)
        a.load_state_dict(OrderedDict((k, ddp.tensor(v)) for k, v in want))
        assert list(a.state_dict()) == [k for k, _ in want]
        for (k, va), (_, vb) in zip(a.state_dict().items(), want):
            np.testing.assert_array_equal(arr(va), vb, err_msg=k)
            assert va.dtype.name == str(vb.dtype), k
        try:                                         # torch tensors accepted (CPU), where
            import torch                             # torch is installed
        except ImportError:
            return
        b = build_net(torch)
        a.load_state_dict(b.state_dict())
        for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            np.testing.assert_array_equal(arr(va), vb.numpy(), err_msg=k)

    def test_strict_errors_match_torch(self, oracle):
        def messages(fw):
            net = build_net(fw)
            sd = build_net(fw).state_dict()
            del sd["features.fc1.bias"], sd["extra.alpha"]
            sd["features.fc9.weight"] = fw.zeros(2)
            sd["unknown"] = fw.zeros(1)
            sd["blocks.0.weight"] = fw.zeros(8, 7)
            with pytest.raises(RuntimeError) as info:
                net.load_state_dict(sd)
            return str(info.value)

        mine = messages(ddp)
        assert mine == oracle(lambda torch: messages(torch).replace("torch.Size", "ddp.Size"))
        assert mine.startswith("Error(s) in loading state_dict for Net:\n\tMissing key(s) in "
                               'state_dict: "features.fc1.bias", "extra.alpha". ')
        assert "size mismatch for blocks.0.weight: copying a param with shape " \
               "ddp.Size([8, 7]) from checkpoint, the shape in current model is " \
               "ddp.Size([8, 8])." in mine

    def test_non_strict_reports_keys(self):
        Lin = tiny_linear_cls(ddp)
        m = nn.Sequential(Lin(2, 2))
        res = m.load_state_dict({"0.weight": ddp.ones(2, 2), "1.weight": ddp.ones(1)},
                                strict=False)
        assert res.missing_keys == ["0.bias"] and res.unexpected_keys == ["1.weight"]
        assert res == (["0.bias"], ["1.weight"])
        assert float(m[0].weight.sum()) == 4.0
        with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
            m.load_state_dict({"0.weight": ddp.ones(3, 2)}, strict=False)

    def test_without_torch_error_text(self):
        Lin = tiny_linear_cls(ddp)
        m = nn.Sequential(Lin(2, 2))
        with pytest.raises(RuntimeError) as info:
            m.load_state_dict({"0.weight": ddp.ones(2, 3), "x": ddp.ones(1)})
        assert str(info.value) == (
            "Error(s) in loading state_dict for Sequential:\n"
            "\tMissing key(s) in state_dict: \"0.bias\". \n"
            "\tUnexpected key(s) in state_dict: \"x\". \n"
            "\tsize mismatch for 0.weight: copying a param with shape ddp.Size([2, 3]) from "
            "checkpoint, the shape in current model is ddp.Size([2, 2]).")

    def test_load_casts_and_keeps_dtype(self):
        Lin = tiny_linear_cls(ddp)
        m = Lin(2, 2).double()
        m.load_state_dict({"weight": ddp.ones(2, 2), "bias": ddp.zeros(2)})
        assert m.weight.dtype == ddp.float64 and float(m.weight.sum()) == 4.0

    def test_assign(self):
        Lin = tiny_linear_cls(ddp)
        m = Lin(2, 2)
        m.weight.requires_grad_(False)
        new_w = ddp.full((2, 2), 7.0, dtype=ddp.float64)
        m.load_state_dict({"weight": new_w, "bias": ddp.zeros(2)}, assign=True)
        assert isinstance(m.weight, nn.Parameter) and m.weight.dtype == ddp.float64
        assert not m.weight.requires_grad and m.bias.requires_grad
        assert float(m.weight.sum()) == 28.0

    def test_load_from_state_dict_override(self):
        Norm = norm_cls(ddp)
        n = Norm(3)
        sd = n.state_dict()
        assert sd._metadata[""] == {"version": 2}
        del sd["num_batches_tracked"]                  # an "old" checkpoint
        with ddp.no_grad():
            n.num_batches_tracked.fill_(5)
        assert n.load_state_dict(sd).missing_keys == []
        assert int(n.num_batches_tracked) == 0

    def test_save_to_state_dict_override_and_extra_state(self):
        class Custom(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(ddp.ones(1))
                self.tag = "a"

            def _save_to_state_dict(self, destination, prefix, keep_vars):
                super()._save_to_state_dict(destination, prefix, keep_vars)
                destination[prefix + "w_twice"] = self.w.detach() * 2

            def _load_from_state_dict(self, state_dict, prefix, *args):
                state_dict.pop(prefix + "w_twice", None)
                super()._load_from_state_dict(state_dict, prefix, *args)

            def get_extra_state(self):
                return {"tag": self.tag}

            def set_extra_state(self, state):
                self.tag = state["tag"]

        net = nn.Sequential(Custom())
        sd = net.state_dict()
        assert list(sd) == ["0.w", "0._extra_state", "0.w_twice"]
        other = nn.Sequential(Custom())
        sd["0._extra_state"] = {"tag": "b"}
        other.load_state_dict(sd)
        assert other[0].tag == "b"

    def test_load_state_dict_hooks(self):
        m = nn.Sequential(tiny_linear_cls(ddp)(1, 1))
        seen = []
        m.register_load_state_dict_post_hook(lambda mod, keys: seen.append(list(keys[0])))
        m[0].register_load_state_dict_pre_hook(lambda mod, sd, prefix, *a: seen.append(prefix))
        m.load_state_dict({"0.weight": ddp.ones(1, 1)}, strict=False)
        assert seen == ["0.", ["0.bias"]]

    def test_non_dict_rejected(self):
        with pytest.raises(TypeError, match="dict-like"):
            nn.Module().load_state_dict([1, 2])


# ====================================================================== hooks

class TestHooks:
    def test_pre_hook_modifies_input_and_forward_hook_output(self):
        Lin = tiny_linear_cls(ddp)
        m = Lin(2, 1)
        with ddp.no_grad():
            m.weight.fill_(1.0)
            m.bias.fill_(0.0)
        x = ddp.ones(1, 2)
        calls = []
        h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
        h2 = m.register_forward_hook(lambda mod, args, out: calls.append(float(args[0].sum())))
        h3 = m.register_forward_hook(lambda mod, args, out: out + 100)
        assert float(m(x)) == 104.0 and calls == [4.0]
        h3.remove()
        assert float(m(x)) == 4.0
        h1.remove()
        h2.remove()
        assert float(m(x)) == 2.0 and calls == [4.0, 4.0]
        assert not m._forward_hooks and not m._forward_pre_hooks

    def test_pre_hook_single_value_and_kwargs(self):
        class Add(nn.Module):
            def forward(self, x, y=0):
                return x + y

        m = Add()
        m.register_forward_pre_hook(lambda mod, args: args[0] + 1)   # non-tuple result
        assert m(1) == 2
        m2 = Add()
        m2.register_forward_pre_hook(lambda mod, args, kwargs: (args, {"y": 10}),
                                     with_kwargs=True)
        m2.register_forward_hook(lambda mod, args, kwargs, out: out + kwargs["y"],
                                 with_kwargs=True)
        assert m2(1) == 21
        m3 = Add()
        m3.register_forward_pre_hook(lambda mod, args, kwargs: 5, with_kwargs=True)
        with pytest.raises(RuntimeError, match="forward pre-hook must return"):
            m3(1)

    def test_prepend_and_context_manager(self):
        m = nn.Sequential()
        order = []
        m.register_forward_hook(lambda *a: order.append("a"))
        with m.register_forward_hook(lambda *a: order.append("b"), prepend=True):
            m(1)
        m(1)
        assert order == ["b", "a", "a"]

    def test_always_call_hook_runs_on_error(self):
        class Boom(nn.Module):
            def forward(self, x):
                raise ValueError("boom")

        m = Boom()
        seen = []
        m.register_forward_hook(lambda mod, args, out: seen.append(out), always_call=True)
        with pytest.raises(ValueError):
            m(1)
        assert seen == [None]

    def test_global_forward_hooks(self):
        from ddp.nn.module import register_module_forward_hook, register_module_forward_pre_hook
        seen = []
        h1 = register_module_forward_pre_hook(lambda m, a: seen.append("pre"))
        h2 = register_module_forward_hook(lambda m, a, o: seen.append("post"))
        try:
            nn.Sequential()(1)
        finally:
            h1.remove()
            h2.remove()
        nn.Sequential()(1)
        assert seen == ["pre", "post"]

    def test_full_backward_hook_against_torch(self, oracle):
        def run(fw):
            Lin = tiny_linear_cls(fw)
            fw.manual_seed(0)
            m = Lin(3, 2)
            with fw.no_grad():
                m.weight.copy_(fw.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]]))
                m.bias.zero_()
            record = {}

            def hook(mod, gin, gout):
                record["gin"] = [None if g is None else g.detach().numpy().copy() for g in gin]
                record["gout"] = [g.detach().numpy().copy() for g in gout]
                return (gin[0] * 2,)

            def pre(mod, gout):
                record["pre"] = gout[0].detach().numpy().copy()

            m.register_full_backward_hook(hook)
            m.register_full_backward_pre_hook(pre)
            x = fw.tensor([[1.0, 1.0, 2.0]], requires_grad=True)
            (m(x) * fw.tensor([[1.0, 3.0]])).sum().backward()
            return record, x.grad.numpy(), m.weight.grad.numpy()

        (ra, xa, wa), (rb, xb, wb) = run(ddp), oracle(run)
        np.testing.assert_allclose(ra["gout"][0], rb["gout"][0])
        np.testing.assert_allclose(ra["pre"], rb["pre"])
        np.testing.assert_allclose(ra["gin"][0], rb["gin"][0])
        np.testing.assert_allclose(xa, xb)                 # the hook's doubled grad_input
        np.testing.assert_allclose(wa, wb)

    def test_full_backward_hook_without_input_grad(self):
        Lin = tiny_linear_cls(ddp)
        m = Lin(2, 2)
        seen = []
        m.register_full_backward_hook(lambda mod, gin, gout: seen.append((gin, gout[0].shape)))
        m(ddp.ones(3, 2)).sum().backward()
        assert seen == [((None,), ddp.Size([3, 2]))]
        assert m.weight.grad is not None


# ====================================================================== printing

def repr_tree(fw):
    Lin, Norm = tiny_linear_cls(fw), norm_cls(fw)
    nn_ = fw.nn
    return nn_.Sequential(OrderedDict([
        ("stem", Lin(3, 4)),
        ("body", nn_.ModuleList([Lin(4, 4), Lin(4, 4), Lin(4, 4, bias=False), Norm(4),
                                 nn_.Sequential(Lin(4, 4), Norm(4)),
                                 nn_.Sequential(Lin(4, 4), Norm(4))])),
        ("heads", nn_.ModuleDict({"a": Lin(4, 1), "b": nn_.Sequential()})),
        ("empty_list", nn_.ModuleList()),
        ("empty", nn_.Sequential()),
    ]))


class TestRepr:
    def test_tree_matches_torch(self, oracle):
        want = oracle(lambda torch: [repr(repr_tree(torch)),
                                     repr(build_net(torch)).replace("torch.", "ddp.")])
        assert [repr(repr_tree(ddp)), repr(build_net(ddp))] == want

    def test_tree_without_torch(self):
        Lin = tiny_linear_cls(ddp)
        net = nn.Sequential(Lin(1, 2), nn.ModuleList([Lin(2, 2), Lin(2, 2)]))
        assert repr(net) == (
            "Sequential(\n"
            "  (0): TinyLinear(in_features=1, out_features=2, bias=True)\n"
            "  (1): ModuleList(\n"
            "    (0-1): 2 x TinyLinear(in_features=2, out_features=2, bias=True)\n"
            "  )\n"
            ")")
        assert repr(nn.Sequential()) == "Sequential()"
        assert repr(nn.ModuleList()) == "ModuleList()"

    def test_parameter_containers(self, oracle):
        def make(fw):
            return fw.nn.Sequential(
                fw.nn.ParameterList([fw.nn.Parameter(fw.ones(2, 3)), fw.zeros(4)]),
                fw.nn.ParameterDict({"x": fw.ones(5), "y": fw.zeros(1, 1)}),
                fw.nn.ParameterList([fw.ones(1)]))
        assert repr(make(ddp)) == oracle(lambda torch: repr(make(torch)).replace("torch.", "ddp."))

    def test_multiline_extra_repr(self):
        class M(nn.Module):
            def extra_repr(self):
                return "a=1\nb=2"
        assert repr(M()) == "M(\n  a=1\n  b=2\n)"
        assert nn.Module()._get_name() == "Module"


# ====================================================================== copying

class PickleLinear(nn.Module):
    """A module class importable by pickle (local classes are not)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(ddp.randn(2, 2))
        self.register_buffer("running", ddp.randn(2))


class TestCopy:
    def test_deepcopy_independent(self):
        net = build_net(ddp)
        twin = copy.deepcopy(net)
        pa, pb = list(net.parameters()), list(twin.parameters())
        assert len(pa) == len(pb) and all(a is not b for a, b in zip(pa, pb))
        assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in pb)
        with ddp.no_grad():
            for p in pb:
                p.fill_(9.0)
            twin.features.bn.running_mean.fill_(9.0)
        assert not any(bool((p == 9.0).all()) for p in pa)
        assert float(net.features.bn.running_mean.sum()) == 0.0
        assert twin.features.bn.num_batches_tracked.dtype == ddp.int64
        assert "scratch" in twin.features.bn._non_persistent_buffers_set
        x = ddp.ones(2, 4)
        twin(x).sum().backward()
        assert all(p.grad is None for p in pa)

    def test_deepcopy_keeps_tying(self):
        Lin = tiny_linear_cls(ddp)
        a, b = Lin(2, 2), Lin(2, 2)
        b.weight = a.weight
        net = copy.deepcopy(nn.Sequential(a, b))
        assert net[0].weight is net[1].weight and net[0].weight is not a.weight

    def test_pickle_round_trip(self):
        net = nn.Sequential(PickleLinear(), nn.ModuleList([PickleLinear()]),
                            nn.ParameterDict({"a": ddp.ones(2)}))
        net.register_buffer("count", ddp.tensor(3, dtype=ddp.long))
        back = pickle.loads(pickle.dumps(net))
        for (k, va), (_, vb) in zip(net.state_dict().items(), back.state_dict().items()):
            np.testing.assert_array_equal(arr(va), arr(vb), err_msg=k)
        assert repr(back) == repr(net)

    def test_setstate_fills_missing_fields(self):
        m = nn.Module()
        state = m.__getstate__()
        del state["_forward_hooks_with_kwargs"], state["_non_persistent_buffers_set"]
        m2 = nn.Module.__new__(nn.Module)
        m2.__setstate__(state)
        assert m2._forward_hooks_with_kwargs == {} and m2._non_persistent_buffers_set == set()
        m2.register_forward_hook(lambda *a: None)


# ====================================================================== containers

class TestSequential:
    def make(self, n=4):
        return nn.Sequential(*[nn.Sequential() for _ in range(n)])

    def test_indexing(self):
        s = self.make()
        mods = list(s)
        assert s[0] is mods[0] and s[-1] is mods[3] and s[-4] is mods[0]
        with pytest.raises(IndexError):
            s[4]
        with pytest.raises(IndexError):
            s[-5]
        sl = s[1:3]
        assert isinstance(sl, nn.Sequential) and list(sl) == mods[1:3]
        assert list(sl._modules) == ["1", "2"]                   # keys kept, as PyTorch
        assert list(s[::-1]) == mods[::-1]
        assert len(s) == 4

    def test_ordered_dict_and_forward(self):
        Lin = tiny_linear_cls(ddp)
        s = nn.Sequential(OrderedDict([("a", Lin(2, 3)), ("b", Lin(3, 1))]))
        assert list(s._modules) == ["a", "b"] and s.a is s[0]
        x = ddp.ones(5, 2)
        np.testing.assert_allclose(arr(s(x)), arr(s.b(s.a(x))))

    def test_mutation(self):
        s = self.make(3)
        m0, m1, m2 = list(s)
        new = nn.ModuleList()
        s.append(new)
        assert s[3] is new
        ins = nn.ModuleDict()
        s.insert(1, ins)
        assert list(s) == [m0, ins, m1, m2, new] and list(s._modules) == list("01234")
        s.insert(-1, nn.Sequential())
        assert len(s) == 6 and s[5] is new
        del s[1]
        assert list(s)[:3] == [m0, m1, m2] and list(s._modules) == list("01234")
        del s[3:]
        assert list(s) == [m0, m1, m2]
        s[-1] = new
        assert s[2] is new
        s.extend([m2])
        assert s[3] is m2
        assert s.pop(0) is m0 and len(s) == 3
        with pytest.raises(AssertionError):
            s.insert(0, 5)
        with pytest.raises(IndexError):
            s.insert(10, nn.Sequential())

    def test_add_mul(self):
        a, b = self.make(2), self.make(1)
        c = a + b
        assert list(c) == list(a) + list(b)
        d = a * 2
        assert len(d) == 4 and d[2] is a[0]
        assert len(2 * a) == 4
        a += b
        assert len(a) == 3
        a *= 2
        assert len(a) == 6
        with pytest.raises(ValueError):
            a + 1
        with pytest.raises(ValueError):
            a * 0

    def test_keys_against_torch(self, oracle):
        def make(fw):
            Lin = tiny_linear_cls(fw)
            s = fw.nn.Sequential(Lin(1, 1), Lin(1, 1), Lin(1, 1))
            s.insert(1, Lin(1, 1, bias=False))
            del s[0]
            s.append(Lin(1, 1))
            return s
        assert list(make(ddp).state_dict()) == oracle(lambda torch: list(make(torch).state_dict()))


class TestModuleListDict:
    def test_module_list(self):
        ml = nn.ModuleList([nn.Sequential(), nn.Sequential()])
        a, b = list(ml)
        assert ml[-1] is b and len(ml) == 2
        assert isinstance(ml[:1], nn.ModuleList) and list(ml[:1]) == [a]
        c = nn.Sequential()
        ml.append(c)
        ml.insert(0, nn.Sequential())
        assert list(ml)[1:] == [a, b, c] and list(ml._modules) == ["0", "1", "2", "3"]
        ml += [nn.Sequential()]
        ml.extend([nn.Sequential()])
        assert len(ml) == 6
        del ml[0]
        assert ml[0] is a and list(ml._modules) == list("01234")
        del ml[::2]
        assert list(ml._modules) == ["0", "1"] and ml[0] is b
        ml[1] = c
        assert ml[1] is c
        assert ml.pop(1) is c and len(ml) == 1
        assert len(ml + nn.ModuleList([a])) == 2
        with pytest.raises(IndexError):
            ml[5]
        with pytest.raises(TypeError):
            ml.extend(5)

    def test_module_dict(self):
        md = nn.ModuleDict({"b": nn.Sequential(), "a": nn.Sequential()})
        assert list(md) == ["b", "a"] and list(md.keys()) == ["b", "a"]
        md["c"] = nn.ModuleList()
        assert "c" in md and len(md) == 3
        md.update([("d", nn.Sequential())])
        assert list(md)[-1] == "d"
        assert [k for k, _ in md.items()] == ["b", "a", "c", "d"]
        assert len(list(md.values())) == 4
        md.pop("b")
        del md["a"]
        assert list(md) == ["c", "d"]
        md.clear()
        assert len(md) == 0
        with pytest.raises(ValueError):
            md.update([("x", nn.Sequential(), 1)])

    def test_parameter_list(self):
        pl = nn.ParameterList([ddp.ones(2)])
        assert isinstance(pl[0], nn.Parameter) and pl[0].requires_grad
        pl.append(nn.Parameter(ddp.zeros(3)))
        pl.extend([ddp.zeros(1)])
        assert len(pl) == 3 and [n for n, _ in pl.named_parameters()] == ["0", "1", "2"]
        assert pl[-1].shape == ddp.Size([1])
        sl = pl[1:]
        assert isinstance(sl, nn.ParameterList) and sl[0] is pl[1]
        pl[0] = ddp.full((2,), 5.0)
        assert isinstance(pl[0], nn.Parameter) and float(pl[0].sum()) == 10.0
        assert [p.shape[0] for p in pl] == [2, 3, 1]
        with pytest.raises(RuntimeError, match="should not be called"):
            pl(1)
        with pytest.raises(TypeError):
            pl.extend(ddp.ones(2))

    def test_parameter_dict(self):
        pd = nn.ParameterDict({"b": ddp.ones(1), "a": ddp.zeros(2)})
        assert list(pd) == ["a", "b"]                       # plain dicts are sorted, as PyTorch
        pd["c"] = nn.Parameter(ddp.ones(3))
        assert "c" in pd and len(pd) == 3 and isinstance(pd["a"], nn.Parameter)
        assert pd.get("zz") is None and pd.setdefault("d", ddp.ones(1)).shape == ddp.Size([1])
        assert pd.pop("d").shape == ddp.Size([1])
        assert pd.popitem()[0] == "c"
        assert [k for k, _ in pd.items()] == ["a", "b"] and len(list(pd.values())) == 2
        assert list(pd.copy()) == ["a", "b"]
        merged = pd | nn.ParameterDict(OrderedDict([("z", ddp.ones(1))]))
        assert list(merged) == ["a", "b", "z"]
        del pd["a"]
        assert list(pd.state_dict()) == ["b"]
        pd.clear()
        assert len(pd) == 0
        with pytest.raises(TypeError):
            pd[1] = ddp.ones(1)
