"""The examples run end to end (as smoke tests with their real data) and reach their targets."""
import os
import sys

import numpy as np
import pytest

import ddp

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
sys.path.insert(0, os.path.abspath(EXAMPLES))
pytest.importorskip("sklearn")  # the bundled data sets come with scikit-learn


def test_spiral_core_learns():
    import spiral_core
    assert spiral_core.main(["--steps", "200"]) > 0.9


def test_digits_mlp_reaches_97_percent():
    import digits_mlp
    assert digits_mlp.main([]) >= 0.97


def test_digits_cnn_reaches_97_percent():
    import digits_cnn
    assert digits_cnn.main(["--epochs", "12"]) >= 0.97


def test_sequence_lstm_learns():
    import sequence_lstm
    assert sequence_lstm.main(["--epochs", "12"]) >= 0.9


def test_regression_explains_variance():
    import regression_diabetes
    assert regression_diabetes.main(["--epochs", "40"]) > 0.3


def test_imbalanced_weighting_helps_the_rare_class():
    import imbalanced
    f1 = imbalanced.main(["--epochs", "30"])
    assert min(f1.values()) > 0.7
    # each weighting beats the plain loss on the rare class (seed 0: F1 0.981 and 0.981 vs 0.941)
    assert f1["pos_weight"] > f1["plain"] and f1["sampler"] > f1["plain"], f1


def test_checkpoint_resume_is_bit_identical(tmp_path):
    import early_stopping_resume as es
    straight, split = tmp_path / "straight.ckpt", tmp_path / "split.ckpt"
    es.main(["--checkpoint", str(straight), "--epochs", "6", "--patience", "100"])
    es.main(["--checkpoint", str(split), "--epochs", "6", "--patience", "100", "--stop-after", "3"])
    assert ddp.load(split)["progress"]["epoch"] == 3
    es.main(["--checkpoint", str(split), "--epochs", "6", "--patience", "100", "--resume"])
    a, b = ddp.load(straight), ddp.load(split)
    assert a["progress"] == b["progress"]
    for key, value in a["model"].items():
        np.testing.assert_array_equal(value.numpy(), b["model"][key].numpy(), err_msg=key)
    for k, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(b["optimizer"]["state"][k][name]))


def _run_ranks(n, script, *args):
    """Run an example on ``n`` MPI ranks of the bundled MPICH; returns its output."""
    import shutil
    import subprocess
    import sysconfig
    mpiexec = shutil.which("mpiexec", path=sysconfig.get_path("scripts") + os.pathsep +
                           os.environ.get("PATH", ""))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.path.abspath(os.path.join(EXAMPLES, os.pardir)))  # this ddp
    proc = subprocess.run([mpiexec, "-n", str(n), sys.executable, os.path.join(EXAMPLES, script),
                           *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("ranks", [1, 2])
def test_data_parallel_digits(ranks):
    out = _run_ranks(ranks, "ddp_digits.py", "--epochs", "8")
    accuracy = float(out.strip().splitlines()[-1].split()[3])
    assert accuracy > 0.93, out


def test_amp_accumulation_example_keeps_ranks_identical():
    out = _run_ranks(2, "ddp_amp_accumulate.py", "--epochs", "5")
    last = out.strip().splitlines()[-1]
    assert last.endswith("parameters identical on all ranks: True"), out
    assert float(last.split()[3].rstrip(";")) > 0.9, out


def test_transfer_learning_reuses_the_frozen_checkpointed_backbone(tmp_path):
    import transfer_learning
    checkpoint = tmp_path / "pretrained.ddp"
    results = transfer_learning.main(["--pretrain-epochs", "3", "--epochs", "20",
                                      "--checkpoint", str(checkpoint)])
    saved = ddp.load(checkpoint)
    assert saved["classes"] == [0, 1, 2, 3, 4] and "0.weight" in saved["backbone"]
    assert results["pretrain"] > 0.95
    assert results["transfer"] > 0.9 and results["transfer"] > results["random_backbone"] + 0.05


def test_hyperparameter_search_gives_the_same_trials_on_two_ranks():
    import hyperparameter_search
    args = ["--epochs", "3", "--lrs", "0.1,0.01", "--hidden", "16,64"]
    best, results = hyperparameter_search.main(args)
    assert len(results) == 4 and best["val"] == max(r["val"] for r in results) > 0.9
    out = _run_ranks(2, "hyperparameter_search.py", *args)
    rows = [line.split() for line in out.splitlines() if line[:6].strip().isdigit()]
    assert [int(r[5]) for r in rows] == [0, 1, 0, 1], out      # trial i ran on rank i % 2
    for row, ours in zip(rows, results):                        # the same numbers as one process
        assert (float(row[3]), float(row[4])) == (round(ours["val"], 4), round(ours["test"], 4))


def test_explainability_attributions_are_complete_and_informative():
    import explainability
    out = explainability.main(["--epochs", "6", "--images", "60", "--steps", "32"])
    assert out["completeness"] < 0.01
    assert out["integrated gradients"] > 3 * out["random pixels"]
    assert out["saliency"] > 2 * out["random pixels"]


def test_profiling_times_every_op_of_the_scheduled_steps(tmp_path):
    import json
    import profiling
    trace = tmp_path / "trace.json"
    out = profiling.main(["--wait", "1", "--warmup", "1", "--active", "2", "--batch-size", "32",
                          "--trace", str(trace)])
    averages = out["averages"]
    for region in ("data", "forward", "backward", "optimizer.step"):
        assert averages[region].count == 2              # the two active steps only
    assert averages["ddp::Convolution"].count == 4      # two convolutions per step
    assert averages["autograd::ConvolutionBackward0"].count == 4
    assert "Self CPU time total" in out["table"] and len(out["step_ms"]) == 4
    assert {e["name"] for e in json.loads(trace.read_text())["traceEvents"]} >= {"forward"}


@pytest.mark.gpu
def test_data_parallel_examples_train_on_the_rank_gpu(capsys):
    """The DDP examples put model and data on the rank's GPU when there is one (here: the GPU
    under test, or the simulated device), and still learn."""
    import common
    import ddp_amp_accumulate
    import ddp_digits
    import ddp.distributed as dist
    if dist.is_initialized():   # an in-process example before this one kept its group
        dist.destroy_process_group()
    assert common.device().type == "cuda"
    assert ddp_digits.main(["--epochs", "4"]) > 0.9
    assert ddp_amp_accumulate.main(["--epochs", "3"]) > 0.8
    assert "autocast torch.float16" in capsys.readouterr().out.replace("ddp.", "torch.")
