"""ddp-bench end to end: the scaling, bandwidth and sweep commands run real MPI jobs (1 and 2
ranks of the bundled MPICH, a few steps) and write the documented files with consistent
numbers; compare and predict read them back. Torch is never needed (--no-torch)."""
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys

import pytest

import ddp
from ddp.bench import cli, models, report, worker

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
CONFIG = os.path.join(ROOT, "configs", "bench_scaling.yaml")
pytestmark = pytest.mark.skipif(shutil.which("mpiexec") is None and
                                cli.jobs.launcher_cli.find_mpiexec() is None,
                                reason="no mpiexec")


@pytest.fixture(scope="module")
def scaling_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("scaling"))
    # the real benchmark config, cut down by flags (which override the file)
    cli.main(["scaling", "--config", CONFIG, "--ranks", "2", "--model", "mlp", "--steps", "2",
              "--warmup", "1", "--batch", "8", "--global-batch", "8", "--repeat", "1",
              "--wait-idle", "0", "--reps", "2", "--no-torch", "--out", out])
    return out


def load(path):
    with open(path) as f:
        return json.load(f)


def test_scaling_writes_results_with_the_documented_fields(scaling_dir):
    doc = load(os.path.join(scaling_dir, "results.json"))
    assert doc["kind"] == "scaling" and doc["settings"]["ranks"] == [1, 2]   # 1 always added
    assert doc["settings"]["steps"] == 2 and doc["settings"]["repeat"] == 1  # flags won
    rows = {(r["mode"], r["ranks"]): r for r in doc["rows"]}
    assert set(rows) == {("weak", 1), ("weak", 2), ("strong", 1), ("strong", 2)}
    for r in doc["rows"]:
        for field in ("samples_per_s", "efficiency", "step_ms", "step_ms_plain", "forward_ms",
                      "backward_ms", "optimizer_ms", "comm_efficiency"):
            assert r[field] > 0, (field, r)
        assert isinstance(r["exposed_comm_ms"], float)
        # samples/s is the global batch over the step time; efficiency the throughput ratio
        assert r["samples_per_s"] == pytest.approx(r["global_batch"] / r["step_ms"] * 1e3)
        one = rows[(r["mode"], 1)]
        assert r["efficiency"] == pytest.approx(r["samples_per_s"] /
                                                (r["ranks"] * one["samples_per_s"]))
        assert r["comm_efficiency"] == pytest.approx(r["step_ms_plain"] / r["step_ms"])
    assert rows["weak", 1]["efficiency"] == 1.0 and rows["weak", 1]["exposed_comm_ms"] == 0.0
    assert rows["weak", 2]["batch_per_rank"] == 8 and rows["weak", 2]["global_batch"] == 16
    assert rows["strong", 2]["batch_per_rank"] == 4 and rows["strong", 2]["global_batch"] == 8
    # weak scaling: efficiency is also t(1) / t(2)
    assert rows["weak", 2]["efficiency"] == pytest.approx(rows["weak", 1]["step_ms"] /
                                                          rows["weak", 2]["step_ms"])


def test_scaling_carries_the_cost_models_prediction(scaling_dir):
    doc = load(os.path.join(scaling_dir, "results.json"))
    info = doc["models"]["mlp"]
    assert info["parameters"] == 1863690 and info["gradient_bytes"] == 4 * 1863690
    assert sum(info["buckets"]) == info["gradient_bytes"]
    link = doc["links"]["ddp"]["2"]
    assert link["alpha_s"] >= 0 and link["beta_Bps"] > 0
    for r in doc["rows"]:
        pr = r["predicted"]
        if r["ranks"] == 1:
            assert pr is None
            continue
        # without overlap everything is exposed: a lower bound on efficiency
        assert 0 <= pr["exposed_comm_ms"] <= pr["exposed_comm_ms_serial"] + 1e-9
        assert pr["step_ms"] == pytest.approx(r["step_ms_plain"] + pr["exposed_comm_ms"])
        assert 0 < pr["efficiency_serial"] <= pr["efficiency"]
    table = open(os.path.join(scaling_dir, "results.md")).read()
    assert "| model | framework | mode | ranks |" in table and "model: efficiency" in table


