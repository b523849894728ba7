"""Documentation that runs: every ``>>>`` example in the docstrings of ``ddp`` and
``launcher``, and the Python code blocks of README.md and docs/*.md.

Docstring examples run as ``python -m pytest --doctest-modules ddp launcher`` runs them (the
names of tests/examples_namespace.py, pytest's default ELLIPSIS), here inside the suite's own
command. A documentation page's ``python`` blocks run in order in one namespace (a page reads
top to bottom), in a fresh folder, as written. A block that is not meant to run on one CPU
process (it needs several MPI ranks, a GPU, a cluster) carries the HTML comment
``<!-- not run: why -->`` on the line before its fence; it is invisible on the rendered page.
"""
import doctest
import importlib
import os
import pathlib
import re

import pytest

from tests.examples_namespace import example_names, reset

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("ddp", "launcher")


# ------------------------------------------------------------------------ docstring examples

def _module_names():
    """Every module of the packages, as ``--doctest-modules`` collects them (no __main__)."""
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name in ("__main__.py", "conftest.py"):
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstring_examples():
    finder = doctest.DocTestFinder()
    found = []
    for name in _module_names():
        module = importlib.import_module(name)
        found += [t for t in finder.find(module, name) if t.examples
                  and (t.filename or "").startswith(str(ROOT))]   # not re-exported ones
    return sorted({t.name: t for t in found}.values(), key=lambda t: t.name)


DOCSTRING_EXAMPLES = _docstring_examples()


def test_there_are_docstring_examples():
    assert len(DOCSTRING_EXAMPLES) > 400  # every public function has one


@pytest.mark.parametrize("test", DOCSTRING_EXAMPLES, ids=[t.name for t in DOCSTRING_EXAMPLES])
def test_docstring_example(test, tmp_path):
    test.globs = dict(test.globs, **example_names(tmp_path))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = []
    reset()
    try:
        runner.run(test, out=report.append, clear_globs=False)
    finally:
        reset()
    assert runner.failures == 0, "".join(report)
