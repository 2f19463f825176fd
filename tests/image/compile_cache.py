"""NVIDIA modules compiled for real against the Debian headers in /usr/src (image/build/compile-modules.sh),
for the slow tier and the image benchmark.

One module build takes about four minutes on two cores, so results are cached on disk, keyed by a hash
of the build scripts and the pins: one CI run compiles each (kernel, module type) once, and a developer's
second run compiles nothing. A file lock serializes compiles across concurrent pytest processes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cache import cache_root, file_lock
from tests.pins import PINS, PINS_FILE

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPTS = ROOT / "image" / "build"
COMPILE_SCRIPT = BUILD_SCRIPTS / "compile-modules.sh"
HEADERS_ROOT = Path("/usr/src")
# Debian's nvidia-open-kernel-source / nvidia-kernel-source: the kernel-open/ and kernel/ trees of
# NVIDIA's .run, packed as modules/nvidia-open-kernel and modules/nvidia-kernel.
SOURCE_TARBALLS = {
    "kernel-open": (HEADERS_ROOT / "nvidia-open-kernel.tar.xz", "modules/nvidia-open-kernel"),
    "kernel": (HEADERS_ROOT / "nvidia-kernel.tar.xz", "modules/nvidia-kernel"),
}

CompiledModules = Callable[[str, str], Path]


# What a compile depends on; editing any of these (or the pins) invalidates the cached modules.
COMPILE_INPUTS = [
    *(BUILD_SCRIPTS / n for n in ("lib.sh", "detect-kernel.sh", "condense-log.sh", "compile-modules.sh")),
    ROOT / "image" / "lib" / "keyvalue.sh",
]


def inputs_key(*extra: Path) -> str:
    """A short hash of the compile scripts, the pins and any extra files: a change to any invalidates."""
    digest = hashlib.sha256()
    for path in sorted([*COMPILE_INPUTS, PINS_FILE, *extra]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def kernel_target(kernel_release: str) -> dict[str, str]:
    """Splits a Debian kernel release into the compile script's inputs.

    `6.1.0-50-cloud-amd64` -> flavour cloud, arch amd64, version 6.1.0-50;
    `6.12.95+deb12-amd64` -> flavour metal, arch amd64, version 6.12.95+deb12.
    """
    base, _, arch = kernel_release.rpartition("-")
    if arch not in ("amd64", "arm64") or not base:
        raise ValueError(f"kernel release {kernel_release!r} does not end in -amd64 or -arm64")
    flavour = "metal"
    if base.endswith("-cloud"):
        flavour, base = "cloud", base.removesuffix("-cloud")
    return {"KERNEL_FLAVOUR": flavour, "ARCH": arch, "KERNEL_VERSION": base}


def run_compile(
    driver_tree: Path, output_dir: Path, kernel_release: str, module_type: str
) -> subprocess.CompletedProcess[str]:
    """Runs image/build/compile-modules.sh for one kernel release; never raises on a build failure."""
    headers = HEADERS_ROOT / f"linux-headers-{kernel_release}"
    if not headers.is_dir():
        pytest.fail(f"{headers} is missing: run .ci/system-deps.sh (installs the pinned headers)")
    env = {
        **os.environ,
        **kernel_target(kernel_release),
        "DRIVER_TREE": str(driver_tree),
        "OUTPUT_DIR": str(output_dir),
        "MODULE_TYPE": module_type,
        "HEADERS_ROOT": str(HEADERS_ROOT),
        # The machine is shared: never more than two compiler processes from a test run.
        "JOBS": "2",
    }
    return subprocess.run(
        [str(COMPILE_SCRIPT)], env=env, capture_output=True, text=True, check=False, timeout=1800
    )


def _extract_driver_tree(target: Path) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for subdir, (tarball, member) in SOURCE_TARBALLS.items():
        if not tarball.is_file():
            pytest.fail(f"{tarball} is missing: run .ci/system-deps.sh (installs NVIDIA's module sources)")
        with tarfile.open(tarball) as archive:
            archive.extractall(staging / "unpacked", filter="tar")
        (staging / "unpacked" / member).rename(staging / subdir)
    shutil.rmtree(staging / "unpacked")
    staging.rename(target)


def cached_driver_tree() -> Path:
    """NVIDIA's kernel-open/ and kernel/ trees as Debian packages them (version PINS NVIDIA_VERSION)."""
    target = cache_root() / f"driver-tree-{PINS['NVIDIA_VERSION']}"
    with file_lock(cache_root() / "driver-tree.lock"):
        if not target.is_dir():
            _extract_driver_tree(target)
    return target


def modules_factory(debian_driver_tree: Path) -> CompiledModules:
    """The factory behind the `compiled_modules` fixture (the benchmark uses it too)."""
    entries = cache_root() / "modules" / inputs_key()

    def build(kernel_release: str, module_type: str) -> Path:
        if module_type not in ("open", "proprietary"):
            raise ValueError(f"module_type {module_type!r} is not one of: open proprietary")
        entry = entries / f"{kernel_release}-{module_type}"
        with file_lock(cache_root() / "compile.lock"):
            if not (entry / ".complete").is_file():
                _compile_into(entry, debian_driver_tree, kernel_release, module_type)
        return entry / module_type

    return build


def _compile_into(entry: Path, driver_tree: Path, kernel_release: str, module_type: str) -> None:
    staging = entry.with_name(entry.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    result = run_compile(driver_tree, staging, kernel_release, module_type)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        pytest.fail(f"compiling {module_type} modules for {kernel_release} failed:\n{result.stderr}")
    shutil.copy2(staging / "build.env", staging / module_type / "build.env")
    shutil.copytree(staging / "logs", staging / module_type / "logs")
    # Wall time of the build, for the benchmark's report (bench/image_bench.py).
    (staging / module_type / "compile.seconds").write_text(f"{seconds:.0f}\n")
    (staging / ".complete").touch()
    shutil.rmtree(entry, ignore_errors=True)
    staging.rename(entry)
