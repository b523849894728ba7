"""Repository-root pytest configuration: the namespace docstring examples run in.

``python -m pytest --doctest-modules ddp launcher`` runs every ``>>>`` example in the package
with the names of tests/examples_namespace.py (``ddp``, ``torch`` = ddp, ``np``, ``nn``, ``F``,
``dist``, ``tmp_path``) already there, the way the examples are written; tests/test_docs.py runs
the same examples inside ``python -m pytest tests``.
"""
import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_names(request):
    if not isinstance(request.node, DoctestItem):
        yield  # ordinary tests set up what they need themselves
        return
    from tests.examples_namespace import example_names, reset
    request.getfixturevalue("doctest_namespace").update(
        example_names(request.getfixturevalue("tmp_path")))
    reset()
    yield
    reset()
