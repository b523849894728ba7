"""The house has floors, and every import goes down (or stays on its floor): a module never
imports one on a higher floor — not at the top, not inside a function — and no files import
each other in a circle.

The floors, lowest first (docs/architecture.md draws them):

1. ``backend``: NumPy or CuPy, devices, dtypes, random streams, array helpers.
2. ``autograd``: the recorded graph and the engine that walks it. They work on arrays; where
   they hand back a Tensor they use the class ``ddp.tensor`` registers in
   ``ddp.autograd.graph`` (``bind_tensor``), the one seam between the floors.
3. ``ops``: the differentiable primitives (forward and backward side by side), the autocast
   hook the entry points wear, and ``creation`` (arrays wrapped as Tensors).
4. ``tensor``: the Tensor class, PyTorch's calling conventions mapped onto ops.
5. ``functional``: ``ddp.cat``/``ddp.exp``/..., ``ddp.nn.functional``, quantized tensors.
6. ``nn, optim, data``: modules, optimizers, datasets, checkpoints, metrics.
7. ``distributed``: communicators, collectives, DDP, SyncBatchNorm, DistributedSampler.
8. ``amp``: autocast regions, GradScaler, gradient accumulation, progress bars (rank-aware
   wrappers), dynamic quantization (``ddp.ao``: it swaps a model's modules).
9. ``package``: ``import ddp``'s face, the namespaces programs import, ONNX export and the
   profiler (both trace whatever runs).
10. ``launcher``: the launcher and ``ddp-bench``, which starts jobs through it.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# (floor name, module patterns): "a.b" is that module; "a.b.*" are the modules inside package a.b.
FLOORS = [
    ("backend", ["ddp.backend", "ddp._malloc", "ddp._format", "ddp._version", "ddp._shared_memory",
                 "ddp.kernels", "ddp.kernels.*"]),
    ("autograd", ["ddp.autograd", "ddp.autograd.*"]),
    ("ops", ["ddp.ops", "ddp.ops.*", "ddp.creation"]),
    ("tensor", ["ddp.tensor", "ddp._grads"]),
    ("functional", ["ddp._functions", "ddp.nn.functional", "ddp.nn.functional.*", "ddp.qtensor",
                    "ddp.sparse", "ddp._legacy_types"]),
    ("nn, optim, data", ["ddp.nn.*", "ddp.optim", "ddp.optim.*", "ddp.utils.data.*",
                         "ddp._typename",
                         "ddp.serialization", "ddp.serialization.*", "ddp.metrics"]),
    ("distributed", ["ddp.distributed", "ddp.distributed.*", "ddp.nn.parallel",
                     "ddp.nn.parallel.*", "ddp.nn.sync_batchnorm", "ddp.utils.data.distributed",
                     # package faces that hand on names from this floor
                     "ddp.nn", "ddp.utils", "ddp.utils.data",
                     "ddp.utils.hooks"]),  # the public name of ddp.autograd.hooks' handle
    ("amp", ["ddp.amp", "ddp.amp.*", "ddp.accumulation", "ddp.progress", "ddp.ao", "ddp.ao.*",
             "ddp.quantization", "ddp.training"]),
    ("package", ["ddp", "ddp.cuda", "ddp.onnx", "ddp.onnx.*", "ddp.profiler", "ddp.accelerator",
                 "ddp.backends", "ddp.backends.*", "ddp.multiprocessing", "ddp.multiprocessing.*",
                 "ddp._compat", "ddp.version"]),
    ("launcher", ["launcher", "launcher.*", "ddp.bench", "ddp.bench.*"]),
]


def floor_of(module: str) -> int:
    """The floor of a module: the most specific pattern that names it decides."""
    best, best_len = None, -1
    for level, (_, patterns) in enumerate(FLOORS):
        for pat in patterns:
            if pat.endswith(".*"):
                hit = module.startswith(pat[:-1])
                length = len(pat) - 1
            else:
                hit = module == pat
                length = len(pat) + 1  # an exact name beats a wildcard of the same length
            if hit and length > best_len:
                best, best_len = level, length
    if best is None:
        raise LookupError(f"{module} has no floor: add it to FLOORS in tests/test_floors.py")
    return best


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: pathlib.Path):
    """(line, imported module) for every import of ddp or launcher in a file, at any depth."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub) else target))
    return [(line, name) for line, name in found if name.split(".")[0] in ("ddp", "launcher")]


def project_files():
    return sorted(p for d in ("ddp", "launcher") for p in (ROOT / d).rglob("*.py"))


def test_every_module_has_a_floor():
    for path in project_files():
        floor_of(_module_name(path))


def upward_imports(module, imports):
    """The imports of ``module`` that reach a higher floor, described."""
    mine = floor_of(module)
    return [f"line {line}: {name} (floor '{FLOORS[floor_of(name)][0]}')"
            for line, name in imports if floor_of(name) > mine]


@pytest.mark.parametrize("path", project_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down(path):
    module = _module_name(path)
    upward = upward_imports(module, imports_of(path))
    assert not upward, (f"{module} (floor '{FLOORS[floor_of(module)][0]}') imports from higher "
                        f"floors:\n" + "\n".join(upward))


# Circles still standing, each with the change that removes it. A listed circle that is gone
# fails the test below, so the list only shrinks.
KNOWN_CIRCLES = set()


def test_no_circles():
    """No files import each other in a loop (package faces only hand names on: an import of
    ``ddp.nn.module`` is an edge to that file, not to ``ddp.nn``)."""
    graph = {}
    for path in project_files():
        module = _module_name(path)
        if path.name == "__init__.py" and len(path.read_text()) < 2500 and not any(
                isinstance(n, (ast.FunctionDef, ast.ClassDef))
                for n in ast.parse(path.read_text()).body):
            continue  # a face: it defines nothing
        graph[module] = {name for _, name in imports_of(path)} - {module}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = {tuple(c) for c in circles}
    assert not found - KNOWN_CIRCLES, "files that import each other in a circle:\n" + "\n".join(
        " <-> ".join(c) for c in sorted(found - KNOWN_CIRCLES))
    assert not KNOWN_CIRCLES - found, f"gone, remove from KNOWN_CIRCLES: {KNOWN_CIRCLES - found}"


def test_the_check_can_fail():
    """An op importing nn, or the engine importing the package root, is caught."""
    assert upward_imports("ddp.ops.shape", [(3, "ddp.nn.module")])
    assert upward_imports("ddp.autograd.engine", [(7, "ddp")])
    assert not upward_imports("ddp.tensor", [(1, "ddp.ops.shape"), (2, "ddp.autograd.graph")])
