"""The node-side installer against a fake node: host files, stub calls and exit codes (docs/node.md)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.node.fakenode import DRIVER, INSTALLER, KERNEL, READY_FILE, FakeNode, is_running, wait_until

OLD_DRIVER = "570.124.06"
NEW_DRIVER = "580.82.07"


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path)


def _tree_state(tree: Path) -> dict[str, tuple[int, int]]:
    """inode and mtime of every path in a cache tree: equal before and after means nothing was rewritten."""
    return {
        str(p.relative_to(tree)): (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in [tree, *tree.rglob("*")]
    }


# ---- a fresh install ----


def test_fresh_install_fills_host_layout_loads_and_gets_ready(node: FakeNode) -> None:
    run = node.run()
    assert run.rc == 0, run.stderr
    assert run.ready
    tree = node.tree("open")
    key = tree.name
    # Cache entry per the host layout contract.
    assert (
        (tree / ".complete")
        .read_text()
        .startswith(f"DRIVER_VERSION={DRIVER}\nKERNEL_NAME={KERNEL}\nMODULE_TYPE=open\nPAYLOAD_SHA256=")
    )
    assert (tree / "bin/nvidia-smi").read_bytes() == (node.userspace / "bin/nvidia-smi").read_bytes()
    assert os.readlink(tree / "lib/libcuda.so.1") == f"libcuda.so.{DRIVER}"
    assert os.readlink(tree / "lib64") == "lib"
    # GSP firmware where NVIDIA's container toolkit looks under a driver root: lib/firmware/nvidia/<version>/.
    assert (tree / f"lib/firmware/nvidia/{DRIVER}/gsp_ga10x.bin").is_file()
    assert (tree / "vulkan/icd.d/nvidia_icd.json").is_file()
    kdir = tree / "lib/modules" / KERNEL
    assert "type=open" in (kdir / "nvidia/nvidia.ko").read_text()
    # The in-kernel modules nvidia-drm declares (drm, drm_kms_helper) and theirs resolve through relative
    # links to the host's own files, valid in the pod's and the host's view; nothing else of the host tree.
    host_kdir = node.host / "lib/modules" / KERNEL
    linked = sorted(str(p.relative_to(kdir)) for p in (kdir / "kernel").rglob("*.ko"))
    assert linked == ["kernel/drivers/gpu/drm/drm.ko", "kernel/drivers/gpu/drm/drm_kms_helper.ko"]
    for rel in linked:
        assert (kdir / rel).is_symlink() and not os.readlink(kdir / rel).startswith("/")
        assert (kdir / rel).resolve() == (host_kdir / rel).resolve()
        host_view = Path("/opt/nvidia-installer/cache", key, "lib/modules", KERNEL, rel).parent / os.readlink(
            kdir / rel
        )
        assert os.path.normpath(host_view) == f"/lib/modules/{KERNEL}/{rel}"
    assert (kdir / "modules.builtin").is_file()
    # The device plugin's host path is a symlink; NVIDIA's driver root a read-only bind mount of the tree.
    assert os.readlink(node.host / "opt/nvidia-installer/driver") == f"cache/{key}"
    root = node.host / "run/nvidia/driver"
    assert node.mounts_at(root) == [f"{tree}"]
    assert (node.seen(root) / "bin/nvidia-smi").read_bytes() == (tree / "bin/nvidia-smi").read_bytes()
    assert "Read-only file system" in node.in_node(["touch", f"{root}/bin/x"]).stderr
    # Firmware path is the host's view (the kernel reads firmware in PID 1's mount namespace).
    fw_param = node.sys / "module/firmware_class/parameters/path"
    assert fw_param.read_text() == f"/opt/nvidia-installer/cache/{key}/lib/firmware"
    # depmod ran on the staging dir, modprobe on the final tree with the parameters file.
    assert node.calls("depmod") == [["-b", str(tree.parent / f".staging-{key}.{_staging_pid(node)}"), KERNEL]]
    # modprobe reads the installer's private, validated copy of the parameters file, never the mounted one.
    conf = node.calls("modprobe")[0][3]
    assert Path(conf).parent.parent == node.tmp and Path(conf).name == "modprobe.conf"
    assert node.calls("modprobe") == [
        ["-d", str(tree), "-C", conf, "nvidia"],
        ["-d", str(tree), "-C", conf, "nvidia-uvm"],
    ]
    assert not list(node.tmp.iterdir()), "the work dir outlived the installer"
    assert (node.sys / "module/nvidia/version").read_text().strip() == DRIVER
    assert {p.name for p in node.dev.iterdir()} >= {"nvidiactl", "nvidia0", "nvidia-uvm"}
    assert node.calls("nvidia-persistenced") == [["--foreground"]]
    # nvidia-smi ran before the readiness file existed; the readiness file says what is loaded.
    assert node.calls("nvidia-smi") == [["ready-file-present=no"]]
    assert node.ready_values() == {
        "DRIVER_VERSION": DRIVER, "KERNEL_NAME": KERNEL, "MODULE_TYPE": "open",
        "DRIVER_ROOT": "/run/nvidia/driver", "DRIVER_DIR": "/opt/nvidia-installer/driver", "TREE": key,
        "NODE_NAME": "gpu-node-1",
    }  # fmt: skip
    # NVIDIA's GPU Operator owns /run/nvidia/validations: nothing of ours goes there.
    assert not (node.host / "run/nvidia/validations").exists()
    assert not list(tree.parent.glob(".staging-*"))
    assert node.calls("rmmod") == []


def _staging_pid(node: FakeNode) -> str:
    """The installer's pid, as recorded in the staging dir name passed to depmod."""
    return node.calls("depmod")[0][1].rsplit(".", 1)[1]


