"""tools/build.sh without building: how it finds, names and keys the tool sets (fast tier)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed")


def _locate(cache: Path, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NVIDIA_INSTALLER_TOOLS_CACHE": str(cache)}
    return subprocess.run(
        [str(root / "tools" / "build.sh"), "--locate"], env=env, capture_output=True, text=True, check=False
    )


def test_locate_in_an_empty_cache_names_what_to_run(tmp_path: Path) -> None:
    result = _locate(tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "tools/build: error: the lint tools for the current pins are not built: run tools/build.sh"
    )


def _tree_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "tools", copy / "tools")
    shutil.copy2(ROOT / "requirements.txt", copy / "requirements.txt")
    return copy


def _entries(root: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(root / "tools" / "build.sh"), "--entries"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split() for line in out.splitlines())


def _mark_built(cache: Path, entry: str) -> None:
    (cache / entry).mkdir(parents=True)
    (cache / entry / ".complete").touch()


def test_locate_succeeds_once_every_set_is_built_and_a_pin_change_invalidates_one(tmp_path: Path) -> None:
    root = _tree_copy(tmp_path)
    cache = tmp_path / "cache"
    entries = _entries(root)
    assert set(entries) == {"lint", "pulumi", "provider", "kubernetes"}
    for entry in entries.values():
        _mark_built(cache, entry)
    assert _locate(cache, root).stdout.strip() == str(cache / "bin")
    # A new provider pin (requirements.txt) invalidates the provider only.
    requirements = root / "requirements.txt"
    pinned = requirements.read_text()
    requirements.write_text(pinned.replace("pulumi-kubernetes==4.25.0", "pulumi-kubernetes==4.26.0"))
    result = _locate(cache, root)
    assert result.returncode == 1
    assert "the provider tools for the current pins are not built" in result.stderr
    changed = _entries(root)
    assert changed["provider"] != entries["provider"]
    assert {k: v for k, v in changed.items() if k != "provider"} == {
        k: v for k, v in entries.items() if k != "provider"
    }


def test_provider_pin_is_exact() -> None:
    text = (ROOT / "requirements.txt").read_text()
    pins = [line for line in text.splitlines() if line.startswith("pulumi-kubernetes")]
    assert len(pins) == 1 and pins[0].split()[0].count("==") == 1, pins
