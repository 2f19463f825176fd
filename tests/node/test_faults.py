"""The node installer's fault matrix (docs/node.md, "Messages and exit codes").

Each fault is provoked for real on the fake node (damaged files, hostile tarballs, hung or killed
commands, full and read-only filesystems where the test may mount them) and each case asserts three
things: the exit code, the one-line `error:` message, and the host's files afterwards (unchanged for a
failure before any host change; no temporary file left behind otherwise).
"""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.node.fakenode import (
    DRIVER,
    KERNEL,
    MODULES,
    READY_FILE,
    FakeNode,
    is_running,
    kill_session,
    modules_tarball,
    tar_zstd,
    wait_until,
)

CACHE = "opt/nvidia-installer/cache"


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path)


def _leftovers(node: FakeNode) -> list[str]:
    """Temporary names the installer must never leave behind (its work dir included)."""
    host, root = node.seen(node.host), node.seen(node.root)  # mounts of the node's namespace included
    found = [str(p.relative_to(root)) for p in host.rglob("*") if ".tmp." in p.name]
    cache = host / "opt/nvidia-installer/cache"
    entries = [p.name for p in cache.iterdir()] if cache.is_dir() else []
    found += [f"cache/{n}" for n in entries if n.startswith((".staging-", ".trash-"))]
    found += [str(p.relative_to(node.root)) for p in node.tmp.iterdir()]
    return found


def _fails_unchanged(node: FakeNode, rc: int, message: str) -> str:
    """Runs the installer; asserts exit code, one-line message, and a host exactly as it was."""
    before = node.snapshot()
    run = node.run()
    assert run.rc == rc, run.stderr
    assert message in run.first_error, run.stderr
    assert run.first_error.startswith("nvidia-installer: error: ")
    assert "nothing on the host was changed" in run.stderr
    assert node.snapshot() == before
    assert _leftovers(node) == []
    return run.first_error