def test_prints_build_time_verdict_and_kernel_first(node: FakeNode) -> None:
    run = node.run()
    lines = run.stderr.splitlines()
    verdict = [i for i, line in enumerate(lines) if "build-time load check" in line]
    assert verdict, run.stderr
    assert f"pass, modules loaded into kernel {KERNEL}" in lines[verdict[0]]
    assert verdict[0] < next(i for i, line in enumerate(lines) if "module type:" in line)


def test_skipped_verdict_is_a_warning(node: FakeNode) -> None:
    node.make_payload(verdict="skipped")
    run = node.run()
    assert run.rc == 0
    assert "warning: build-time load check: skipped" in run.stderr
    assert f"not proven to load into kernel {KERNEL}" in run.stderr


def test_failed_verdict_refuses_and_changes_nothing(node: FakeNode) -> None:
    node.make_payload(verdict="fail")
    before = node.snapshot()
    run = node.run()
    assert run.rc == 3
    assert "verdict 'fail'" in run.first_error
    assert node.snapshot() == before


# ---- refusing bad input without touching the host ----


def test_kernel_mismatch_stops_with_one_line_and_host_unchanged(node: FakeNode) -> None:
    node.env_extra["FAKE_KERNEL"] = "6.12.47-cloud-amd64"
    before = node.snapshot()
    run = node.run()
    assert run.rc == 4
    first = run.first_error
    assert "6.12.47-cloud-amd64" in first and KERNEL in first and "add a target" in first
    assert node.snapshot() == before
    assert node.calls("modprobe") == [] and node.calls("tar") == []


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_damaged_payload_stops_before_host(node: FakeNode, damage: str) -> None:
    tarball = node.payload / "modules-open.tar.zst"
    data = bytearray(tarball.read_bytes())
    if damage == "corrupt":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    tarball.write_bytes(bytes(data))
    before = node.snapshot()
    run = node.run()
    assert run.rc == 3
    assert "does not match its SHA256SUMS" in run.first_error
    assert "modules-open.tar.zst" in run.stderr
    assert node.snapshot() == before


