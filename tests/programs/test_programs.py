"""Real PyTorch programs from pytorch/examples (``examples/``, copied unmodified with their BSD
licence, LICENSE.pytorch-examples) run under ``import ddp as torch``: each test runs one as its
README says (``python main.py --flags``, small settings through its own flags), in a fresh
process whose ``torch`` is ddp (``shims/alias``) and whose torchvision serves synthetic,
learnable data (``shims/data``), and asserts that it finishes and that its loss falls.

A program that needs an edit to run is a gap in ddp, fixed there; the programs stay as written.
``python -m tests.programs.runner --torch NAME/main.py ...`` runs one under real PyTorch.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import ddp
from tests.programs import runner

TIMEOUT = 900   # seconds: generous, a loaded machine is slow, never part of what is asserted


def run(tmp_path, program, *args, env=None):
    """Run ``examples/<program>`` in ``tmp_path/work`` (its ``../data`` is ``tmp_path/data``);
    assert it exits 0 and return its output."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    out = runner.run(program, args, cwd=work, env=env, timeout=TIMEOUT)
    assert out.returncode == 0, (f"{program} failed (exit {out.returncode}):\n"
                                 f"{out.stdout[-4000:]}\n{out.stderr[-6000:]}")
    return out.stdout


def numbers(pattern, text):
    values = [float(v) for v in re.findall(pattern, text)]
    assert values, f"no {pattern!r} in the output:\n{text[-3000:]}"
    assert all(math.isfinite(v) for v in values), values
    return values


TRAIN_LOSS = r"Loss: ([-\d.]+)"
TEST_LOSS = r"Test set: Average loss: ([-\d.]+)"
ACCURACY = r"Accuracy: (\d+)/(\d+)"


def accuracy(text):
    hits = re.findall(ACCURACY, text)
    assert hits, text[-3000:]
    correct, total = map(int, hits[-1])
    return correct / total


def test_regression_fits_the_polynomial(tmp_path):
    out = run(tmp_path, "regression/main.py")
    loss, batches = re.search(r"Loss: ([\d.]+) after (\d+) batches", out).groups()
    assert float(loss) < 1e-3                      # its own stopping criterion was met
    learned = numbers(r"([+-]\d+\.\d+)", out.split("Learned function:")[1].split("\n")[0])
    actual = numbers(r"([+-]\d+\.\d+)", out.split("Actual function:")[1].split("\n")[0])
    np.testing.assert_allclose(learned, actual, atol=0.2)


def test_mnist(tmp_path):
    out = run(tmp_path, "mnist/main.py", "--epochs", 2, "--batch-size", 16, "--lr", 0.05,
              "--log-interval", 8)
    train = numbers(TRAIN_LOSS, out)
    assert numbers(TEST_LOSS, out)[-1] < train[0] / 2
    assert accuracy(out) > 0.5


def test_mnist_rnn(tmp_path):
    out = run(tmp_path, "mnist_rnn/main.py", "--epochs", 2, "--batch-size", 16, "--lr", 1,
              "--log-interval", 8, "--save-model")
    assert numbers(TEST_LOSS, out)[-1] < numbers(TRAIN_LOSS, out)[0] - 0.3
    state = ddp.load(tmp_path / "work" / "mnist_rnn.pt")
    assert {"rnn.weight_ih_l0", "batchnorm.running_mean", "fc2.bias"} <= set(state)


def test_vae(tmp_path):
    out = run(tmp_path, "vae/main.py", "--epochs", 2, "--batch-size", 32, "--log-interval", 4,
              env={"FAKE_TRAIN_SIZE": "256", "FAKE_TEST_SIZE": "64"})
    epochs = numbers(r"Epoch: \d+ Average loss: ([\d.]+)", out)
    tests = numbers(r"Test set loss: ([\d.]+)", out)
    assert epochs[-1] < epochs[0] and tests[-1] < tests[0]
    assert (tmp_path / "work" / "results" / "sample_2.png").stat().st_size == 64 * 28 * 28 * 4


