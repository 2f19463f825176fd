"""Lint gates: the style rules of the project, enforced by the real tools (all run offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.repo_files import tracked_and_new_files

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    if path.suffix:
        return False
    with path.open("rb") as handle:
        first_line = handle.readline()
    return first_line.startswith(b"#!") and (b"bash" in first_line or first_line.rstrip().endswith(b"/sh"))


SHELL_SCRIPTS = sorted(p for p in tracked_and_new_files() if _is_shell_script(p))
DOCKERFILES = sorted(p for p in tracked_and_new_files() if p.name == "Dockerfile")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)


def test_the_repository_has_shell_scripts_to_check() -> None:
    # Guards the discovery above: a broken filter would make the shellcheck test vacuous.
    names = {p.relative_to(ROOT).as_posix() for p in SHELL_SCRIPTS}
    assert "scripts/test.sh" in names
    assert ".ci/run" in names


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shell_script_is_shellcheck_clean(script: Path) -> None:
    result = _run([str(BIN / "shellcheck"), "--external-sources", "--severity=style", str(script)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_bash_script_uses_strict_mode(script: Path) -> None:
    text = script.read_text()
    if "bash" not in text.splitlines()[0]:
        pytest.skip("POSIX sh script (busybox init or similar): no pipefail there")
    assert "set -euo pipefail" in text, f"{script.name}: missing 'set -euo pipefail'"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    result = _run([str(BIN / "hadolint"), str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_is_ruff_clean() -> None:
    result = _run([str(BIN / "ruff"), "check", "."])
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_is_ruff_formatted() -> None:
    result = _run([str(BIN / "ruff"), "format", "--check", "."])
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_is_mypy_strict_clean() -> None:
    # About 13 s with a cold cache on 2 cores (the Pulumi SDKs are large), under 1 s warm (.mypy_cache).
    candidates = [ROOT / t for t in ("__main__.py", "components", "tests", "bench", "policy")]
    targets = [str(p) for p in candidates if p.is_file() or any(p.glob("**/*.py"))]
    result = _run([str(BIN / "mypy"), *targets])
    assert result.returncode == 0, result.stdout + result.stderr


WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _actionlint() -> Path:
    """actionlint built from its pinned Go module (tools/lint); seconds when cached."""
    out = subprocess.run(
        [str(ROOT / "tools" / "build.sh"), "--only", "lint"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip()) / "actionlint"


def _run_actionlint(files: list[Path]) -> subprocess.CompletedProcess[str]:
    # shellcheck from the venv checks the workflows' run: scripts too.
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(ROOT)}
    return subprocess.run(
        [str(_actionlint()), "-color=false", *map(str, files)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_workflows_are_actionlint_clean() -> None:
    assert {p.name for p in WORKFLOWS} == {"pull-request.yml", "deploy.yml", "drift.yml"}
    result = _run_actionlint(WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    # Guards the gate above: an unknown expression context and a shell error must be reported.
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ matrix.nothing }} && cd $UNQUOTED\n"
    )
    result = _run_actionlint([bad])
    assert result.returncode != 0
    assert "matrix" in result.stdout


YAML_FILES = sorted(p for p in tracked_and_new_files() if p.suffix in (".yml", ".yaml"))


def test_yaml_is_yamllint_clean() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in YAML_FILES}
    assert {"Pulumi.yaml", "stacks/Pulumi.prod.yaml", ".github/workflows/deploy.yml"} <= names
    result = _run(
        [str(BIN / "yamllint"), "--strict", "-c", str(ROOT / ".yamllint.yaml"), *map(str, YAML_FILES)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_catches_broken_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("config:\n  a: 1\n  a: 2\n")  # a duplicate key
    result = _run([str(BIN / "yamllint"), "--strict", "-c", str(ROOT / ".yamllint.yaml"), str(bad)])
    assert result.returncode != 0 and "duplication" in result.stdout


def _setup_plan(*args: str) -> subprocess.CompletedProcess[str]:
    # --setup-plan resolves every selected test's fixtures and parameters without running any of them.
    return _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--setup-plan", *args])


def test_every_slow_and_e2e_test_resolves_its_fixtures() -> None:
    """The slow and e2e tiers run for half an hour: a test asking for a fixture nobody provides (a
    parametrize decorator left on a helper) must fail here, in seconds, not at the end of CI."""
    result = _setup_plan("-m", "slow or e2e", "tests")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_the_setup_plan_gate_catches_an_unknown_fixture(tmp_path: Path) -> None:
    test = tmp_path / "test_unknown_fixture.py"
    test.write_text("def test_x(release):\n    assert release\n")
    result = _setup_plan("--rootdir", str(tmp_path), str(test))
    assert result.returncode != 0 and "fixture 'release' not found" in result.stdout
