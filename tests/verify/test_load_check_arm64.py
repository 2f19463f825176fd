"""Slow tier, arm64: cross-compiled modules booted under qemu-system-aarch64 (TCG) in their real Debian arm64
kernel by the project's own load-check.sh, unchanged, with the same markers and verdicts as on amd64; and
the negative controls: another arm64 ABI, another series, amd64 modules for the arm64 guest.

Kernel images and the guest's busybox are Debian's arm64 packages that .ci/system-deps.sh unpacked under
PINS ARM64_ROOT (kernels/ is laid out as load-check.sh's --kernel-cache), so nothing is downloaded here.
Modules come from the shared compile cache (tests/image/test_compile_arm64.py compiles the same ones).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.image.compile_cache import ARM64_ROOT, CompiledModules
from tests.pins import PINS
from tests.verify.verdict_run import LoadCheckRun, run_load_check

pytestmark = pytest.mark.slow

K61 = f"{PINS['KERNEL_61']}-arm64"
K61_OLD = f"{PINS['KERNEL_61_OLD']}-arm64"
K612 = f"{PINS['KERNEL_612']}-arm64"
K61_CLOUD = f"{PINS['KERNEL_61']}-cloud-arm64"
KERNELS = ARM64_ROOT / "kernels"
BUSYBOX = ARM64_ROOT / "busybox" / "bin" / "busybox"


def _load_check(modules: Path, release: str, out: Path, *extra: str) -> LoadCheckRun:
    if not (KERNELS / f"linux-image-{release}" / ".complete").is_file() or not BUSYBOX.is_file():
        pytest.fail(f"arm64 kernel {release} or busybox missing under {ARM64_ROOT}: run .ci/system-deps.sh")
    env = {**os.environ, "LOAD_CHECK_BUSYBOX": str(BUSYBOX)}
    return run_load_check(modules, release, out, "arm64", KERNELS, *extra, env=env)


# Every arm64 build of tests/image/test_compile_arm64.py, in its own kernel.
OWN_KERNEL = [(K61, "open"), (K61, "proprietary"), (K61_CLOUD, "open"), (K612, "open")]


@pytest.mark.parametrize(("release", "module_type"), OWN_KERNEL, ids=[f"{r}-{t}" for r, t in OWN_KERNEL])
def test_arm64_modules_load_into_their_own_kernel(
    compiled_modules: CompiledModules, tmp_path: Path, release: str, module_type: str
) -> None:
    modules = compiled_modules(release, module_type)
    result, values, log = _load_check(modules, release, tmp_path)
    assert result.returncode == 0, f"{result.stderr}\n{log[-3000:]}"
    assert values["LOAD_CHECK_VERDICT"] == "pass"
    assert values["LOAD_CHECK_KERNEL"] == release
    assert values["LOAD_CHECK_DETAIL"].startswith("loads: ")
    assert f"LOAD_CHECK BEGIN kernel={release} machine=aarch64" in log
    assert "NVRM: No NVIDIA GPU found." in log
    assert "LOAD_CHECK STATUS kind=nvidia name=nvidia status=19" in log
    # The in-kernel dependencies nvidia-drm needs, loaded first where the kernel has them as modules.
    if release == K61:
        for dep in ("drm", "drm_kms_helper"):
            assert f"LOAD_CHECK STATUS kind=dep name={dep} status=0" in log


@dataclass(frozen=True)
class NegativeControl:
    """An arm64 kernel the 6.1.0-50-arm64 open modules are not for, and the verdict it must produce."""

    release: str
    category: str
    evidence: str


@pytest.mark.parametrize(
    "case",
    [
        NegativeControl(K61_OLD, "wrong-abi", "disagrees about version of symbol module_layout"),
        NegativeControl(K612, "wrong-series", "struct module size"),
    ],
    ids=["other-abi", "other-series"],
)
def test_arm64_negative_controls_fail_with_their_own_verdict(
    compiled_modules: CompiledModules, tmp_path: Path, case: NegativeControl
) -> None:
    modules = compiled_modules(K61, "open")
    result, values, log = _load_check(modules, case.release, tmp_path)
    assert result.returncode == 1, f"{result.stderr}\n{log[-3000:]}"
    failures = [line for line in result.stderr.splitlines() if line.startswith("load-check: FAIL")]
    assert len(failures) == 1, result.stderr
    assert f"load-check: FAIL {case.release}: {case.category}: " in failures[0]
    assert case.evidence in failures[0]
    assert values["LOAD_CHECK_VERDICT"] == "fail"
    assert f"LOAD_CHECK BEGIN kernel={case.release} machine=aarch64" in log


def test_amd64_modules_are_refused_for_the_arm64_guest_before_booting(
    compiled_modules: CompiledModules, tmp_path: Path
) -> None:
    """x86 modules in an arm64 kernel fail with `invalid module format`; load-check.sh reads the modules'
    ELF machine first and refuses without spending a boot (exit 2: an input for another architecture)."""
    modules = compiled_modules(f"{PINS['KERNEL_61']}-amd64", "open")
    result, values, log = _load_check(modules, K61, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"load-check: {modules}/nvidia-drm.ko is not an ELF module for arm64: built for another architecture?"
    )
    assert values == {} and log == ""
