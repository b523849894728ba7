"""Every file in configs/ fits its program's options and runs a short job with it (flags on
the command line cut each job short: they override the file)."""
import glob
import os
import subprocess
import sys

import pytest

from launcher import cli as launcher_cli
from launcher import config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
CONFIGS = os.path.join(ROOT, "configs")
EXAMPLES = os.path.join(ROOT, "examples")
pytest.importorskip("sklearn")  # the examples' bundled data sets
sys.path.insert(0, EXAMPLES)


def cfg(name):
    return os.path.join(CONFIGS, name)


def run(*argv):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def run_digits_mlp():
    import digits_mlp
    assert 0.5 < digits_mlp.main(["--config", cfg("digits_mlp.yaml"), "--epochs", "2"]) <= 1


def run_digits_cnn():
    import digits_cnn
    assert 0.3 < digits_cnn.main(["--config", cfg("digits_cnn.yaml"), "--epochs", "1"]) <= 1


def run_sequence_lstm():
    import sequence_lstm
    assert 0 < sequence_lstm.main(["--config", cfg("sequence_lstm.yaml"), "--epochs", "1"]) <= 1


def run_amp_accumulate():
    out = run(os.path.join(EXAMPLES, "ddp_amp_accumulate.py"), "--config",
              cfg("ddp_amp_accumulate.yaml"), "--epochs", "1")
    # the file's accumulate: 4 and micro-batch: 16 made it here
    assert "1 rank(s) x 4 micro-batches of 16: effective batch 64" in out, out


def run_launcher_with_ddp_digits():
    # the launcher's file (n: 2, output: rank0, ...) and the script's own file, together
    out = run("-m", "launcher", "--config", cfg("launcher.yaml"),
              os.path.join(EXAMPLES, "ddp_digits.py"), "--config", cfg("ddp_digits.yaml"),
              "--epochs", "1")
    lines = out.strip().splitlines()
    assert lines[0].startswith("2 rank(s)") and "batches of 32 per rank" in lines[0], out
    assert not any(line.startswith("[rank") for line in lines)   # output: rank0
    assert lines[-1].startswith("final test accuracy")


RUNS = {
    "digits_mlp.yaml": run_digits_mlp,
    "digits_cnn.yaml": run_digits_cnn,
    "sequence_lstm.yaml": run_sequence_lstm,
    "ddp_amp_accumulate.yaml": run_amp_accumulate,
    "ddp_digits.yaml": run_launcher_with_ddp_digits,
    "launcher.yaml": run_launcher_with_ddp_digits,
    # the scaling benchmark's file drives tests/bench/test_bench_cli.py::scaling_dir (real
    # 1- and 2-rank jobs); here it is checked against ddp-bench's own options
    "bench_scaling.yaml": None,
}


def test_every_config_is_covered():
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.yaml"))) == \
        sorted(RUNS)


def test_the_launcher_and_bench_configs_fit_their_options():
    path = cfg("launcher.yaml")
    values = config.check(config.load_yaml(path), launcher_cli.build_parser(), path)
    assert values["nproc"] == 2 and values["output"] == "rank0"
    from ddp.bench import cli as bench_cli
    parser = bench_cli.build_parser()
    scaling = next(a for a in parser._actions if a.dest == "command").choices["scaling"]
    path = cfg("bench_scaling.yaml")
    values = config.check(config.load_yaml(path), scaling, path)
    assert values["ranks"] == [1, 2] and values["model"] == ["mlp", "cnn"]


@pytest.mark.parametrize("name", ["digits_mlp.yaml", "digits_cnn.yaml", "sequence_lstm.yaml",
                                  "ddp_amp_accumulate.yaml", "ddp_digits.yaml"])
def test_config_runs_a_short_job(name):
    RUNS[name]()
