"""Slow tier: real modules booted under QEMU (TCG) in their real Debian kernel, and negative controls.

Modules come from the shared `compiled_modules` fixture (tests/conftest.py, backed by
tests/image/compile_cache.py: compiled once, cached on disk). Kernel image packages are fetched by
load-check.sh itself (`apt-get download`, `dpkg-deb -x`) into one cache for the session, so each pinned
kernel is downloaded once per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.image.compile_cache import CompiledModules
from tests.pins import PINS
from tests.verify.verdict_run import LoadCheckRun, run_load_check

pytestmark = pytest.mark.slow

K61 = f"{PINS['KERNEL_61']}-amd64"
K61_CLOUD = f"{PINS['KERNEL_61']}-cloud-amd64"
K61_OLD = f"{PINS['KERNEL_61_OLD']}-amd64"
K612 = f"{PINS['KERNEL_612']}-amd64"


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Extracted linux-image packages, shared by every boot of this session."""
    return tmp_path_factory.mktemp("kernel-packages")


def _load_check(modules: Path, release: str, out: Path, kernel_cache: Path, *extra: str) -> LoadCheckRun:
    return run_load_check(modules, release, out, "amd64", kernel_cache, *extra)


@pytest.mark.parametrize(
    ("release", "module_type"),
    [(K61, "open"), (K61, "proprietary"), (K61_CLOUD, "open"), (K612, "open"), (K612, "proprietary")],
)
def test_modules_load_into_their_own_kernel(
    compiled_modules: CompiledModules, kernel_cache: Path, tmp_path: Path, release: str, module_type: str
) -> None:
    modules = compiled_modules(release, module_type)
    result, values, log = _load_check(modules, release, tmp_path, kernel_cache)
    assert result.returncode == 0, f"{result.stderr}\n{log[-3000:]}"
    assert values["LOAD_CHECK_VERDICT"] == "pass"
    assert values["LOAD_CHECK_KERNEL"] == release
    assert values["LOAD_CHECK_DETAIL"].startswith("loads: ")
    assert f"LOAD_CHECK BEGIN kernel={release} " in log
    assert "NVRM: No NVIDIA GPU found." in log


@dataclass(frozen=True)
class NegativeControl:
    """One kernel/modules mismatch and the message it must produce."""

    release: str
    extra: tuple[str, ...]
    category: str
    evidence: str


@pytest.mark.parametrize(
    "case",
    [
        NegativeControl(K61_OLD, (), "wrong-abi", "disagrees about version of symbol module_layout"),
        NegativeControl(K612, (), "wrong-series", "struct module size"),
        NegativeControl(K61, ("--without-deps",), "missing-dependency", "nvidia.ko needs symbol drm_"),
    ],
    ids=["other-abi", "other-series", "deps-left-out"],
)
def test_negative_controls_fail_with_their_own_message(
    compiled_modules: CompiledModules, kernel_cache: Path, tmp_path: Path, case: NegativeControl
) -> None:
    modules = compiled_modules(K61, "open")
    result, values, log = _load_check(modules, case.release, tmp_path, kernel_cache, *case.extra)
    assert result.returncode == 1, f"{result.stderr}\n{log[-3000:]}"
    failures = [line for line in result.stderr.splitlines() if line.startswith("load-check: FAIL")]
    assert len(failures) == 1, result.stderr
    assert f"load-check: FAIL {case.release}: {case.category}: " in failures[0]
    assert case.evidence in failures[0]
    assert values["LOAD_CHECK_VERDICT"] == "fail"
    assert values["LOAD_CHECK_DETAIL"].startswith(f"{case.category}: ")


def test_time_limit_stops_the_guest_with_a_timeout_verdict(
    compiled_modules: CompiledModules, kernel_cache: Path, tmp_path: Path
) -> None:
    """A 3 s limit ends the boot long before /init (6-20 s under TCG): one timeout line, no hang."""
    modules = compiled_modules(K61, "open")
    result, values, _log = _load_check(modules, K61, tmp_path, kernel_cache, "--timeout", "3")
    assert result.returncode == 1, result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("load-check: FAIL")]
    assert len(failures) == 1, result.stderr
    assert values["LOAD_CHECK_DETAIL"].startswith("timeout: QEMU was stopped at the time limit")
