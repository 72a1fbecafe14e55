"""The house keeps its plan: the engine imports no wing, wings import only downward, no import circle (function-level
imports included), at most 10 floors, no private name imported across modules, and ``import npgan`` loads the
engine alone (docs/architecture.md states these rules); and no test file imports another (shared test code lives in
its own module)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "npgan"
#: the wings, bottom to top: a module may import its own wing, lower wings and the engine
WINGS = ("data", "gan", "eval", "run")
MAX_FLOORS = 10


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Each module's intra-package imports (module and function level) and the private names imported across."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for m, p in mods.items():
        base = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    b = base[: len(base) - (node.level - 1)]
                    target = ".".join(b + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("npgan"):
                    continue
                for a in node.names:
                    full = f"{target}.{a.name}"
                    edges[m].add(full if full in mods else target)
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        private.append(f"{m} imports {a.name} from {target}")
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name in mods)
    return {m: {t for t in ts if t in mods and t not in (m, "npgan")} for m, ts in edges.items()}, private


def _wing(m: str) -> int:
    """0 for the engine, 1.. for the wings in WINGS order."""
    parts = m.split(".")
    return WINGS.index(parts[1]) + 1 if len(parts) > 1 and parts[1] in WINGS else 0


@pytest.fixture(scope="module")
def graph():
    mods = _modules()
    return _imports(mods)


def test_imports_run_downward_only(graph):
    edges, _ = graph
    upward = [f"{m} -> {t}" for m, ts in edges.items() for t in ts if _wing(t) > _wing(m)]
    assert not upward, "imports into a higher wing (the engine imports no wing): " + ", ".join(sorted(upward))


def test_no_circle_and_at_most_ten_floors(graph):
    edges, _ = graph
    floors: dict[str, int] = {}
    on_path: list[str] = []

    def floor(m: str) -> int:
        if m in on_path:
            raise AssertionError("import circle: " + " -> ".join(on_path[on_path.index(m):] + [m]))
        if m not in floors:
            on_path.append(m)
            floors[m] = 1 + max((floor(t) for t in edges[m]), default=0)
            on_path.pop()
        return floors[m]

    top = max(edges, key=floor)
    assert floors[top] <= MAX_FLOORS, f"{top} stands on {floors[top]} floors (at most {MAX_FLOORS})"


def test_no_private_name_is_imported_across_modules(graph):
    _, private = graph
    assert not private, "; ".join(private)


def test_import_npgan_loads_the_engine_only():
    code = ("import sys, npgan; print(sorted(m for m in sys.modules if m.startswith('npgan.') and m.split('.')[1] in "
            f"{WINGS!r})); print(sorted(m for m in ('matplotlib', 'PIL', 'sklearn', 'tqdm', 'safetensors', 'scipy', "
            "'torch', 'mpi4py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"import npgan loaded wing modules {out[0]}"
    assert out[1] == "[]", f"import npgan loaded {out[1]}"


def test_no_test_file_imports_another():
    """What several test files share lives in a module of its own (helpers, conv_problems, small_games, ...), not
    in one of them: a test file imported by another would run its tests' module-level code twice and hide the
    dependency."""
    tests = Path(__file__).resolve().parent
    found = []
    for f in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{f.name} imports {n}" for n in names if n.split(".")[0].startswith("test_")]
    assert not found, "; ".join(found)