def _custom_tarball(node: FakeNode, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> None:
    """Replaces the open modules tarball (and its checksum) with these members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info in members:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    compressed = subprocess.run(["zstd", "-q", "-c"], input=buf.getvalue(), capture_output=True, check=True)
    (node.payload / "modules-open.tar.zst").write_bytes(compressed.stdout)
    node.write_sums()


def _ko(name: str, module: str = "nvidia") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, f"version={DRIVER}\ntype=open\nname={module}\ndepends=\n".encode()


def _hostile(*extra: tuple[tarfile.TarInfo, bytes | None]) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    """The good modules plus hostile members."""
    members: list[tarfile.TarInfo] = []
    data: dict[str, bytes] = {}
    for module in MODULES:
        info, text = _ko(f"kernel-open/{module}.ko", module)
        members.append(info)
        data[info.name] = text
    for member, payload in extra:
        members.append(member)
        if payload is not None:
            data[member.name] = payload
    return members, data


def _rewrite_manifest(node: FakeNode, edit: Callable[[str], str]) -> None:
    manifest = node.payload / "manifest.env"
    manifest.write_text(edit(manifest.read_text()))
    node.write_sums()


# ---- payload faults: refused before any host change ----


def test_manifest_missing(node: FakeNode) -> None:
    (node.payload / "manifest.env").unlink()
    _fails_unchanged(node, 3, "manifest.env does not match its SHA256SUMS")


def test_checksum_list_missing(node: FakeNode) -> None:
    (node.payload / "SHA256SUMS").unlink()
    _fails_unchanged(node, 3, "checksum list")


def test_checksum_list_is_garbage(node: FakeNode) -> None:
    (node.payload / "SHA256SUMS").write_bytes(os.urandom(512))
    _fails_unchanged(node, 3, "does not cover manifest.env")


def test_manifest_is_garbage(node: FakeNode) -> None:
    (node.payload / "manifest.env").write_bytes(b"\x00\xff" + os.urandom(300) + b"\nDRIVER_VERSION\n")
    node.write_sums()
    _fails_unchanged(node, 3, "manifest DRIVER_VERSION=")


def test_manifest_value_with_shell_is_data_not_code(node: FakeNode) -> None:
    marker = node.root / "sourced"
    _rewrite_manifest(node, lambda t: t.replace("KERNEL_NAME=", f"KERNEL_NAME=$(touch {marker})", 1))
    _fails_unchanged(node, 3, "is not a kernel release name")
    assert not marker.exists()


def test_manifest_lists_a_type_twice(node: FakeNode) -> None:
    _rewrite_manifest(
        node, lambda t: t.replace('MODULE_TYPES="open proprietary"', 'MODULE_TYPES="open open"')
    )
    _fails_unchanged(node, 3, "lists 'open' twice")


def test_truncated_tarball(node: FakeNode) -> None:
    tarball = node.payload / "modules-open.tar.zst"
    tarball.write_bytes(tarball.read_bytes()[:40])
    _fails_unchanged(node, 3, "modules-open.tar.zst does not match its SHA256SUMS")


def test_tarball_that_is_not_zstd(node: FakeNode) -> None:
    (node.payload / "modules-open.tar.zst").write_bytes(b"PK\x03\x04 not a tarball" * 10)
    node.write_sums()
    _fails_unchanged(node, 3, "is not a readable zstd tarball")


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("/lib/modules/nvidia.ko"), "is absolute or leaves the unpack directory"),
        (_member("kernel-open/../../escape.ko"), "is absolute or leaves the unpack directory"),
        (_member("kernel-open/helper", mode=0o4755), "has a setuid or setgid bit"),
        (_member("kernel-open/group", mode=0o2755), "has a setuid or setgid bit"),
        (
            _member("kernel-open/link.ko", tarfile.SYMTYPE, link="/etc/shadow"),
            "is not a plain file or directory",
        ),
        (_member("kernel-open/dev", tarfile.CHRTYPE), "is not a plain file or directory"),
        (_member("kernel/nvidia.ko"), "holds two modules named nvidia.ko"),
    ],
    ids=["absolute", "dotdot", "setuid", "setgid", "symlink", "device", "duplicate-module"],
)
def test_hostile_tarball_member(node: FakeNode, member: tarfile.TarInfo, message: str) -> None:
    payload = b"proprietary nvidia.ko\n" if member.isfile() else None
    members, data = _hostile((member, payload))
    _custom_tarball(node, members, data)
    _fails_unchanged(node, 3, message)


def test_image_for_another_arch(node: FakeNode) -> None:
    node.env_extra["FAKE_MACHINE"] = "aarch64"
    _fails_unchanged(node, 3, "built for amd64 but node gpu-node-1 is arm64")


# ---- node and settings faults ----


def test_garbage_in_pci_vendor_means_no_gpu(node: FakeNode) -> None:
    (node.sys / "bus/pci/devices/0000:01:00.0/vendor").write_bytes(os.urandom(64))
    _fails_unchanged(node, 10, "no NVIDIA GPU")


def test_garbage_device_id_is_ignored_for_the_type(node: FakeNode) -> None:
    (node.sys / "bus/pci/devices/0000:01:00.0/device").write_bytes(b"\xff\xfe0x1db4")
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    assert "not a PCI device id" in run.stderr and node.ready_values()["MODULE_TYPE"] == "open"


def test_garbage_refcount_of_a_loaded_old_driver_counts_as_busy(node: FakeNode) -> None:
    node.load_module("nvidia", "570.124.06")
    (node.sys / "module/nvidia/refcnt").write_bytes(b"\x00garbage")
    node.env_extra.update(IDLE_WAIT_SECONDS="1", IDLE_POLL_SECONDS="0.2")
    _fails_unchanged(node, 6, "no process found holding /dev/nvidia*")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"install nvidia /bin/sh -c 'id > /tmp/x'\n", "line 1: 'install' is not allowed"),
        (b"options nvidia NVreg_X=1\nremove nvidia /bin/true\n", "line 2: 'remove' is not allowed"),
        (b"\x7fELF\x02\x01\x01" + bytes(range(1, 60)), "is not allowed"),
    ],
    ids=["install", "remove", "binary"],
)
def test_bad_parameters_file(node: FakeNode, content: bytes, message: str) -> None:
    node.params.write_bytes(content)
    _fails_unchanged(node, 5, message)


def test_parameters_file_that_is_a_directory(node: FakeNode) -> None:
    node.params.unlink()
    node.params.mkdir()
    _fails_unchanged(node, 5, "is not a readable file")


def test_parameters_changed_during_the_run_never_reach_modprobe(node: FakeNode) -> None:
    node.env_extra["FAKE_TAMPER"] = str(node.params)
    run = node.run()
    assert run.rc == 0, run.stderr
    assert "install" in node.params.read_text()  # the tampering happened, after the check
    assert (node.state / "modprobe-conf-nvidia").read_text() == "options nvidia NVreg_EnableGpuFirmware=1\n"


@pytest.mark.parametrize("path", [CACHE, "run/nvidia-installer"])
def test_host_directory_that_is_a_symlink_is_not_followed(node: FakeNode, path: str) -> None:
    elsewhere = node.root / "elsewhere"
    elsewhere.mkdir()
    target = node.host / path
    if target.exists():
        target.rmdir()
    target.symlink_to(elsewhere)
    _fails_unchanged(node, 7, "is not a plain directory (a symlink to")
    assert list(elsewhere.iterdir()) == []


# ---- the cache: verified, repaired once, pruned ----


def test_truncated_cached_module_is_repaired_once(node: FakeNode) -> None:
    assert node.run().rc == 0
    tree = node.tree("open")
    module = tree / "lib/modules" / KERNEL / "nvidia/nvidia.ko"
    good = module.read_bytes()
    module.write_bytes(good[:5])
    node.reboot()
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    assert "cannot be used as it is (checksum mismatch" in run.stderr
    assert module.read_bytes() == good
    # The damaged copy was moved aside, then pruned: no container had it mounted.
    assert node.cache_entries() == [tree.name]


def test_damaged_entry_a_container_holds_is_kept_aside(node: FakeNode) -> None:
    assert node.run().rc == 0
    tree = node.tree("open")
    (tree / "lib/libcuda.so.1").resolve().write_text("truncated")
    node.add_container_mount(31337, tree)
    node.reboot()
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    assert "file list or sizes differ" in run.stderr
    entries = node.cache_entries()
    assert tree.name in entries and len([e for e in entries if e.startswith(".damaged-")]) == 1
    assert "a container has it mounted" in run.stderr


def test_garbage_stamp_means_unpack_again(node: FakeNode) -> None:
    assert node.run().rc == 0
    (node.tree("open") / ".complete").write_bytes(os.urandom(100))
    node.reboot()
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    assert node.calls("tar") != []
    assert (node.tree("open") / ".complete").read_text().startswith("DRIVER_VERSION=")


def test_rebuilt_image_never_touches_the_tree_in_use(node: FakeNode) -> None:
    assert node.run().rc == 0
    old = node.tree("open")
    node.add_container_mount(4242, old)
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file() and not p.is_symlink()}
    # Same driver, kernel and type, other bytes: a rebuild.
    node.make_payload(
        ko_files={
            f"kernel-open/{m}.ko": f"rebuilt {m}\nversion=580.65.06\ntype=open\nname={m}\n".encode()
            for m in MODULES
        }
    )
    node.reboot()
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    new = node.tree("open")
    assert new != old
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file() and not p.is_symlink()} == before
    assert os.readlink(node.host / "opt/nvidia-installer/driver") == f"cache/{new.name}"


def test_prune_keeps_the_tree_in_use_and_the_previous_one(node: FakeNode) -> None:
    names = []
    for build in range(4):
        node.make_payload(
            ko_files={
                f"kernel-open/{m}.ko": f"build {build}\nversion=580.65.06\ntype=open\nname={m}\n".encode()
                for m in MODULES
            }
        )
        node.reboot()
        assert node.run().rc == 0
        names.append(node.tree("open").name)
        if build == 0:
            node.add_container_mount(999, node.tree("open"))  # a long job on the first build's tree
    assert node.cache_entries() == sorted([names[0], names[2], names[3]])
    # A reboot on the same tree keeps the previous one (the way back).
    node.reboot()
    assert node.run().rc == 0
    assert node.cache_entries() == sorted([names[0], names[2], names[3]])


# ---- locks, hangs, signals ----


def test_orphaned_child_does_not_keep_the_lock(node: FakeNode) -> None:
    node.env_extra["FAKE_HANG"] = "modprobe"
    node.run(sigterm=False, hang_marker="modprobe-running", kill_group=False)
    orphans = node.last_group
    try:
        pgrep = ["pgrep", "-s", str(orphans), "-f", "stubs/modprobe"]
        stub_pid = int(subprocess.run(pgrep, check=True, capture_output=True, text=True).stdout.split()[0])
        assert is_running(stub_pid)
        del node.env_extra["FAKE_HANG"]
        node.reboot()
        run = node.run()
        assert run.rc == 0 and run.ready, run.stderr
        assert is_running(stub_pid)  # still hung, and still not holding the lock
    finally:
        kill_session(orphans)


def test_lock_timeout_names_the_holder(node: FakeNode) -> None:
    node.env_extra["FAKE_HANG"] = "modprobe"
    holder = subprocess.Popen(  # the first installer, hung in modprobe, holding the lock
        node.installer_argv(), env=node.env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until((node.state / "modprobe-running").exists)
        node.add_process(holder.pid, "nvidia-installer", ())  # the fake /proc shows the host's processes
        node.env_extra["LOCK_TIMEOUT"] = "1"
        del node.env_extra["FAKE_HANG"]
        run = node.run()
        assert run.rc == 9
        assert f"by installer pod nvidia-installer-abcde (pid {holder.pid}, since " in run.first_error
    finally:
        kill_session(holder.pid)
        holder.wait()


def test_lock_holder_file_of_garbage(node: FakeNode) -> None:
    (node.host / "run/nvidia-installer/lock-holder").write_bytes(os.urandom(200))
    fd = os.open(node.host / "run/nvidia-installer", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        node.env_extra["LOCK_TIMEOUT"] = "0"
        _fails_unchanged(node, 9, "by an unknown process")
    finally:
        os.close(fd)


def test_sigterm_during_a_hung_command_is_acted_on_at_once(node: FakeNode) -> None:
    node.env_extra["FAKE_HANG"] = "depmod"
    run = node.run(hang_marker="depmod-running")
    assert run.rc == 0 and "received SIGTERM while installing the driver tree" in run.stderr
    assert run.term_seconds is not None and run.term_seconds < 3.0
    assert _leftovers(node) == [] and node.cache_entries() == []


def test_hung_command_times_out(node: FakeNode) -> None:
    node.env_extra.update(FAKE_HANG="depmod", COMMAND_TIMEOUT="1")
    run = node.run()
    assert run.rc == 11, run.stderr
    assert "depmod did not finish within 1s" in run.first_error
    assert _leftovers(node) == [] and node.cache_entries() == []
    assert not (node.host / "opt/nvidia-installer/driver").exists()


@pytest.mark.parametrize("step", ["modinfo", "depmod", "modprobe", "nvidia-modprobe", "nvidia-smi"])
def test_kill_9_at_each_step_then_a_restart_finishes(node: FakeNode, step: str) -> None:
    node.env_extra["FAKE_HANG"] = step
    crashed = node.run(sigterm=False, hang_marker=f"{step}-running")
    assert not crashed.ready and not (node.host / READY_FILE).exists()
    del node.env_extra["FAKE_HANG"]
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    tree = node.tree("open")
    assert node.cache_entries() == [tree.name]
    assert os.readlink(node.host / "opt/nvidia-installer/driver") == f"cache/{tree.name}"
    assert [p for p in node.host.rglob("*") if ".tmp." in p.name] == []


# ---- full and read-only filesystems (real mounts: root only) ----


@pytest.fixture
def mount_tmpfs(node: FakeNode) -> Iterator[Callable[[Path, str], None]]:
    """A tmpfs in the node's mount namespace (where the installer runs; it ends with the node)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")

    def mount(path: Path, options: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        done = node.in_node(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)])
        assert done.returncode == 0, done.stderr

    yield mount


