"""compile-modules.sh checks, in a second and before the minutes-long build, that the compiler makes
objects for ARCH, that the kbuild helpers (fixdep, modpost) are programs of this machine and that NVIDIA's
prebuilt objects (*.o_binary) are for ARCH; each mismatch is one line naming the file and both machines.

The headers and driver trees are small fakes: the helpers and blobs are minimal ELF headers written here
with the machine field under test (only e_machine is read). The compilers are the real ones of this
machine (gcc-12; the cross compiler aarch64-linux-gnu-gcc-12 where .ci/system-deps.sh installed it).
"""

from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPILE = ROOT / "image" / "build" / "compile-modules.sh"
KERNEL = "6.1.0-50"
EM_X86_64 = 62
EM_AARCH64 = 183
HOST = {"x86_64": ("amd64", EM_X86_64), "aarch64": ("arm64", EM_AARCH64)}
# Debian's .kernelvariables: the compiler the headers build with, and (6.12) a forced tool prefix.
KERNELVARIABLES = "CC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-12\n"


def _host() -> tuple[str, int]:
    if platform.machine() not in HOST:
        pytest.skip(f"this machine ({platform.machine()}) is neither amd64 nor arm64")
    return HOST[platform.machine()]


def _other(machine: int) -> int:
    return EM_AARCH64 if machine == EM_X86_64 else EM_X86_64


def elf_header(machine: int) -> bytes:
    """The 64-byte header of a 64-bit little-endian ELF file (elf(5)) with e_machine `machine`."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHI", 2, machine, 1) + bytes(64 - 16 - 8)


def fake_headers(root: Path, arch: str, helper_machine: int, variables: str = KERNELVARIABLES) -> None:
    flavour = root / f"linux-headers-{KERNEL}-{arch}"
    common = root / f"linux-headers-{KERNEL}-common"
    common.mkdir(parents=True)
    (flavour / "include" / "generated").mkdir(parents=True)
    (flavour / "Makefile").write_text(f"include /usr/src/linux-headers-{KERNEL}-common/Makefile\n")
    (flavour / "include" / "generated" / "utsrelease.h").write_text(
        f'#define UTS_RELEASE "{KERNEL}-{arch}"\n'
    )
    (flavour / ".kernelvariables").write_text(variables)
    for helper in ("basic/fixdep", "mod/modpost"):
        path = flavour / "scripts" / helper
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(elf_header(helper_machine))
        path.chmod(0o755)


def fake_driver_tree(root: Path, blob_machine: int) -> None:
    """kernel-open/ as NVIDIA's .run has it, reduced to the version line and the two prebuilt objects."""
    tree = root / "kernel-open"
    (tree / "nvidia").mkdir(parents=True)
    (tree / "nvidia-modeset").mkdir()
    (tree / "Kbuild").write_text('ccflags-y += -DNV_VERSION_STRING=\\"535.261.03\\"\n')
    (tree / "nvidia" / "nv-kernel.o_binary").write_bytes(elf_header(blob_machine))
    (tree / "nvidia-modeset" / "nv-modeset-kernel.o_binary").write_bytes(elf_header(blob_machine))


def compile_modules(
    tmp_path: Path, arch: str, cross_compile: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "DRIVER_TREE": str(tmp_path / "driver"),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "HEADERS_ROOT": str(tmp_path / "src"),
        "KERNEL_FLAVOUR": "metal",
        "ARCH": arch,
        "MODULE_TYPE": "open",
        "JOBS": "1",
    }
    if cross_compile is not None:
        env["CROSS_COMPILE"] = cross_compile
    return subprocess.run([str(COMPILE)], env=env, capture_output=True, text=True, check=False, timeout=120)


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("compile-modules: error: ")]


@pytest.fixture
def native_compiler() -> None:
    if shutil.which("gcc-12") is None:
        pytest.fail("gcc-12 is missing: run .ci/system-deps.sh (build-essential)")


@pytest.mark.usefixtures("native_compiler")
def test_kbuild_helpers_of_another_machine_are_refused_before_the_build(tmp_path: Path) -> None:
    # Debian's arm64 linux-kbuild unpacked beside arm64 headers on amd64: fixdep cannot run here.
    arch, machine = _host()
    fake_headers(tmp_path / "src", arch, helper_machine=_other(machine))
    fake_driver_tree(tmp_path / "driver", blob_machine=machine)
    result = compile_modules(tmp_path, arch)
    assert result.returncode == 1
    [error] = _errors(result)
    other = "aarch64" if machine == EM_X86_64 else "x86-64"
    host = "x86-64" if machine == EM_X86_64 else "aarch64"
    fixdep = tmp_path / "src" / f"linux-headers-{KERNEL}-{arch}" / "scripts" / "basic" / "fixdep"
    assert f"kbuild helper {fixdep} is an {other} program" in error
    assert f"runs on this {host} machine" in error
    assert "building" not in result.stderr  # nothing was compiled
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("native_compiler")
def test_a_kbuild_helper_that_is_no_program_is_refused(tmp_path: Path) -> None:
    arch, machine = _host()
    fake_headers(tmp_path / "src", arch, helper_machine=machine)
    (tmp_path / "src" / f"linux-headers-{KERNEL}-{arch}" / "scripts" / "mod" / "modpost").write_text(
        "#!/bin/sh\n"
    )
    fake_driver_tree(tmp_path / "driver", blob_machine=machine)
    result = compile_modules(tmp_path, arch)
    [error] = _errors(result)
    assert error.endswith("/scripts/mod/modpost is not an ELF program")


