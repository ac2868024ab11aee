"""The module graph: no import circle (lazy imports inside functions included), and the method
free of Lightning and data code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("explainable_ser", "data_modules")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every module this file imports, at the top or inside a function, resolved to a name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # "from pkg import module"
    return out


def project_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in imports_of(path, name) if m in files and m != name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_among_the_projects_modules():
    graph = project_graph()
    assert {
        "explainable_ser.fit",
        "explainable_ser.training.recipe",
        "explainable_ser.model.ser",
        "data_modules.datamodule",
    } <= set(graph)
    assert "explainable_ser.training.assembly" in graph["explainable_ser.evaluate"]  # lazy ones count too
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize(
    "module",
    [
        "explainable_ser.model.ser",
        "explainable_ser.model.bottleneck",
        "explainable_ser.model.encoders",
        "explainable_ser.model.prompts",
    ],
)
def test_the_method_imports_no_lightning_and_no_data_code(module):
    path = ROOT / (module.replace(".", "/") + ".py")
    found = imports_of(path, module)
    assert not {m for m in found if m.split(".")[0] in ("lightning", "data_modules", "lhotse")}


def test_the_schema_loads_without_torch_lightning_or_lhotse():
    import subprocess
    import sys

    code = (
        "import sys, explainable_ser.config as c; c.load_config(['demo']); "
        "print(sorted(m for m in ('torch', 'lightning', 'lhotse') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