def _corpus(root):
    """A tiny corpus in wikitext's layout: sentences walking a ring of 30 words."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    root.mkdir(parents=True)
    for name, n in (("train", 300), ("valid", 40), ("test", 40)):
        lines = []
        for _ in range(n):
            start, length = rng.integers(0, 30), rng.integers(5, 12)
            lines.append(" ".join(words[(start + k) % 30] for k in range(length)))
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")


# main.py saves the whole model and reloads it with torch.load(f): PyTorch >= 2.6 refuses that
# by default (weights_only=True) and so does ddp; the program runs under the switch PyTorch
# provides for such programs, which ddp.load honours too.
OLD_LOAD = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


@pytest.mark.parametrize("model,extra", [("LSTM", ("--lr", 20)),
                                         ("Transformer", ("--lr", 1, "--nhead", 2))])
def test_word_language_model(tmp_path, model, extra):
    _corpus(tmp_path / "work" / "data" / "wikitext-2")
    out = run(tmp_path, "word_language_model/main.py", "--model", model, "--epochs", 3,
              "--emsize", 32, "--nhid", 32, "--bptt", 10, "--batch_size", 8, "--dropout", 0,
              "--log-interval", 10, *extra, env=OLD_LOAD)
    valid = numbers(r"valid loss +([\d.]+)", out)
    test = numbers(r"test loss +([\d.]+)", out)[-1]
    assert valid[-1] < valid[0] and test < math.log(31) - 0.5     # 31 tokens: chance is ln 31


def test_word_language_model_default_load_refuses_the_whole_model(tmp_path):
    """Without the switch the program stops where PyTorch 2.13 stops: at its final
    ``torch.load(f)`` of a whole module, with PyTorch's exception type and advice."""
    _corpus(tmp_path / "work" / "data" / "wikitext-2")
    work = tmp_path / "work"
    out = runner.run("word_language_model/main.py",
                     ["--epochs", 1, "--emsize", 8, "--nhid", 8, "--bptt", 10, "--nlayers", 1],
                     cwd=work, timeout=TIMEOUT,
                     env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "0"})
    assert out.returncode != 0
    assert "UnpicklingError: Weights only load failed" in out.stderr
    assert "weights_only" in out.stderr and (work / "model.pt").exists()


def test_dcgan(tmp_path):
    out = run(tmp_path, "dcgan/main.py", "--dataset", "fake", "--workers", 1, "--batchSize", 16,
              "--imageSize", 64, "--nz", 8, "--ngf", 8, "--ndf", 8, "--niter", 2,
              "--manualSeed", 1, "--outf", "out", env={"FAKE_TRAIN_SIZE": "96"})
    loss_d = numbers(r"Loss_D: ([\d.]+)", out)
    d_x = numbers(r"D\(x\): ([\d.]+)", out)
    assert len(loss_d) == 12                         # 2 epochs x 6 batches
    assert np.mean(loss_d[-3:]) < np.mean(loss_d[:3])   # the discriminator learns
    assert np.mean(d_x[-3:]) > np.mean(d_x[:3])
    netG = ddp.load(tmp_path / "work" / "out" / "netG_epoch_1.pth")
    assert netG["main.0.weight"].shape == (8, 64, 4, 4)