def test_scaling_plot_or_a_note_without_matplotlib(scaling_dir, monkeypatch, capsys, tmp_path):
    try:
        import matplotlib  # noqa: F401
        assert os.path.getsize(os.path.join(scaling_dir, "scaling.png")) > 1000
    except ImportError:
        assert not os.path.exists(os.path.join(scaling_dir, "scaling.png"))
    doc = load(os.path.join(scaling_dir, "results.json"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if not installed
    assert cli.write_plot(doc, str(tmp_path)) is None
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "scaling.png")


def test_compare_shows_two_runs_side_by_side(scaling_dir, tmp_path, capsys):
    doc = load(os.path.join(scaling_dir, "results.json"))
    for r in doc["rows"]:
        r["samples_per_s"] *= 2
    other = tmp_path / "faster"
    other.mkdir()
    report.write_json(doc, str(other / "results.json"))
    cli.main(["compare", scaling_dir, str(other)])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("ddp ")]
    assert len(lines) == 4
    header = next(line for line in out.splitlines() if line.startswith("framework"))
    col = header.split().index("samples_per_s") + 2  # A, B, then B/A
    assert all(line.split()[col] == "2.00" for line in lines)
    cli.main(["--compare", scaling_dir, str(other)])
    assert capsys.readouterr().out == out


def test_compare_refuses_different_kinds(scaling_dir, tmp_path):
    report.write_json({"kind": "sweep", "rows": [], "key": [], "metrics": []},
                      str(tmp_path / "sweep.json"))
    with pytest.raises(SystemExit, match="cannot be compared"):
        cli.main(["compare", scaling_dir, str(tmp_path)])


def test_predict_from_a_run_and_for_resnet_and_bert(scaling_dir, capsys):
    cli.main(["predict", "--from", scaling_dir, "--ranks", "8,1024", "--markdown"])
    out = capsys.readouterr().out
    for name in ("ResNet-50", "BERT-base", "MLP 784-1024-1024-10 (measured here)",
                 "this machine (2 ranks", "Sergeev & Del Balso 2018", "Li et al., VLDB 2020"):
        assert name in out
    assert "| workload | gradient | compute ms | link | 8 | 1024 |" in out


def test_bandwidth_against_raw_mpi4py(tmp_path):
    out = str(tmp_path)
    cli.main(["bandwidth", "--ranks", "2", "--sizes", "4096,262144", "--reps", "2", "--warmup",
              "1", "--model", "mlp", "--batch", "4", "--out", out])
    doc = load(os.path.join(out, "bandwidth.json"))
    assert [r["bytes"] for r in doc["rows"]] == [4096, 262144]
    for r in doc["rows"]:
        assert r["raw_ms"] > 0 and r["ddp_ms"] > 0 and r["iallreduce_ms"] > 0
        # bus bandwidth = bytes / time × 2(p-1)/p, which is 1 on 2 ranks
        assert r["raw_busbw_GBps"] == pytest.approx(r["bytes"] / r["raw_ms"] / 1e6)
        assert r["ddp_vs_raw"] == pytest.approx(r["raw_ms"] / r["ddp_ms"])
    fit = doc["ranks"]["2"]["fit"]
    assert fit["raw"]["alpha_s"] >= 0 and fit["raw"]["beta_Bps"] > 0
    buckets = doc["ranks"]["2"]["models"]["mlp"]
    assert buckets["bytes"] == 4 * 1863690 == sum(buckets["buckets"])
    assert all(s > 0 for s in buckets["seconds"].values()) and len(buckets["seconds"]) == 5
    assert os.path.exists(os.path.join(out, "bandwidth.md"))


