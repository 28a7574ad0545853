"""The package's layers, as the README's module map lists them: every module is on the map once, no module
imports one of a higher layer, and the imports have no circle (function-level and type-only imports count:
a circle there is still two modules that cannot be read apart)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "ecr_kubelet"
NOT_ON_THE_MAP = {"__init__", "__main__", "_build_info"}


def layers() -> list[tuple[str, list[str]]]:
    """(layer, modules) from the README's map, top layer first; a row with an empty layer cell continues
    the layer above it."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| layer | modules | concern |"):].split("\n\n", 1)[0].splitlines()[2:]
    rows: list[tuple[str, list[str]]] = []
    for line in table:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        modules = re.findall(r"`([a-z_]+)`", cells[1])
        if cells[0]:
            rows.append((cells[0], modules))
        else:
            rows[-1][1].extend(modules)
    return rows


def imports(module: str) -> set[str]:
    """Modules of the package that `module` imports, anywhere in it."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ecr_kubelet"):
            name = node.module.removeprefix("ecr_kubelet").lstrip(".")
            found.update([name] if name else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ecr_kubelet."))
    return {name for name in found if (PACKAGE / f"{name}.py").exists()} - {module}


def test_every_module_is_on_the_map_once() -> None:
    listed = [m for _, modules in layers() for m in modules]
    assert len(listed) == len(set(listed)), [m for m in listed if listed.count(m) > 1]
    present = {p.stem for p in PACKAGE.glob("*.py")} - NOT_ON_THE_MAP
    assert set(listed) == present


def test_no_module_imports_a_higher_layer() -> None:
    level = {m: -index for index, (_, modules) in enumerate(layers()) for m in modules}  # higher is larger
    upward = [(m, name) for m in level for name in sorted(imports(m)) if name in level and level[name] > level[m]]
    assert upward == []


def test_the_imports_have_no_circle() -> None:
    graph = {p.stem: imports(p.stem) for p in PACKAGE.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        for name in sorted(graph.get(module, ())):
            visit(name, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
