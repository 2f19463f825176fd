"""How the tests are organised (issue 9, "tests mirror the source"): shared helpers live in plain modules
that tests and benchmarks import; conftest.py files hold only fixtures and hooks; no test module renders
a stack while it is imported, so a broken stack fails a test instead of the whole collection."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BENCH = ROOT / "bench"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_fixture(node: ast.FunctionDef) -> bool:
    """`@pytest.fixture` or `@pytest.fixture(...)`."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
    return False


def _conftest_offenders(path: Path) -> list[str]:
    """Top-level statements of a conftest.py that are neither imports, fixtures nor pytest hooks."""
    offenders = []
    for index, node in enumerate(_tree(path).body):
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the module docstring
        if isinstance(node, ast.FunctionDef) and (_is_fixture(node) or node.name.startswith("pytest_")):
            continue
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["pytest_plugins"]:
            continue
        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return offenders


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import in a file, relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: list[tuple[str, list[str], int]] = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            out.append((module, [alias.name for alias in node.names], node.lineno))
    return out


def _module_file(module: str) -> Path | None:
    candidate = ROOT.joinpath(*module.split("."))
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if path.is_file():
            return path
    return None


def _fixtures_of(path: Path) -> set[str]:
    return {n.name for n in _tree(path).body if isinstance(n, ast.FunctionDef) and _is_fixture(n)}


def test_conftest_files_hold_only_fixtures_and_hooks() -> None:
    conftests = sorted(TESTS.rglob("conftest.py"))
    assert conftests, "no conftest.py found: the test looks in the wrong place"
    offenders = [line for path in conftests for line in _conftest_offenders(path)]
    assert offenders == [], "helpers belong in plain modules (tests/…/*.py), not conftest.py:\n" + "\n".join(
        offenders
    )


def test_nothing_imports_a_conftest() -> None:
    sources = sorted([*TESTS.rglob("*.py"), *BENCH.glob("*.py")])
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sources
        for module, names, line in _imports(path)
        if module.split(".")[-1] == "conftest" or "conftest" in names
    ]
    assert offenders == [], "import the plain helper module instead:\n" + "\n".join(offenders)


def test_benchmarks_import_no_test_fixture() -> None:
    offenders = []
    for path in sorted(BENCH.glob("*.py")):
        for module, names, line in _imports(path):
            source = _module_file(module) if module.split(".")[0] == "tests" else None
            fixtures = _fixtures_of(source) if source is not None else set()
            offenders += [f"{path.relative_to(ROOT)}:{line}: {module}.{n}" for n in names if n in fixtures]
    assert offenders == [], "a benchmark calls the plain helper behind a fixture:\n" + "\n".join(offenders)


# Imports every test module with the two ways into a stack (reading a stack file, running the program
# under Pulumi's mocks) replaced by a function that raises; prints the modules that hit it.
_IMPORT_PROBE = """
import importlib, json, sys, traceback
import pulumi.runtime
import components.render

class StackRenderedAtImport(Exception):
    pass

def refuse(*args, **kwargs):
    raise StackRenderedAtImport()

pulumi.runtime.set_mocks = refuse
components.render.stack_config = refuse
components.render.render_objects = refuse
found = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except StackRenderedAtImport:
        frames = [f for f in traceback.extract_tb(sys.exc_info()[2]) if f.filename.endswith(".py")]
        found[name] = next((f"line {f.lineno}: {f.line}" for f in frames if f.name == "<module>"), "?")
print(json.dumps(found))
"""


def test_no_test_module_renders_a_stack_when_imported() -> None:
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in TESTS.rglob("test_*.py"))
    assert "tests.test_layout" in modules
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found: dict[str, str] = json.loads(result.stdout.splitlines()[-1])
    assert found == {}, (
        "these modules render a stack at import time (make it a fixture, so a broken stack fails a "
        "test, not the collection):\n" + "\n".join(f"{m}: {where}" for m, where in sorted(found.items()))
    )