def test_bucket_size_sweep(tmp_path):
    out = str(tmp_path)
    cli.main(["sweep", "--ranks", "2", "--model", "mlp", "--caps", "1,25", "--steps", "2",
              "--warmup", "1", "--batch", "8", "--reps", "2", "--out", out])
    doc = load(os.path.join(out, "sweep.json"))
    rows = {r["bucket_cap_mb"]: r for r in doc["rows"]}
    assert list(rows) == ["1", "25", "sync"]
    # 7.1 MiB of gradients: 1 MiB buckets make several, 25 MiB ones a small first and the rest
    assert rows["1"]["buckets"] > rows["25"]["buckets"] == 2
    for r in doc["rows"]:
        assert sum(r["bucket_bytes"]) == 4 * 1863690
        assert r["step_ms"] > 0
        assert r["efficiency"] == pytest.approx(doc["one_rank_step_ms"] / r["step_ms"])
        assert r["predicted"]["exposed_comm_ms"] <= r["predicted"]["exposed_comm_ms_serial"] + 1e-9


def test_bad_bench_config_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("ranks: [1, 2]\nstep: 3\n")
    out = subprocess.run([sys.executable, "-m", "ddp.bench", "scaling", "--config", str(path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and f"{path}: unknown key 'step'" in out.stderr
    path.write_text("ranks: one\n")
    out = subprocess.run([sys.executable, "-m", "ddp.bench", "scaling", "--config", str(path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "key 'ranks' must be list of int, got str ('one')" in out.stderr


def test_the_benchmark_models_build_and_run_in_ddp():
    for name in ("mlp", "cnn", "lstm"):
        ddp.manual_seed(0)
        net = models.build(ddp, name)
        x = ddp.randn(3, *models.INPUT_SHAPES[name])
        out = net(x)
        assert tuple(out.shape) == (3, 10)
        out.sum().backward()
        assert all(p.grad is not None for p in net.parameters())


def test_transformer_model_runs_or_says_what_is_missing():
    if hasattr(ddp.nn, "TransformerEncoderLayer"):
        net = models.build(ddp, "transformer")
        out = net(ddp.randn(2, *models.INPUT_SHAPES["transformer"]))
        assert tuple(out.shape) == (2, 10)
    else:
        with pytest.raises(models.ModelUnavailable, match="TransformerEncoderLayer"):
            models.build(ddp, "transformer")
        with pytest.raises(SystemExit):
            cli.main(["scaling", "--model", "transformer", "--no-torch"])


def test_global_batch_must_split_over_the_ranks(capsys):
    with pytest.raises(SystemExit):
        cli.main(["scaling", "--ranks", "1,3", "--global-batch", "8", "--no-torch"])
    assert "does not split evenly over 3 ranks" in capsys.readouterr().err


def test_measure_times_each_configuration_in_blocks_after_an_untimed_step():
    # stand-ins that record which model ran each forward: the order is the method
    calls = []

    class Model:
        def __init__(self, label):
            self.label = label

        def __call__(self, x):
            calls.append(self.label)
            return x

        def no_sync(self):
            return contextlib.nullcontext()

    class Loss:
        def backward(self):
            pass

        def item(self):
            return 0.0

    class Optimizer:
        def zero_grad(self):
            pass

        def step(self):
            pass

    setups = {label: worker.Setup(Model(label), Optimizer(), lambda out, y: Loss(), None, None,
                                  8, label == "ddp") for label in ("plain", "ddp")}
    barriers = []
    medians = worker.measure(setups, steps=7, warmup=1, barrier=lambda: barriers.append(1),
                             block=3)
    runs = [(label, len(list(group))) for label, group in itertools.groupby(calls)]
    # warm-up: one step each; then per round, each in turn: 1 untimed + n timed steps
    # (n = 3, 3, 1), and for DDP (n + 1) synced/no_sync backward pairs (2 forwards each)
    assert runs == [("plain", 1), ("ddp", 1), ("plain", 4), ("ddp", 12), ("plain", 4),
                    ("ddp", 12), ("plain", 2), ("ddp", 6)]
    # every timed step and every backward pair's backward is barrier-aligned
    assert len(barriers) == 2 + 2 * 7 + 2 * (7 + 3)
    assert set(medians) == {f"{label}{suffix}" for label in ("plain", "ddp")
                            for suffix in ("", "/cpu", "/forward", "/backward", "/optimizer")
                            } | {"ddp/backward_sync", "ddp/backward_nosync"}