def test_payload_without_checksums_stops(node: FakeNode) -> None:
    (node.payload / "SHA256SUMS").unlink()
    before = node.snapshot()
    run = node.run()
    assert run.rc == 3 and "SHA256SUMS is missing" in run.first_error
    assert node.snapshot() == before


def test_no_gpu_stops(node: FakeNode) -> None:
    node.remove_gpus()
    node.add_pci("0000:00:02.0", "0x8086", "0x46a6", "0x030000")  # an Intel GPU is not ours
    before = node.snapshot()
    run = node.run()
    assert run.rc == 10 and "no NVIDIA GPU" in run.first_error
    assert node.snapshot() == before


def test_bad_module_parameters_file_stops(node: FakeNode) -> None:
    node.params.write_text("options nvidia NVreg_EnableGpuFirmware=1\ninstall nvidia /bin/sh -c reboot\n")
    before = node.snapshot()
    run = node.run()
    assert run.rc == 5
    assert "line 2: 'install' is not allowed" in run.first_error
    assert node.snapshot() == before


def test_missing_module_parameters_file_loads_without_it(node: FakeNode) -> None:
    node.params.unlink()
    run = node.run()
    assert run.rc == 0 and run.ready
    assert all("-C" not in call for call in node.calls("modprobe"))


def test_foreign_driver_root_directory_is_a_conflict(node: FakeNode) -> None:
    (node.host / "run/nvidia/driver/usr").mkdir(parents=True)  # e.g. the GPU Operator's driver root
    before = node.snapshot()
    run = node.run()
    assert run.rc == 7 and "/run/nvidia/driver" in run.first_error
    assert node.snapshot() == before


