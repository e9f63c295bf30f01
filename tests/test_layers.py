"""The package's layers: a module imports only from its own subpackage and from lower layers,
and no modules import each other in a circle.

Every import of every module is checked, function-level and TYPE_CHECKING ones included, as
parsed by `ast` (nothing is imported). Subpackages of one layer are independent of each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fibseg"

# Lowest first. A subpackage may import from any earlier layer, never from a later one nor from
# another subpackage of its own layer.
LAYERS: list[set[str]] = [
    {"runtime"},
    {"io"},
    {"preprocess"},
    {"networks"},
    {"annotation", "demo"},
    {"training", "baselines"},
    {"inference"},
    {"evaluation", "structure"},
    {"pipeline"},
    {"cli"},
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every fibseg module or name that `path` imports."""
    parts = ["fibseg", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
        package = parts
    else:
        package = parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import x` and `from fibseg import x` import modules or subpackages
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "fibseg"]


def upward_imports(path: Path) -> list[str]:
    """The imports of `path` that break the layers, as 'file:line -> module'."""
    own = path.relative_to(PACKAGE).parts[0]
    wrong = []
    for line, name in imported(path):
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in RANK:
            wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} -> {name} (no layer)")
            continue
        target = parts[1]
        if target != own and RANK[target] >= RANK[own]:
            wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} -> {name}")
    return wrong


def test_every_subpackage_has_a_layer():
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert found == set(RANK)
    flat = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not flat, f"modules outside the subpackages: {flat}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    assert not upward_imports(path)


def test_an_upward_import_is_caught(tmp_path, monkeypatch):
    """The check itself fails on a bad import (here in a function, from a lower layer)."""
    package = tmp_path / "fibseg"
    for name in ("io", "training"):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    bad = package / "io" / "reader.py"
    bad.write_text("def f():\n    from ..training.train import train_run\n")
    good = package / "training" / "train.py"
    good.write_text("from fibseg.io.reader import f\nfrom . import tiles\n")
    monkeypatch.setitem(globals(), "PACKAGE", package)
    assert upward_imports(bad) == ["fibseg/io/reader.py:2 -> fibseg.training.train.train_run"]
    assert upward_imports(good) == []


def module_name(path: Path) -> str:
    parts = ["fibseg", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at module level or in a function); a
    name imported from a module counts as that module."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        targets = set()
        for _, dotted in imported(path):
            parts = dotted.split(".")
            while parts and ".".join(parts) not in paths:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        graph[name] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of `graph`: its strongly connected components of more than one module,
    and modules that import themselves (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1 or module in graph.get(module, ()):
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle():
    """No modules import each other in a circle, not even inside functions (where Python would
    let it pass): each module can be understood, and tested, from those below it."""
    assert import_cycles(import_graph()) == []


def test_an_import_cycle_is_caught(tmp_path, monkeypatch):
    """The check itself fails on a circle closed by a function-level import."""
    package = tmp_path / "fibseg"
    (package / "networks").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "networks" / "__init__.py").write_text("")
    (package / "networks" / "model.py").write_text("def f():\n    from .unet import g\n")
    (package / "networks" / "unet.py").write_text("from .model import f\n")
    (package / "networks" / "twin.py").write_text("from fibseg.networks import model\n")
    monkeypatch.setitem(globals(), "PACKAGE", package)
    assert import_cycles(import_graph()) == [["fibseg.networks.model", "fibseg.networks.unet"]]


def test_module_size():
    """No module much over 400 lines: a bigger one mixes concerns."""
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in modules()}
    assert {name: n for name, n in sizes.items() if n > 420} == {}