def _cora(root, n=1700, features=40, classes=4):
    """Cora's two files (``cora.content``: id, 0/1 word features, label; ``cora.cites``: pairs
    of ids), for a graph whose edges mostly join nodes of one class. main.py splits the nodes
    1200/400/rest, so there are more than 1600."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    feats = (rng.random((n, features)) < 0.05).astype(int)
    width = features // classes
    for i, c in enumerate(labels):
        feats[i, c * width:(c + 1) * width] |= rng.random(width) < 0.5
    ids = rng.permutation(100000)[:n] + 1
    root.mkdir(parents=True)
    with open(root / "cora.content", "w") as f:
        for i in range(n):
            f.write("\t".join([str(ids[i]), *map(str, feats[i]), f"Class_{labels[i]}"]) + "\n")
    with open(root / "cora.cites", "w") as f:
        for _ in range(3 * n):
            a = rng.integers(n)
            b = rng.choice(np.flatnonzero(labels == labels[a]))
            f.write(f"{ids[a]}\t{ids[b]}\n")


def test_graph_attention_network(tmp_path):
    """gat/main.py: sparse adjacency and feature scaling (sparse_coo_tensor, to_sparse,
    sparse @ dense, dense + sparse), torch.accelerator, legacy FloatTensor/LongTensor."""
    _cora(tmp_path / "work" / "cora")
    out = run(tmp_path, "gat/main.py", "--epochs", 10, "--hidden-dim", 8, "--num-heads", 2,
              "--val-every", 5)
    train = numbers(r"loss_train: ([\d.]+)", out)
    assert "Dataset already downloaded" in out and train[-1] < train[0]
    loss, acc = map(float, re.search(r"Test set results: loss ([\d.]+) accuracy ([\d.]+)",
                                     out).groups())
    assert acc > 0.5 and loss < math.log(4)


def test_mnist_hogwild(tmp_path):
    """Two spawned processes train one model through shared memory (model.share_memory());
    the parent's model, tested after they end, has learned."""
    out = run(tmp_path, "mnist_hogwild/main.py", "--epochs", 1, "--batch-size", 16,
              "--lr", 0.05, "--log-interval", 8, "--num-processes", 2)
    pids = set(re.findall(r"^(\d+)\tTrain Epoch", out, flags=re.M))
    assert len(pids) == 2
    assert numbers(TEST_LOSS, out)[-1] < numbers(TRAIN_LOSS, out)[0] / 2
    assert accuracy(out) > 0.5


def test_time_sequence_prediction(tmp_path):
    """generate_sine_wave.py writes traindata.pt; train.py fits it with LBFGS. The sine waves
    are PyTorch's recipe at 8 x 60 points (the script's 100 x 1000 take minutes here)."""
    work = tmp_path / "work"
    run(tmp_path, "time_sequence_prediction/generate_sine_wave.py", env=OLD_LOAD)
    assert ddp.load(work / "traindata.pt", weights_only=False).shape == (100, 1000)
    np.random.seed(2)
    x = np.arange(60) + np.random.randint(-80, 80, 8).reshape(8, 1)
    ddp.save(np.sin(x / 20.0), work / "traindata.pt")
    out = run(tmp_path, "time_sequence_prediction/train.py", "--steps", 2, "--device", "cpu",
              env=OLD_LOAD)
    losses = [float(v) for v in re.findall(r"^loss: ([\d.e+-]+)$", out, flags=re.M)]
    tests = [float(v) for v in re.findall(r"^test loss: ([\d.e+-]+)$", out, flags=re.M)]
    assert len(tests) == 2 and losses[-1] < losses[0] / 10 and tests[-1] < tests[0]
    assert (work / "predict1.pdf").exists()


# A subprocess needs a real GPU (the simulated device of tests/simcuda lives in this process).
@pytest.mark.skipif(not ddp.cuda.is_available(), reason="needs a CUDA device: the program "
                    "trains on device 0")
def test_ddp_tutorial_single_gpu(tmp_path):
    """single_gpu.py trains on ``device = 0`` (cuda:0) and saves a checkpoint every epoch."""
    out = run(tmp_path, "ddp_tutorial_series/single_gpu.py", 2, 1, "--batch_size", 64)
    assert "[GPU0] Epoch 1 | Batch size: 64 | Steps: 32" in out
    assert set(ddp.load(tmp_path / "work" / "checkpoint.pt")) == {"weight", "bias"}


def test_mnist_forward_forward(tmp_path):
    """Hinton's forward-forward training, layer by layer (Linear subclass with device/dtype,
    indexing by ``range`` and a tensor, ``sum`` of tensors, torchvision's Lambda)."""
    out = run(tmp_path, "mnist_forward_forward/main.py", "--epochs", 60, "--train_size", 512,
              "--test_size", 256, "--log-interval", 20)
    losses = [float(v) for v in re.findall(r"^Loss:\s+([\d.e+-]+)$", out, flags=re.M)]
    assert len(losses) == 6 and losses[2] < losses[0] and losses[5] < losses[3]   # both layers
    train_error = float(re.search(r"train error: ([\d.e+-]+)", out).group(1))
    test_error = float(re.search(r"test error: ([\d.e+-]+)", out).group(1))
    assert train_error < 0.5 and test_error < 0.5       # chance: 0.9