def test_too_little_space_for_the_tree(node: FakeNode, mount_tmpfs: Callable[[Path, str], None]) -> None:
    mount_tmpfs(node.host / "opt/nvidia-installer", "size=256k")
    _fails_unchanged(node, 12, "not enough space in /opt/nvidia-installer")


def test_full_run_directory(node: FakeNode, mount_tmpfs: Callable[[Path, str], None]) -> None:
    state = node.host / "run/nvidia-installer"
    mount_tmpfs(state, "size=4k")
    filler = state / "filler"
    # dd fills the tmpfs, then fails with ENOSPC, as intended.
    node.in_node(["dd", "if=/dev/zero", f"of={filler}", "bs=1k", "count=64"])
    run = node.run()
    assert run.rc == 13, run.stderr
    assert "unexpected failure while waiting for the node lock" in run.first_error
    assert (node.seen(filler)).stat().st_size > 0  # the tmpfs is full (seen where the installer runs)
    assert _leftovers(node) == [] and not node.seen(state / "lock-holder").exists()
    assert node.calls("modprobe") == [] and not (node.host / "opt/nvidia-installer/driver").exists()


def test_read_only_cache(node: FakeNode, mount_tmpfs: Callable[[Path, str], None]) -> None:
    mount_tmpfs(node.host / "opt/nvidia-installer", "size=64m,ro")
    run = node.run()
    assert run.rc == 13, run.stderr
    assert "unexpected failure while installing the driver tree" in run.first_error
    assert "mkdir" in run.first_error
    assert _leftovers(node) == [] and node.calls("modprobe") == []


