"""The layering of docs/architecture.md is checked, not hoped for: the import-linter contracts of pyproject.toml
(`lint-imports`), no import cycles between modules, `ruff check`, and mypy on the public API ([tool.mypy]), all in
the default test run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
LINTED = ["screening", "workers", "tests", "benchmarks"]
# The public API, type-checked with [tool.mypy] of pyproject.toml; tests/typing_check.py is what a user's type checker
# sees of it (screening.open_results, screening.Client, Results.query, Screen.query: their real types, not Any).
TYPE_CHECKED = [
    "screening/__init__.py", "screening/store/reader.py", "screening/results.py", "screening/client.py",
    "screening/spec.py", "tests/typing_check.py",
]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def _report(proc: subprocess.CompletedProcess) -> str:
    return f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def test_layer_contracts_are_kept():
    proc = _run([sys.executable, "-c", LINT_IMPORTS], REPO)
    assert proc.returncode == 0, _report(proc)
    assert "0 broken" in proc.stdout, _report(proc)


def test_ruff_is_clean():
    proc = _run([sys.executable, "-m", "ruff", "check", "--no-cache", *LINTED], REPO)
    assert proc.returncode == 0, _report(proc)


def _mypy(paths: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # a fresh check every time, no cache written into the checkout
    return _run([sys.executable, "-m", "mypy", f"--cache-dir={os.devnull}", "--no-color-output", *paths], cwd)


def test_mypy_passes_on_the_public_api():
    proc = _mypy(TYPE_CHECKED, REPO)
    assert proc.returncode == 0, _report(proc)
    assert f"no issues found in {len(TYPE_CHECKED)} source files" in proc.stdout, _report(proc)


def test_mypy_can_fail(tmp_path):
    """The configuration reports type errors, and assert_type (tests/typing_check.py) fails on a value typed Any."""
    (tmp_path / "bad.py").write_text(
        "import json\nfrom typing import assert_type\n\n\n"
        "def f() -> None:\n    count: int = 'many'\n    assert_type(json.loads('1'), int)\n"
    )
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    proc = _mypy(["bad.py"], tmp_path)
    assert proc.returncode == 1, _report(proc)
    for code in ("[assignment]", 'Expression is of type "Any", not "int"  [assert-type]'):
        assert code in proc.stdout, _report(proc)


def _copy_tree(tmp_path: Path) -> Path:
    """The packages and the configuration, without the bundled data: a tree lint-imports can check on its own."""
    root = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "data", "*.pyc")
    for package in ("screening", "workers"):
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    "module, line, contract",
    [
        # the bottom layer reaching up into the middle layer
        ("screening/core/regions.py", "import screening.store.layout", "screening.core imports nothing else"),
        # a lazy import against the flow counts too
        ("screening/store/reader.py", "def _late():\n    from screening.report.hits import top_hits\n", "Dependencies point down"),
        # the library launching the driver
        ("screening/plan.py", "from workers import driver", "screening never imports workers/"),
    ],
)
def test_an_import_against_the_flow_breaks_a_contract(tmp_path, module, line, contract):
    root = _copy_tree(tmp_path)
    path = root / module
    path.write_text(path.read_text() + "\n\n" + line + "\n")
    proc = _run([sys.executable, "-c", LINT_IMPORTS], root)
    assert proc.returncode != 0, _report(proc)
    assert f"{contract}" in proc.stdout and "BROKEN" in proc.stdout, _report(proc)


def test_ruff_can_fail(tmp_path):
    (tmp_path / "bad.py").write_text("import os\n\n\ndef f():\n    unused = 1\n    return undefined_name\n")
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    proc = _run([sys.executable, "-m", "ruff", "check", "--no-cache", "bad.py"], tmp_path)
    assert proc.returncode == 1, _report(proc)
    for code in ("F401", "F841", "F821"):
        assert code in proc.stdout, _report(proc)


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each one an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_between_modules():
    """No module of screening/ or workers/ reaches itself through imports (lazy imports included). Packages of the
    middle layer do refer to each other (io.staging -> store.location, store.export -> io.paths), their modules never
    in a circle."""
    grimp = pytest.importorskip("grimp")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    graph = grimp.build_graph("screening", "workers", cache_dir=None)
    assert len(graph.modules) > 50
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join(c) + "\n    " + "\n    ".join(
            f"{a} -> {b}" for a in c for b in sorted(graph.find_modules_directly_imported_by(a)) if b in c)
        for c in cycles)


def test_the_cycle_check_can_fail():
    grimp = pytest.importorskip("grimp")
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    assert _cycles(graph) == []
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]
