"""load-check.sh's fast paths: initramfs assembly and the checks that run before anything boots.

The modules and the kernel package here are tiny ELF objects assembled with `as` whose `.modinfo`
section carries a `depends=` line, which is all `modinfo -F depends` (kmod, for real) reads. The
dependency chain mirrors the real one (nvidia.ko -> drm -> ...), with a compressed module, a module
whose file name has dashes, and a dependency that is built into the kernel.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.verify.verdict_run import LOAD_CHECK

RELEASE = "6.1.0-50-amd64"
BUSYBOX = Path("/bin/busybox")
NVIDIA_ORDER = ["nvidia", "nvidia-uvm", "nvidia-modeset", "nvidia-drm", "nvidia-peermem"]


def _require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing or not BUSYBOX.is_file():
        pytest.fail(
            f"missing {missing or [str(BUSYBOX)]}: run .ci/system-deps.sh (busybox-static, cpio, kmod)"
        )


def _module(path: Path, depends: str, exports: tuple[str, ...] = ()) -> bytes:
    """Assembles a relocatable ELF for this machine with a .modinfo section, like a .ko's."""
    source = path.with_suffix(".s")
    lines = [
        '.section .modinfo,"a"',
        f'.asciz "depends={depends}"',
        f'.asciz "vermagic={RELEASE} SMP "',
        ".text",
    ]
    for symbol in exports:
        lines += [f".globl __ksymtab_{symbol}", f"__ksymtab_{symbol}:", ".byte 0"]
    source.write_text("\n".join(lines) + "\n")
    subprocess.run(["as", "-o", str(path), str(source)], check=True)
    source.unlink()
    return path.read_bytes()


@dataclass
class Tree:
    """A fake NVIDIA module set and a fake extracted linux-image package."""

    modules: Path
    kernel: Path
    compressed_original: bytes


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    _require("as", "cpio", "modinfo", "gzip")
    modules = tmp_path / "modules"
    modules.mkdir()
    _module(modules / "nvidia.ko", "fakedrm,video", ("nvidia_get_rm_ops",))
    _module(modules / "nvidia-uvm.ko", "nvidia")
    _module(modules / "nvidia-modeset.ko", "nvidia,fake_kms", ("nvKmsKapiGetFunctionsTable",))
    _module(modules / "nvidia-drm.ko", "fakedrm,fake_kms,nvidia-modeset")
    _module(modules / "nvidia-peermem.ko", "")

    kernel = tmp_path / "kernel"
    lib = kernel / "lib" / "modules" / RELEASE
    (kernel / "boot").mkdir(parents=True)
    (kernel / "boot" / f"vmlinuz-{RELEASE}").write_bytes(b"not booted by these tests")
    (lib / "kernel" / "drivers" / "gpu").mkdir(parents=True)
    (lib / "kernel" / "lib").mkdir(parents=True)
    _module(lib / "kernel" / "lib" / "fakebase.ko", "")
    # 6.12 packages ship modules as .ko.xz: the initramfs must carry them decompressed.
    plain = _module(lib / "kernel" / "drivers" / "gpu" / "fakedrm.ko", "fakebase")
    (lib / "kernel" / "drivers" / "gpu" / "fakedrm.ko.xz").write_bytes(lzma.compress(plain, lzma.FORMAT_XZ))
    (lib / "kernel" / "drivers" / "gpu" / "fakedrm.ko").unlink()
    _module(lib / "kernel" / "drivers" / "gpu" / "fake-kms.ko", "fakedrm")
    (lib / "modules.builtin").write_text("kernel/drivers/acpi/video.ko\n")
    return Tree(modules, kernel, plain)


