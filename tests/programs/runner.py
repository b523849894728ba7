"""Run a program from ``examples/`` as its authors would (``python main.py --flags``), with
``import torch`` meaning ddp and torchvision the synthetic stand-in (``shims/``).

``python -m tests.programs.runner [--torch] NAME/FILE.py ARGS...`` runs one by hand; ``--torch``
runs it under the real PyTorch instead (to check a program, its flags and the stand-in data).
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXAMPLES = HERE / "examples"
ALIAS = HERE / "shims" / "alias"        # torch -> ddp
DATA = HERE / "shims" / "data"          # torchvision, matplotlib stand-ins


def environment(real_torch=False, extra=None):
    env = dict(os.environ)
    paths = ([] if real_torch else [str(ALIAS)]) + [str(DATA), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("FAKE_TRAIN_SIZE", "512")
    env.setdefault("FAKE_TEST_SIZE", "256")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra or {})
    return env


def run(program, args=(), cwd=None, real_torch=False, env=None, timeout=900):
    """Run ``examples/<program>`` in ``cwd``; returns the CompletedProcess (text output)."""
    script = EXAMPLES / program
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd,
                          env=environment(real_torch, env), capture_output=True, text=True,
                          timeout=timeout)


if __name__ == "__main__":
    argv = sys.argv[1:]
    real = argv[:1] == ["--torch"]
    argv = argv[1:] if real else argv
    out = run(argv[0], argv[1:], cwd=os.getcwd(), real_torch=real, timeout=None)
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)
    sys.exit(out.returncode)
