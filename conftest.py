"""Repository-root pytest configuration: the namespace docstring examples run in.

``python -m pytest --doctest-modules ddp launcher`` runs every ``>>>`` example in the package
with ``ddp``, ``torch`` (ddp itself, as a user would import it), ``np``, ``nn`` and ``F`` already
imported, the way the examples are written.
"""
import numpy as np
import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_names(request):
    if not isinstance(request.node, DoctestItem):
        return  # ordinary tests set up what they need themselves
    doctest_namespace = request.getfixturevalue("doctest_namespace")
    import ddp
    import ddp.nn as nn
    import ddp.nn.functional as F
    doctest_namespace.update(ddp=ddp, torch=ddp, np=np, nn=nn, F=F)
    doctest_namespace["tmp_path"] = request.getfixturevalue("tmp_path")  # examples that write files
    ddp.manual_seed(0)