def _read_newc(archive: bytes) -> dict[str, tuple[int, int, int, bytes]]:
    """name -> (mode, uid, gid, data) of a gzip'd newc cpio (the format the kernel unpacks)."""
    data = gzip.decompress(archive)
    entries: dict[str, tuple[int, int, int, bytes]] = {}
    offset = 0
    while True:
        header = data[offset : offset + 110]
        assert header[:6] == b"070701", f"not a newc header at {offset}"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, size, namesize = fields[1], fields[2], fields[3], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = (name_start + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries[name.removeprefix("./")] = (mode, uid, gid, data[body : body + size])
        offset = (body + size + 3) & ~3


def _build(
    tree: Tree, out: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [
        str(LOAD_CHECK),
        "initramfs",
        str(tree.modules),
        RELEASE,
        str(out),
        "--kernel-dir",
        str(tree.kernel),
    ]
    return subprocess.run(
        [*args, "--arch", "amd64", *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _load_lines(init: str) -> list[tuple[str, str]]:
    return [(line.split()[1], line.split()[2]) for line in init.splitlines() if line.startswith("load ")]


@pytest.fixture(autouse=True)
def _amd64_only() -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the fake modules are assembled for this machine; the tests pass --arch amd64")


def test_initramfs_carries_busybox_init_and_modules(tree: Tree, tmp_path: Path) -> None:
    out = tmp_path / "initrd.gz"
    result = _build(tree, out)
    assert result.returncode == 0, result.stderr
    entries = _read_newc(out.read_bytes())

    assert entries["bin/busybox"][3] == BUSYBOX.read_bytes()
    for name in NVIDIA_ORDER:
        assert entries[f"lib/modules/nvidia/{name}.ko"][3] == (tree.modules / f"{name}.ko").read_bytes()
    assert entries["lib/modules/deps/fakedrm.ko"][3] == tree.compressed_original, "not decompressed"
    assert "lib/modules/deps/fake-kms.ko" in entries
    assert not any("video" in name for name in entries), "a built-in dependency must not be loaded"
    assert all(uid == 0 and gid == 0 for _mode, uid, gid, _data in entries.values())
    for directory in ("dev", "proc", "sys"):
        assert stat.S_ISDIR(entries[directory][0])

    mode, _uid, _gid, init_bytes = entries["init"]
    assert mode & 0o111, "/init must be executable"
    init = init_bytes.decode()
    assert init.startswith("#!/bin/busybox sh\n")
    for mount in ("mount -t proc proc /proc", "mount -t sysfs sys /sys", "mount -t devtmpfs dev /dev"):
        assert mount in init
    assert init.rstrip().endswith('say "END"\nsync\npoweroff -f')
    # busybox parses what we generated
    script = tmp_path / "init"
    script.write_bytes(init_bytes)
    subprocess.run([str(BUSYBOX), "sh", "-n", str(script)], check=True)


def test_dependencies_load_first_in_dependency_order(tree: Tree, tmp_path: Path) -> None:
    out = tmp_path / "initrd.gz"
    assert _build(tree, out).returncode == 0
    loads = _load_lines(_read_newc(out.read_bytes())["init"][3].decode())
    deps = [name for kind, name in loads if kind == "dep"]
    assert deps == ["fakebase", "fakedrm", "fake-kms"], "each once, a dependency before its dependants"
    assert loads[: len(deps)] == [("dep", name) for name in deps]
    assert [name for kind, name in loads if kind == "nvidia"] == NVIDIA_ORDER


def test_without_deps_leaves_the_kernel_modules_out(tree: Tree, tmp_path: Path) -> None:
    out = tmp_path / "initrd.gz"
    assert _build(tree, out, "--without-deps").returncode == 0
    entries = _read_newc(out.read_bytes())
    assert not [name for name in entries if name.startswith("lib/modules/deps/") and name.endswith(".ko")]
    assert [kind for kind, _name in _load_lines(entries["init"][3].decode())] == ["nvidia"] * 5


def _fake_kms(tree: Tree) -> Path:
    return tree.kernel / "lib" / "modules" / RELEASE / "kernel" / "drivers" / "gpu" / "fake-kms.ko"


def _patch_machine(path: Path, machine: int) -> None:
    data = bytearray(path.read_bytes())
    data[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("break_it", "extra", "message"),
    [
        (
            lambda t: _module(t.modules / "nvidia.ko", "fakedrm,absentmod"),
            (),
            "in-kernel dependency absentmod",
        ),
        (lambda t: _patch_machine(t.modules / "nvidia-uvm.ko", 183), (), "is not an ELF module for amd64"),
        (lambda t: _fake_kms(t).write_bytes(b"\x7fELF but truncated"), (), "modinfo cannot read"),
        (lambda t: (t.modules / "nvidia.ko").unlink(), (), "no nvidia.ko in"),
        (lambda t: (t.kernel / "boot" / f"vmlinuz-{RELEASE}").unlink(), (), f"no boot/vmlinuz-{RELEASE}"),
        (lambda t: None, ("--arch", "riscv64"), "unsupported --arch 'riscv64'"),
        # the arm64 branch of the arch switch: this machine's busybox cannot be an arm64 guest's init
        (lambda t: None, ("--arch", "arm64"), "busybox is not built for arm64"),
    ],
    ids=[
        "dependency-not-in-package",
        "module-for-arm64",
        "corrupt-kernel-module",
        "no-nvidia-ko",
        "no-vmlinuz",
        "unknown-arch",
        "arm64-guest-x86-busybox",
    ],
)
def test_bad_input_is_one_clear_line(
    tree: Tree, tmp_path: Path, break_it: Callable[[Tree], object], extra: tuple[str, ...], message: str
) -> None:
    break_it(tree)
    out = tmp_path / "initrd.gz"
    result = _build(tree, out, *extra)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not out.exists()


def test_dynamic_busybox_is_refused(tree: Tree, tmp_path: Path) -> None:
    """A dynamically linked busybox would make the guest panic with no init; say so before booting."""
    result = _build(tree, tmp_path / "initrd.gz", env={"LOAD_CHECK_BUSYBOX": "/bin/bash"})
    assert result.returncode == 2
    assert "/bin/bash is dynamically linked: install busybox-static" in result.stderr


@pytest.mark.slow
def test_vanished_kernel_package_is_one_clear_failure(tree: Tree, tmp_path: Path) -> None:
    """A kernel package gone from the archive fails at once, naming the package, and boots nothing."""
    if shutil.which("apt-get") is None:
        pytest.skip("needs apt-get (Debian)")
    release = "6.1.0-9999-amd64"
    verdict = tmp_path / "verdict.env"
    result = subprocess.run(
        [str(LOAD_CHECK), "run", str(tree.modules), release, str(verdict), "--arch", "amd64"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    failures = [line for line in result.stderr.splitlines() if "cannot be downloaded" in line]
    assert len(failures) == 1, result.stderr
    assert f"kernel package linux-image-{release} cannot be downloaded" in failures[0]
    assert "E: " in failures[0], "apt's own reason is kept"
    assert not verdict.exists()