@pytest.mark.usefixtures("native_compiler")
def test_nvidia_blobs_of_another_architecture_are_refused_before_the_build(tmp_path: Path) -> None:
    # An x86 driver tree for arm64 fails the final link after minutes ("Relocations in generic ELF").
    arch, machine = _host()
    fake_headers(tmp_path / "src", arch, helper_machine=machine)
    fake_driver_tree(tmp_path / "driver", blob_machine=_other(machine))
    result = compile_modules(tmp_path, arch)
    assert result.returncode == 1
    [error] = _errors(result)
    other = "aarch64" if machine == EM_X86_64 else "x86-64"
    blob = tmp_path / "driver" / "kernel-open" / "nvidia-modeset" / "nv-modeset-kernel.o_binary"
    assert f"NVIDIA's prebuilt {blob} is for {other}, not {arch}" in error
    assert "building" not in result.stderr


@pytest.mark.usefixtures("native_compiler")
def test_a_compiler_for_the_wrong_machine_is_refused_naming_both(tmp_path: Path) -> None:
    # The native compiler named as the cross compiler: it compiles, but objects of this machine.
    arch, machine = _host()
    target = "arm64" if arch == "amd64" else "amd64"
    triplet = "x86_64-linux-gnu-" if arch == "amd64" else "aarch64-linux-gnu-"
    fake_headers(tmp_path / "src", target, helper_machine=machine)
    fake_driver_tree(tmp_path / "driver", blob_machine=_other(machine))
    result = compile_modules(tmp_path, target, cross_compile=triplet)
    [error] = _errors(result)
    wanted, made = ("aarch64", "x86-64") if arch == "amd64" else ("x86-64", "aarch64")
    assert f"compiler {triplet}gcc-12 makes {made} objects, but ARCH={target} needs {wanted}" in error


def test_a_missing_compiler_is_named(tmp_path: Path) -> None:
    arch, machine = _host()
    fake_headers(tmp_path / "src", arch, helper_machine=machine)
    fake_driver_tree(tmp_path / "driver", blob_machine=machine)
    result = compile_modules(tmp_path, arch, cross_compile="nvi-missing-")
    [error] = _errors(result)
    headers = f"{KERNEL}-{arch}"
    assert f"compiler nvi-missing-gcc-12 (what the headers of {headers} build with) is not installed" in error


def test_a_prefix_the_headers_force_wins(tmp_path: Path) -> None:
    # Debian's 6.12 headers: `override CROSS_COMPILE = <triplet>-` beats the environment.
    arch, machine = _host()
    variables = KERNELVARIABLES + "override CROSS_COMPILE = nvi-forced-\n"
    fake_headers(tmp_path / "src", arch, helper_machine=machine, variables=variables)
    fake_driver_tree(tmp_path / "driver", blob_machine=machine)
    result = compile_modules(tmp_path, arch, cross_compile="")
    [error] = _errors(result)
    assert "compiler nvi-forced-gcc-12 " in error


def test_arm64_on_amd64_defaults_to_debians_cross_compiler(tmp_path: Path) -> None:
    arch, machine = _host()
    if arch != "amd64":
        pytest.skip("the default cross prefix for arm64 applies on amd64 builders")
    fake_headers(tmp_path / "src", "arm64", helper_machine=machine)
    fake_driver_tree(tmp_path / "driver", blob_machine=EM_X86_64)  # wrong on purpose: stops before make
    result = compile_modules(tmp_path, "arm64")
    [error] = _errors(result)
    if shutil.which("aarch64-linux-gnu-gcc-12") is None:
        assert "compiler aarch64-linux-gnu-gcc-12 " in error
        return
    # The compiler passed (it makes aarch64 objects); the x86 blob is what is wrong.
    assert "nv-kernel.o_binary is for x86-64, not arm64" in error or "nv-modeset-kernel.o_binary" in error


@pytest.mark.usefixtures("native_compiler")
def test_when_every_check_passes_the_build_runs(tmp_path: Path) -> None:
    # The fake tree has no Makefile: make fails, reported as a build failure, not as a check.
    arch, machine = _host()
    fake_headers(tmp_path / "src", arch, helper_machine=machine)
    fake_driver_tree(tmp_path / "driver", blob_machine=machine)
    result = compile_modules(tmp_path, arch)
    assert result.returncode == 1
    assert _errors(result) == []
    assert f"compile-modules: toolchain: gcc-12, strip (ARCH={arch} on {arch})" in result.stderr
    assert "building open modules of 535.261.03" in result.stderr