def test_second_instance_waits_for_lock_then_gives_up(node: FakeNode) -> None:
    fd = os.open(node.host / "run/nvidia-installer", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        node.env_extra["LOCK_TIMEOUT"] = "0"
        run = node.run()
    finally:
        os.close(fd)
    assert run.rc == 9 and "still held after 0s by an unknown process" in run.first_error
    assert node.calls("modprobe") == []


# ---- module type ----


@pytest.mark.parametrize(
    ("driver", "device", "explicit", "expected"),
    [
        ("550.127.08", "0x2330", "auto", "proprietary"),  # branch < 560
        ("580.65.06", "0x1db4", "auto", "proprietary"),  # V100: pre-Turing
        ("580.65.06", "0x1e04", "", "open"),  # RTX 2080 Ti: first Turing id range; empty = auto
        ("580.65.06", "0x2330", "auto", "open"),  # H100
        ("580.65.06", "0x2330", "proprietary", "proprietary"),  # explicit wins
        ("550.127.08", "0x2330", "open", "open"),  # explicit wins over the branch rule
    ],
)
def test_module_type_decision(tmp_path: Path, driver: str, device: str, explicit: str, expected: str) -> None:
    node = FakeNode(tmp_path, driver=driver)
    node.remove_gpus()
    node.add_gpu("0000:01:00.0", device=device)
    node.env_extra["MODULE_TYPE"] = explicit
    run = node.run()
    assert run.rc == 0, run.stderr
    assert node.ready_values()["MODULE_TYPE"] == expected
    assert (
        f"type={expected}" in (node.tree(expected) / "lib/modules" / KERNEL / "nvidia/nvidia.ko").read_text()
    )
    assert {Path(c[c.index("-f") + 1]).name for c in node.calls("tar")} == {f"modules-{expected}.tar.zst"}


def test_one_pre_turing_gpu_among_new_ones_means_proprietary(node: FakeNode) -> None:
    node.add_gpu("0000:02:00.0", device="0x1db4")
    run = node.run()
    assert run.rc == 0
    assert node.ready_values()["MODULE_TYPE"] == "proprietary"
    assert "0000:02:00.0" in run.stderr
    assert {"nvidia0", "nvidia1"} <= {p.name for p in node.dev.iterdir()}


def test_type_not_in_payload_is_a_clear_error(node: FakeNode) -> None:
    node.make_payload(types=("open",))
    node.remove_gpus()
    node.add_gpu("0000:01:00.0", device="0x1db4")
    before = node.snapshot()
    run = node.run()
    assert run.rc == 5
    assert "module type proprietary" in run.first_error and "holds: open" in run.first_error
    assert node.snapshot() == before


def test_invalid_module_type_setting(node: FakeNode) -> None:
    node.env_extra["MODULE_TYPE"] = "opne"
    before = node.snapshot()
    run = node.run()
    assert run.rc == 2 and "MODULE_TYPE='opne'" in run.first_error
    assert node.snapshot() == before


# ---- already loaded drivers ----


def test_same_driver_loaded_keeps_it_without_unpacking(node: FakeNode) -> None:
    assert node.run().rc == 0
    tree = node.tree("open")
    state = _tree_state(tree)
    node.log.write_text("")
    run = node.run()
    assert run.rc == 0 and run.ready
    assert "already loaded: keeping it" in run.stderr
    assert node.calls("rmmod") == []
    assert node.calls("tar") == [] and node.calls("zstd") == [] and node.calls("depmod") == []
    assert _tree_state(tree) == state


def test_other_driver_loaded_and_busy_stops_naming_the_process(node: FakeNode) -> None:
    node.load_module("nvidia", OLD_DRIVER, refcnt=3, holders=("nvidia_uvm",))
    node.load_module("nvidia_uvm", OLD_DRIVER, refcnt=1)
    node.add_process(4242, "python3", ("/dev/nvidia0", "/dev/nvidiactl", "/dev/pts/0"))
    node.add_process(777, "bash", ("/dev/null",))
    (node.host / READY_FILE).write_text(f"DRIVER_VERSION={OLD_DRIVER}\n")
    node.env_extra.update(IDLE_WAIT_SECONDS="1", IDLE_POLL_SECONDS="0.2")
    before = node.snapshot()
    run = node.run()
    assert "waiting for GPU jobs to finish" in run.stderr and "4242 (python3)" in run.stderr
    assert run.rc == 6
    assert "4242 (python3)" in run.first_error and "777" not in run.first_error
    assert OLD_DRIVER in run.first_error and "drain" in run.first_error
    assert node.calls("rmmod") == []
    assert node.snapshot() == before


def test_other_driver_in_use_by_refcount_alone_stops(node: FakeNode) -> None:
    node.load_module("nvidia", OLD_DRIVER, refcnt=2, holders=("nvidia_uvm",))
    node.load_module("nvidia_uvm", OLD_DRIVER)
    node.env_extra.update(IDLE_WAIT_SECONDS="1", IDLE_POLL_SECONDS="0.2")
    before = node.snapshot()
    run = node.run()
    assert run.rc == 6 and "no process found" in run.first_error
    assert "module nvidia has 1 user(s)" in run.stderr
    assert node.snapshot() == before


def test_busy_old_driver_is_replaced_once_the_job_ends_without_a_restart(node: FakeNode) -> None:
    """Issue 10: a driver swap waits for running GPU jobs (not ready meanwhile), then goes on by itself."""
    node.load_module("nvidia", OLD_DRIVER, refcnt=1)
    node.add_process(4242, "python3", ("/dev/nvidia0",))
    node.env_extra.update(IDLE_POLL_SECONDS="0.1")
    log = node.root / "installer.log"
    with log.open("w") as err:
        proc = subprocess.Popen(node.installer_argv(), env=node.env(), stderr=err,
                                start_new_session=True)  # fmt: skip
        try:
            wait_until(lambda: "waiting for GPU jobs to finish" in log.read_text())
            time.sleep(0.5)  # still waiting: nothing unloaded, nothing ready
            assert node.calls("rmmod") == [] and not (node.host / READY_FILE).exists()
            assert proc.poll() is None
            shutil.rmtree(node.proc / "4242")  # the job ends and lets go of the GPU
            (node.sys / "module/nvidia/refcnt").write_text("0\n")
            wait_until((node.host / READY_FILE).exists)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert node.calls("rmmod") == [["nvidia"]]
    assert node.ready_values()["DRIVER_VERSION"] == DRIVER
    # Said when what it waits for changes, not at every poll.
    waits = [line for line in log.read_text().splitlines() if "waiting for GPU jobs" in line]
    assert len([line for line in waits if "4242 (python3)" in line]) == 1
    # It slept between looks: no shell error (an "ambiguous redirect" of the sleep made the wait spin).
    assert not re.search(r"nvidia-installer: line [0-9]+: ", log.read_text()), log.read_text()


def test_other_driver_idle_is_unloaded_in_order_then_new_one_installed(node: FakeNode) -> None:
    node.load_module("nvidia", OLD_DRIVER, refcnt=2, holders=("nvidia_uvm", "nvidia_modeset"))
    node.load_module("nvidia_modeset", OLD_DRIVER, refcnt=1, holders=("nvidia_drm",))
    node.load_module("nvidia_uvm", OLD_DRIVER)
    node.load_module("nvidia_drm", OLD_DRIVER)
    node.add_process(777, "bash", ("/dev/null",))
    run = node.run()
    assert run.rc == 0, run.stderr
    assert node.calls("rmmod") == [["nvidia_drm"], ["nvidia_modeset"], ["nvidia_uvm"], ["nvidia"]]
    assert (node.sys / "module/nvidia/version").read_text().strip() == DRIVER
    assert node.ready_values()["DRIVER_VERSION"] == DRIVER


def test_same_version_other_module_type_is_reloaded(node: FakeNode) -> None:
    node.env_extra["MODULE_TYPE"] = "proprietary"
    assert node.run().rc == 0
    node.env_extra["MODULE_TYPE"] = "open"
    node.log.write_text("")
    run = node.run()
    assert run.rc == 0
    assert ["nvidia"] in node.calls("rmmod")
    assert "Open Kernel Module" in (node.proc / "driver/nvidia/version").read_text()


# ---- crash safety, upgrades, reboots ----


def test_crash_between_staging_and_switch_leaves_old_tree_then_rerun_finishes(node: FakeNode) -> None:
    assert node.run().rc == 0
    old_tree = node.tree("open")
    old_state = _tree_state(old_tree)
    old_link = os.readlink(node.host / "opt/nvidia-installer/driver")

    node.make_payload(driver=NEW_DRIVER)
    node.make_userspace(driver=NEW_DRIVER)
    node.driver = NEW_DRIVER
    node.env_extra["FAKE_HANG"] = "depmod"
    crashed = node.run(sigterm=False, hang_marker="depmod-running")
    assert not crashed.ready
    cache = node.host / "opt/nvidia-installer/cache"
    # The old tree is intact and still selected; the new one exists only as a staging dir.
    assert os.readlink(node.host / "opt/nvidia-installer/driver") == old_link
    assert _tree_state(old_tree) == old_state
    assert not node.tree("open").exists()
    assert len(list(cache.glob(".staging-*"))) == 1
    # The new tree is built before the old driver goes: it is still loaded, and the readiness file still
    # (truthfully) names it, so its GPUs stay in service through a crash while unpacking.
    assert node.calls("rmmod") == []
    assert (node.sys / "module/nvidia/version").read_text().strip() == DRIVER
    assert node.ready_values()["DRIVER_VERSION"] == DRIVER

    del node.env_extra["FAKE_HANG"]
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    assert "removing leftover" in run.stderr
    assert not list(cache.glob(".staging-*"))
    assert os.readlink(node.host / "opt/nvidia-installer/driver") == f"cache/{node.tree('open').name}"
    assert (node.tree("open") / ".complete").is_file()
    assert node.ready_values()["DRIVER_VERSION"] == NEW_DRIVER


def test_crash_leaves_no_half_tree_under_the_final_name(node: FakeNode) -> None:
    node.env_extra["FAKE_HANG"] = "depmod"
    node.run(sigterm=False, hang_marker="depmod-running")
    assert not node.tree("open").exists()
    assert not (node.host / "opt/nvidia-installer/driver").exists()
    del node.env_extra["FAKE_HANG"]
    assert node.run().rc == 0
    assert (node.tree("open") / ".complete").is_file()


def test_incomplete_entry_under_final_name_is_replaced(node: FakeNode) -> None:
    half = node.tree("open")
    (half / "lib").mkdir(parents=True)
    (half / "lib/partial").write_text("x")
    run = node.run()
    assert run.rc == 0
    assert not (half / "lib/partial").exists()
    assert (half / ".complete").is_file()
    assert not list(half.parent.glob(".trash-*"))


def test_reboot_with_warm_cache_loads_without_unpacking(node: FakeNode) -> None:
    assert node.run().rc == 0
    tree = node.tree("open")
    state = _tree_state(tree)
    node.reboot()
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    assert "not unpacking" in run.stderr
    assert node.calls("tar") == [] and node.calls("zstd") == [] and node.calls("depmod") == []
    assert [call[-1] for call in node.calls("modprobe")] == ["nvidia", "nvidia-uvm"]
    assert _tree_state(tree) == state
    assert node.mounts_at(node.host / "run/nvidia/driver") == [str(tree)]


def test_rebuilt_payload_with_same_key_is_unpacked_again(node: FakeNode) -> None:
    assert node.run().rc == 0
    node.reboot()
    manifest = node.payload / "manifest.env"
    manifest.write_text(manifest.read_text() + "BUILD=2\n")
    node.write_sums()
    run = node.run()
    assert run.rc == 0
    assert node.calls("tar") != []


# ---- lifecycle ----


def test_sigterm_stops_daemons_promptly_and_keeps_modules(node: FakeNode) -> None:
    node.add_pci("0000:0a:00.0", "0x10de", "0x22a3", "0x068000")  # an NVSwitch
    run = node.run(await_state=("nvidia-persistenced.pid", "nv-fabricmanager.pid"))
    assert run.rc == 0 and run.ready
    assert run.term_seconds is not None and run.term_seconds < 2.0
    for daemon in ("nvidia-persistenced", "nv-fabricmanager"):
        assert not is_running(node.daemon_pid(daemon))
        assert ["stopped", daemon] in [line.split() for line in node.log.read_text().splitlines()]
    assert node.calls("rmmod") == []
    assert (node.sys / "module/nvidia").is_dir() and (node.sys / "module/nvidia_uvm").is_dir()
    assert "leaving the kernel modules loaded" in run.stderr


def test_no_fabric_manager_without_nvswitch(node: FakeNode) -> None:
    node.add_pci("0000:0b:00.0", "0x15b3", "0x1021", "0x020700")  # a Mellanox NIC bridge-ish device
    assert node.run().rc == 0
    assert node.calls("nv-fabricmanager") == []


def test_nvswitch_without_fabric_manager_in_image_stops(node: FakeNode) -> None:
    node.add_pci("0000:0a:00.0", "0x10de", "0x22a3", "0x068000")
    (node.userspace / "bin/nv-fabricmanager").unlink()
    before = node.snapshot()
    run = node.run()
    assert run.rc == 3 and "nv-fabricmanager" in run.first_error
    assert node.snapshot() == before
    assert node.calls("nvidia-persistenced") == []


def test_modprobe_failure_is_reported_and_not_ready(node: FakeNode) -> None:
    node.env_extra["FAKE_MODPROBE_FAIL"] = "nvidia"
    run = node.run()
    assert run.rc == 8
    assert f"modprobe nvidia failed for driver {DRIVER} (open) on kernel {KERNEL}" in run.first_error
    assert "Invalid argument" in run.stderr
    assert not (node.host / READY_FILE).exists()
    assert node.calls("nvidia-persistenced") == []


def test_nvidia_smi_failure_stops_daemons_and_is_not_ready(node: FakeNode) -> None:
    node.env_extra["FAKE_NVIDIA_SMI_FAIL"] = "1"
    run = node.run()
    assert run.rc == 8 and "nvidia-smi failed" in run.first_error
    assert "Unable to determine the device handle" in run.stderr
    assert not (node.host / READY_FILE).exists()
    started = re.search(r"nvidia-persistenced started \(pid (\d+)\)", run.stderr)
    assert started, run.stderr
    assert not is_running(int(started.group(1)))


# ---- probe ----


def test_probe(node: FakeNode) -> None:
    assert node.run("probe").rc == 1
    assert node.run().rc == 0
    assert node.run("probe").rc == 0
    ready = node.host / READY_FILE
    good = ready.read_text()
    ready.write_text(good.replace(DRIVER, OLD_DRIVER))
    probe = node.run("probe")
    assert probe.rc == 1 and OLD_DRIVER in probe.stderr
    ready.write_text(good)
    (node.sys / "module/nvidia/version").write_text(OLD_DRIVER + "\n")
    assert node.run("probe").rc == 1
    node.reboot()
    assert node.run("probe").rc == 1


def test_probe_rejects_type_other_than_explicit_setting(node: FakeNode) -> None:
    assert node.run().rc == 0
    node.env_extra["MODULE_TYPE"] = "proprietary"
    assert node.run("probe").rc == 1


def test_unknown_command(node: FakeNode) -> None:
    run = node.run("instal")
    assert run.rc == 2 and "unknown command 'instal'" in run.first_error


def test_help_is_a_written_usage_text_naming_every_command_and_exit_code(node: FakeNode) -> None:
    run = node.run("help")
    assert run.rc == 0 and run.stdout.startswith("Usage: nvidia-installer [COMMAND]")
    for command in ("install", "probe", "status", "help"):
        assert f"\n  {command} " in run.stdout
    # Every exit code docs/node.md's table lists (but 0 and 1) is named in the help.
    table = (INSTALLER.parents[2] / "docs/node.md").read_text().split("## Messages and exit codes", 1)[1]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)} - {0, 1}
    assert codes == set(range(2, 14))
    for code in codes:
        assert re.search(rf"\b{code} [a-z]", run.stdout), f"exit code {code} missing from the help"


# ---- the harness itself ----


def test_harness_refuses_to_run_without_a_stub(node: FakeNode) -> None:
    (node.stubs / "modprobe").unlink()
    with pytest.raises(AssertionError, match="stub modprobe missing"):
        node.run()


def test_installer_names_no_command_by_absolute_path() -> None:
    """Every command goes through PATH, so the stubs above are what the tests exercise."""
    text = INSTALLER.read_text()
    for prefix in ("/sbin/", "/usr/sbin/", "/usr/bin/", "/bin/"):
        offenders = [line for line in text.splitlines() if prefix in line and "#!/usr/bin/env" not in line]
        assert offenders == [], offenders


def test_status_reports_image_loaded_driver_and_readiness(node: FakeNode) -> None:
    before = node.run("status")
    assert before.rc == 1
    assert node.run().rc == 0
    assert "ready:    no" in before.stdout
    status = node.run("status")
    assert status.rc == 0
    assert f"loaded:   {DRIVER}" in status.stdout
    assert f"driver:   cache/{DRIVER}-{KERNEL}-open" in status.stdout
    assert "MODULE_TYPE=open" in status.stdout
