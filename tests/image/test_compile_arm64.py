"""arm64 modules cross compiled on this amd64 machine: NVIDIA's arm64 sources (Debian's packages) against
Debian's real arm64 headers, unpacked by .ci/system-deps.sh under PINS ARM64_ROOT beside the amd64
linux-kbuild (docs/image.md, "arm64").

The matrix is the smallest that proves the claims (each compile costs about four minutes on two cores):
both module types for 6.1 default flavour (the proprietary blob links only for its own architecture), and
the open modules for the 6.1 cloud flavour (flavour detection among arm64 headers) and for 6.12 (the other
series, whose headers force CROSS_COMPILE themselves). The QEMU tests (tests/verify/test_load_check_arm64.py)
boot the same builds; the cache (tests/image/compile_cache.py) compiles each once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.image.compile_cache import HEADERS_ROOTS, CompiledModules, run_compile
from tests.image.test_compile import REQUIRED, modinfo, packed_open_payload_size, read_env, section_names
from tests.pins import PINS

pytestmark = pytest.mark.slow

VERSION = PINS["NVIDIA_VERSION"]
K61_ARM64 = f"{PINS['KERNEL_61']}-arm64"
K61_CLOUD_ARM64 = f"{PINS['KERNEL_61']}-cloud-arm64"
K612_ARM64 = f"{PINS['KERNEL_612']}-arm64"
BUILDS = [(K61_ARM64, "open"), (K61_ARM64, "proprietary"), (K61_CLOUD_ARM64, "open"), (K612_ARM64, "open")]
EM_AARCH64 = 183


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not ELF"
    return int.from_bytes(header[18:20], "little")


@pytest.mark.parametrize(("release", "module_type"), BUILDS, ids=[f"{r}-{t}" for r, t in BUILDS])
def test_arm64_modules_are_aarch64_objects_for_the_headers_kernel_and_stripped(
    compiled_modules: CompiledModules, release: str, module_type: str
) -> None:
    modules = compiled_modules(release, module_type)
    build = read_env(modules / "build.env")
    assert build["KERNEL_NAME"] == release
    assert build["ARCH"] == "arm64"
    assert build["HEADERS_DIR"] == str(HEADERS_ROOTS["arm64"] / f"linux-headers-{release}")
    assert build["DRIVER_VERSION"] == VERSION
    for name in REQUIRED:
        ko = modules / f"{name}.ko"
        assert elf_machine(ko) == EM_AARCH64, f"{name}.ko is not an aarch64 object"
        vermagic = modinfo("vermagic", ko)
        assert vermagic.split()[0] == release, vermagic
        assert "aarch64" in vermagic.split()  # the kernel's arch word in vermagic
        sections = section_names(ko)
        # Stripped with aarch64-linux-gnu-strip (the host's strip cannot read these objects).
        assert sorted(s for s in sections if s.startswith(".debug")) == []
        assert ".modinfo" in sections


def test_an_x86_driver_tree_is_refused_in_seconds_naming_the_blob(
    debian_driver_tree: Path, tmp_path: Path
) -> None:
    """The amd64 tree (x86 nv-kernel.o_binary) for the real arm64 headers: without the check the build ran
    for minutes and failed at the link with `Relocations in generic ELF (EM: 62)`."""
    started = time.monotonic()
    result = run_compile(debian_driver_tree, tmp_path / "out", K61_ARM64, "proprietary")
    seconds = time.monotonic() - started
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("compile-modules: error: ")]
    assert len(errors) == 1, result.stderr
    assert "/kernel/nvidia" in errors[0] and ".o_binary is for x86-64, not arm64" in errors[0]
    assert seconds < 30, f"the refusal took {seconds:.0f} s"
    assert not (tmp_path / "out").exists()


def test_an_arm64_open_modules_payload_is_at_most_6_mib(
    compiled_modules: CompiledModules, tmp_path: Path
) -> None:
    """What a node pulls on a kernel change, packed by the image's own pack-payload.sh, as for amd64."""
    size = packed_open_payload_size(compiled_modules(K61_ARM64, "open"), K61_ARM64, "arm64", tmp_path)
    assert size <= 6 * 2**20, f"modules-open.tar.zst for {K61_ARM64} is {size / 2**20:.1f} MiB"
