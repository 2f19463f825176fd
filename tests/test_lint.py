"""Lint gates: the style rules of the project, enforced by the real tools (all run offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tracked_and_new_files() -> list[Path]:
    """Files git tracks plus untracked ones it does not ignore: what a commit would contain."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()]


def _is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    if path.suffix:
        return False
    with path.open("rb") as handle:
        first_line = handle.readline()
    return first_line.startswith(b"#!") and (b"bash" in first_line or first_line.rstrip().endswith(b"/sh"))


SHELL_SCRIPTS = sorted(p for p in _tracked_and_new_files() if _is_shell_script(p))
DOCKERFILES = sorted(p for p in _tracked_and_new_files() if p.name == "Dockerfile")


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


@pytest.mark.slow
def test_python_is_mypy_strict_clean() -> None:
    # Slow tier: a cold mypy run over the Pulumi SDKs' stubs takes longer than the fast tier allows.
    candidates = [ROOT / t for t in ("__main__.py", "components", "tests", "bench", "policy")]
    targets = [str(p) for p in candidates if p.is_file() or any(p.glob("**/*.py"))]
    result = _run([str(BIN / "mypy"), *targets])
    assert result.returncode == 0, result.stdout + result.stderr
