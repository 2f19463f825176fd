"""NVIDIA modules compiled for real against the Debian headers in /usr/src (image/build/compile-modules.sh),
for the slow tier and the image benchmark. arm64 modules are cross compiled against Debian's arm64 headers
and NVIDIA's arm64 sources, which .ci/system-deps.sh unpacks under PINS ARM64_ROOT (never installed).

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
ARM64_ROOT = Path(PINS["ARM64_ROOT"])
# Where each architecture's headers and NVIDIA source tarballs are: the host's own (amd64), or Debian's
# arm64 packages unpacked by .ci/system-deps.sh (headers beside the amd64 linux-kbuild).
HEADERS_ROOTS = {"amd64": HEADERS_ROOT, "arm64": ARM64_ROOT / "headers" / "usr" / "src"}
SOURCE_ROOTS = {"amd64": HEADERS_ROOT, "arm64": ARM64_ROOT / "nvidia" / "usr" / "src"}
# Debian's nvidia-open-kernel-source / nvidia-kernel-source: the kernel-open/ and kernel/ trees of
# NVIDIA's .run, packed as modules/nvidia-open-kernel and modules/nvidia-kernel. Not architecture
# independent: they carry NVIDIA's prebuilt objects (nv-kernel.o_binary) for their own architecture.
SOURCE_TARBALLS = {
    "kernel-open": ("nvidia-open-kernel.tar.xz", "modules/nvidia-open-kernel"),
    "kernel": ("nvidia-kernel.tar.xz", "modules/nvidia-kernel"),
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
    target = kernel_target(kernel_release)
    headers_root = HEADERS_ROOTS[target["ARCH"]]
    headers = headers_root / f"linux-headers-{kernel_release}"
    if not headers.is_dir():
        pytest.fail(f"{headers} is missing: run .ci/system-deps.sh (installs or unpacks the pinned headers)")
    env = {
        **os.environ,
        **target,
        "DRIVER_TREE": str(driver_tree),
        "OUTPUT_DIR": str(output_dir),
        "MODULE_TYPE": module_type,
        "HEADERS_ROOT": str(headers_root),
        # The machine is shared: never more than two compiler processes from a test run.
        "JOBS": "2",
    }
    return subprocess.run(
        [str(COMPILE_SCRIPT)], env=env, capture_output=True, text=True, check=False, timeout=1800
    )


def _extract_driver_tree(target: Path, arch: str) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for subdir, (name, member) in SOURCE_TARBALLS.items():
        tarball = SOURCE_ROOTS[arch] / name
        if not tarball.is_file():
            pytest.fail(f"{tarball} is missing: run .ci/system-deps.sh (installs NVIDIA's module sources)")
        with tarfile.open(tarball) as archive:
            archive.extractall(staging / "unpacked", filter="tar")
        (staging / "unpacked" / member).rename(staging / subdir)
    shutil.rmtree(staging / "unpacked")
    staging.rename(target)


def cached_driver_tree(arch: str = "amd64") -> Path:
    """NVIDIA's kernel-open/ and kernel/ trees as Debian packages them (version PINS NVIDIA_VERSION) for
    one architecture."""
    suffix = "" if arch == "amd64" else f"-{arch}"
    target = cache_root() / f"driver-tree-{PINS['NVIDIA_VERSION']}{suffix}"
    with file_lock(cache_root() / "driver-tree.lock"):
        if not target.is_dir():
            _extract_driver_tree(target, arch)
    return target


def modules_factory(debian_driver_tree: Path) -> CompiledModules:
    """The factory behind the `compiled_modules` fixture (the benchmark uses it too)."""
    entries = cache_root() / "modules" / inputs_key()

    def build(kernel_release: str, module_type: str) -> Path:
        if module_type not in ("open", "proprietary"):
            raise ValueError(f"module_type {module_type!r} is not one of: open proprietary")
        entry = entries / f"{kernel_release}-{module_type}"
        arch = kernel_target(kernel_release)["ARCH"]
        tree = debian_driver_tree if arch == "amd64" else cached_driver_tree(arch)
        # A finished entry needs no lock: entries appear complete or not at all (renamed into place).
        if (entry / ".complete").is_file():
            return entry / module_type
        with file_lock(cache_root() / "compile.lock"):
            if not (entry / ".complete").is_file():
                _compile_into(entry, tree, kernel_release, module_type)
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
