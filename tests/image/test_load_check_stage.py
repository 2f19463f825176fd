"""The image's load-check stage script (image/build/run-load-check.sh) on compile output of type `auto`:
both module types are booted against the kernel, the kernel package is fetched once, and the combined
verdict lands in verdict.env for the payload. LOAD_CHECK=off records `skipped` without booting."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.image.compile_cache import CompiledModules
from tests.pins import PINS
from tests.verify.verdict_run import parse_env

ROOT = Path(__file__).resolve().parents[2]
STAGE_SCRIPT = ROOT / "image" / "build" / "run-load-check.sh"
LOAD_CHECK = ROOT / "image" / "verify" / "load-check.sh"
KERNEL = f"{PINS['KERNEL_61']}-amd64"


def _auto_output(compiled_modules: CompiledModules, dest: Path) -> Path:
    """What compile-modules.sh leaves for MODULE_TYPE=auto: one directory per type and one build.env."""
    for module_type in ("open", "proprietary"):
        shutil.copytree(compiled_modules(KERNEL, module_type), dest / module_type)
    build_env = (dest / "open" / "build.env").read_text()
    lines = [
        'MODULE_TYPES="open proprietary"' if line.startswith("MODULE_TYPES=") else line
        for line in build_env.splitlines()
    ]
    (dest / "build.env").write_text("\n".join(lines) + "\n")
    return dest


def _run_stage(modules: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STAGE_SCRIPT), str(modules)],
        env={**os.environ, "LOAD_CHECK_SCRIPT": str(LOAD_CHECK), "ARCH": "amd64", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@pytest.mark.slow
def test_auto_output_is_checked_per_type_with_one_kernel_fetch(
    compiled_modules: CompiledModules, tmp_path: Path
) -> None:
    modules = _auto_output(compiled_modules, tmp_path / "modules")
    shutil.rmtree("/var/tmp/load-check-kernels", ignore_errors=True)
    result = _run_stage(modules)
    assert result.returncode == 0, result.stderr
    verdict = parse_env((modules / "verdict.env").read_text())
    assert verdict["LOAD_CHECK_VERDICT"] == "pass"
    assert verdict["LOAD_CHECK_KERNEL"] == KERNEL
    assert verdict["LOAD_CHECK_DETAIL"].startswith("open: loads")
    assert "; proprietary: loads" in verdict["LOAD_CHECK_DETAIL"]
    # The second type reuses the extracted kernel instead of downloading it again.
    fetches = [line for line in result.stderr.splitlines() if "timings: fetch" in line]
    assert len(fetches) == 2, result.stderr
    first, second = (float(line.split("fetch ")[1].split("s")[0]) for line in fetches)
    assert second < 1.0 < first, fetches  # a download + dpkg-deb -x takes seconds; a cache hit does not


def test_load_check_off_records_skipped_without_booting(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "build.env").write_text(f'KERNEL_NAME={KERNEL}\nMODULE_TYPES="open"\nARCH=amd64\n')
    result = _run_stage(modules, LOAD_CHECK="off", LOAD_CHECK_SCRIPT="/nonexistent/load-check.sh")
    assert result.returncode == 0, result.stderr
    verdict = parse_env((modules / "verdict.env").read_text())
    assert verdict["LOAD_CHECK_VERDICT"] == "skipped"
    assert "NOT proven to load" in result.stderr


def test_unknown_load_check_mode_fails_with_one_line(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "build.env").write_text(f'KERNEL_NAME={KERNEL}\nMODULE_TYPES="open"\nARCH=amd64\n')
    result = _run_stage(modules, LOAD_CHECK="maybe")
    assert result.returncode != 0
    assert "LOAD_CHECK='maybe' is not one of: on off" in result.stderr
    assert not (modules / "verdict.env").exists()