def test_readiness_probe_with_garbage_readiness_file(node: FakeNode) -> None:
    assert node.run().rc == 0
    (node.host / READY_FILE).write_bytes(os.urandom(300))
    probe = node.run("probe")
    assert probe.rc == 1 and "not ready: readiness file says" in probe.stderr


def test_tarball_checksum_is_not_read_when_the_cache_is_used(node: FakeNode) -> None:
    """Issue 8: a start from the cache reads neither tarball (it verifies what it uses)."""
    assert node.run().rc == 0
    node.reboot()
    for tarball in node.payload.glob("modules-*.tar.zst"):
        tarball.write_bytes(b"damaged after the first install")  # would fail any check that read it
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    assert node.calls("tar") == [] and node.calls("zstd") == []


def test_modules_tarball_helper_is_real() -> None:
    """The stand-in tarballs are real zstd tarballs (the faults above rely on tar reading them)."""
    listing = subprocess.run(
        ["tar", "--use-compress-program=zstd", "-t", "-f", "-"], input=modules_tarball("1.2", "open"),
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    assert sorted(listing.split()) == sorted(f"kernel-open/{m}.ko" for m in MODULES)
    assert tar_zstd({"a": b"b"})[:4] == b"\x28\xb5\x2f\xfd"


def test_disk_filled_by_another_writer_while_unpacking(
    node: FakeNode, mount_tmpfs: Callable[[Path, str], None]
) -> None:
    """Room at the free-space check, none a moment later: tar fails, the installer says so (exit 12),
    removes its staging dir and leaves the driver link as it was."""
    installer_dir = node.host / "opt/nvidia-installer"
    mount_tmpfs(installer_dir, "size=8m")
    node.env_extra["FAKE_FILL"] = f"{installer_dir}/filler:2"  # the 2nd zstd: the unpack, not the listing
    run = node.run()
    assert run.rc == 12, run.stderr
    assert "no space left in /opt/nvidia-installer on node gpu-node-1 while unpacking" in run.first_error
    assert _leftovers(node) == [] and not node.seen(installer_dir / "driver").exists()
    assert node.seen(installer_dir / "filler").stat().st_size > 0  # the other writer's file, inside the tmpfs
    assert node.calls("modprobe") == []
