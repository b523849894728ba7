"""ddp.progress: a bar on rank 0 of a terminal only; a plain print otherwise."""
import io
import os
import subprocess
import sys

import pytest

from ddp.progress import Progress, progress_enabled

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def no_forcing(monkeypatch):
    monkeypatch.delenv("DDP_PROGRESS", raising=False)
    monkeypatch.delenv("DDP_OUTPUT", raising=False)


def test_off_when_the_stream_is_not_a_terminal():
    assert not progress_enabled(io.StringIO(), rank=0)
    assert progress_enabled(Terminal(), rank=0)


def test_only_rank_zero_draws():
    assert not progress_enabled(Terminal(), rank=1)
    assert not progress_enabled(Terminal(), rank=3, env={"DDP_PROGRESS": "1"})


def test_off_under_output_all_and_forced_by_env():
    assert not progress_enabled(Terminal(), rank=0, env={"DDP_OUTPUT": "all"})
    assert progress_enabled(Terminal(), rank=0, env={"DDP_OUTPUT": "prefix"})
    assert not progress_enabled(Terminal(), rank=0, env={"DDP_PROGRESS": "0"})
    assert progress_enabled(io.StringIO(), rank=0, env={"DDP_PROGRESS": "1"})


def test_a_disabled_bar_draws_nothing_and_write_prints(capsys):
    stream = io.StringIO()
    with Progress(range(3), desc="train", stream=stream) as bar:
        for i in bar:
            bar.log(loss=1.0 / (i + 1), samples=10)
            bar.write(f"line {i}")
    assert stream.getvalue() == ""
    assert capsys.readouterr().out == "line 0\nline 1\nline 2\n"
    assert (bar.count, bar.samples, bar.loss) == (3, 30, pytest.approx(1 / 3))


def test_the_plain_fallback_shows_count_loss_and_throughput(capsys):
    stream = Terminal()
    with Progress(range(4), desc="train", unit="epoch", stream=stream, use_tqdm=False) as bar:
        for i in bar:
            bar.log(loss=0.25, samples=100)
            if i == 1:
                bar.write("halfway")
    text = stream.getvalue()
    assert bar.enabled is False  # closed
    last = text.split("\r")[-1]
    assert "train:" in last and "4/4" in last and "loss 0.25" in last and "samples/s" in last
    assert text.endswith("\n")
    assert capsys.readouterr().out == "halfway\n"


def test_counting_without_an_iterable():
    bar = Progress(total=3, enabled=False)
    for _ in range(3):
        bar.log(samples=8)
    assert bar.count == 3 and bar.samples == 24 and bar.rate > 0


def test_tqdm_draws_loss_and_throughput():
    pytest.importorskip("tqdm")
    stream = Terminal()
    with Progress(range(2), desc="train", stream=stream, use_tqdm=True) as bar:
        for _ in bar:
            bar.log(loss=0.5, samples=64)
    text = stream.getvalue()
    assert "train" in text and "loss 0.5" in text and "samples/s" in text and "2/2" in text


SCRIPT = """
import io
from ddp.progress import progress_enabled
class Terminal(io.StringIO):
    def isatty(self):
        return True
print("enabled", progress_enabled(Terminal()))
"""


@pytest.mark.parametrize("output,expected", [("all", "False"), ("prefix", "True")])
def test_launcher_output_all_turns_bars_off(tmp_path, output, expected):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("DDP_PROGRESS", None)
    out = subprocess.run([sys.executable, "-m", "launcher", "--output", output, str(script)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"enabled {expected}" in out.stdout


def test_examples_draw_no_bar_into_a_pipe():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("DDP_PROGRESS", None)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "spiral_core.py"),
                          "--steps", "20"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "samples/s" not in out.stderr and "\r" not in out.stdout + out.stderr
    assert out.stdout.splitlines()[-1].startswith("final train accuracy")
