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


# ------------------------------------------------------------------------ documentation pages

PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                    re.M | re.S)
NOT_RUN = re.compile(r"<!--\s*not run:[^>]*-->\s*$")


def python_blocks(text):
    """(line, code, runs) of each ``python`` fenced block of a Markdown page."""
    blocks = []
    for m in _FENCE.finditer(text):
        if m.group("info").strip().split(" ")[0].lower() not in ("python", "py", "pycon"):
            continue
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        body = "\n".join(line[len(m.group("indent")):] for line in m.group("body").splitlines())
        blocks.append((text.count("\n", 0, m.start()) + 1, body + "\n",
                       not NOT_RUN.search(before)))
    return blocks


def test_blocks_are_found_and_markers_honoured():
    page = ("text\n```python\nx = 1\n```\n<!-- not run: needs 4 ranks -->\n```python\n"
            "boom()\n```\n```bash\nls\n```\n  ```python\n  y = 2\n  ```\n")
    assert python_blocks(page) == [(2, "x = 1\n", True), (6, "boom()\n", False),
                                   (12, "y = 2\n", True)]


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_code_blocks_run(page, tmp_path, monkeypatch):
    blocks = [b for b in python_blocks(page.read_text()) if b[2]]
    if not blocks:
        return  # a page without Python code (shell commands, YAML) has nothing to run here
    monkeypatch.chdir(tmp_path)  # blocks write their files ("ckpt.pt") into a fresh folder
    namespace = {"__name__": "__main__"}
    reset()
    try:
        for line, code, _ in blocks:
            if code.lstrip().startswith(">>>"):
                test = doctest.DocTestParser().get_doctest(code, namespace, f"{page.name}:{line}",
                                                           str(page), line)
                runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
                report = []
                runner.run(test, out=report.append, clear_globs=False)
                assert runner.failures == 0, "".join(report)
                continue
            try:
                exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"{page.relative_to(ROOT)}, the block at line {line} "
                                     f"fails: {type(exc).__name__}: {exc}") from exc
    finally:
        reset()
