"""ddp.profiler: every op and backward node of the block is timed and counted, user regions
nest (self time excludes children), schedules pick the recorded steps, and nothing stays
patched afterwards."""
import json

import pytest

import ddp
import ddp.nn as nn
from ddp.autograd import engine, graph
from ddp.profiler import ProfilerActivity, profile, record_function, schedule


def _step(model):
    model(ddp.randn(4, 6)).relu().sum().backward()


def test_ops_and_backward_nodes_are_counted():
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            _step(model)
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts["ddp::LinearOp"] == 6 and counts["autograd::LinearOpBackward0"] == 6
    assert counts["ddp::Relu"] == 3 and counts["autograd::ReluBackward0"] == 3
    shapes = {str(e.input_shapes) for e in prof.key_averages(group_by_input_shape=True)
              if e.key == "ddp::LinearOp"}
    assert shapes == {"[[4, 6], [5, 6], [5]]", "[[4, 5], [3, 5], [3]]"}
    assert all(e.cpu_time_total >= e.self_cpu_time_total >= 0 for e in prof.events())


def test_regions_nest_and_self_time_excludes_children():
    model = nn.Linear(6, 3)
    with profile() as prof:
        with record_function("step"):
            with record_function("forward"):
                out = model(ddp.randn(4, 6))
            with record_function("backward"):
                out.sum().backward()
    events = {e.name: e for e in prof.events()}
    step, fwd, bwd = events["step"], events["forward"], events["backward"]
    assert step.start <= fwd.start <= fwd.end <= bwd.start <= bwd.end <= step.end
    assert step.self_cpu_time_total == pytest.approx(
        step.cpu_time_total - fwd.cpu_time_total - bwd.cpu_time_total)
    assert events["ddp::LinearOp"].depth == 2
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=2)
    rows = [line.split()[0] for line in table.splitlines()[3:5]]
    assert rows[0] == "step" and "Self CPU time total" in table
    with pytest.raises(AttributeError, match="sort by"):
        prof.key_averages().table(sort_by="nonsense")


def test_nothing_stays_patched_and_ops_outside_are_not_recorded():
    before = (graph.apply, engine._call_backward)
    model = nn.Linear(6, 3)
    with profile() as prof:
        pass
    _step(model)
    assert (graph.apply, engine._call_backward) == before and not prof.events()
    with record_function("no profile"):  # a no-op without a profile
        _step(model)
    with pytest.raises(RuntimeError, match="already active"):
        with profile():
            with profile():
                pass
    assert (graph.apply, engine._call_backward) == before


def test_schedule_records_the_active_steps_and_hands_over_traces():
    model = nn.Linear(6, 3)
    handed = []
    with profile(schedule=schedule(wait=1, warmup=1, active=2, repeat=1),
                 on_trace_ready=lambda p: handed.append(
                     sum(e.count for e in p.key_averages() if e.key == "ddp::LinearOp"))) as prof:
        for _ in range(6):
            with record_function("train_step"):
                _step(model)
            prof.step()
    assert handed == [2]  # steps 2 and 3 recorded, handed over after step 3
    assert {e.key: e.count for e in prof.key_averages()}["train_step"] == 2


def test_chrome_trace_and_decorator(tmp_path):
    @record_function("helper")
    def helper():
        return ddp.ones(3) * 2

    with profile() as prof:
        helper()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    names = [e["name"] for e in events]
    assert names[0] == "helper" and "ddp::Mul" in names
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
