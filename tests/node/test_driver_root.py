"""The driver root at /run/nvidia/driver (issue 12): a read-only bind mount of the tree in use, made in the
fake node's own mount namespace with real mounts, read the way NVIDIA's GPU Operator components read it.

The operator's toolkit, validator and device plugin mount the host's /run/nvidia/driver with
HostToContainer propagation (rslave), often before the driver is ready. A mount made there later reaches
them; a symlink would not. Root only (mount namespaces), as CI runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.node.fakenode import DRIVER, FakeNode

NEW_DRIVER = "580.82.07"
NEWER_DRIVER = "580.95.05"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root (CI runs as root)")

# Where NVIDIA's container toolkit looks under a driver root (nvidia-container-toolkit, internal/lookup:
# executables on the default PATH list, libraries in its fixed library list; symlinks resolved within the
# root), and GSP firmware under lib/firmware/nvidia/<driver version>/.
EXECUTABLE_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
LIBRARY_DIRS = (
    "/", "/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu/nvidia/current", "/usr/lib/aarch64-linux-gnu/nvidia/current", "/lib64",
    "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/lib/x86_64-linux-gnu/nvidia/current",
    "/lib/aarch64-linux-gnu/nvidia/current", "/glibc/lib",
)  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path)


def _resolve_in_root(root: Path, path: str, hops: int = 0) -> Path | None:
    """Follows `path` (absolute, as seen inside the root) component by component, every symlink resolved
    relative to the root (an absolute target is re-rooted), as the toolkit does for a driver root."""
    assert hops < 40, f"symlink loop at {path}"
    current = "/"
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        candidate = os.path.normpath(os.path.join(current, part))
        real = root / candidate.lstrip("/")
        if real.is_symlink():
            target = os.readlink(real)
            joined = target if target.startswith("/") else os.path.join(current, target)
            rest = "/".join(parts[i + 1 :])
            return _resolve_in_root(root, os.path.normpath(os.path.join(joined, rest)), hops + 1)
        if not real.exists():
            return None
        current = candidate
    return root / current.lstrip("/")


def _locate(root: Path, dirs: tuple[str, ...], name: str) -> Path | None:
    for directory in dirs:
        found = _resolve_in_root(root, f"{directory}/{name}")
        if found is not None and found.is_file():
            return found
    return None


def _reader(node: FakeNode, script: str) -> subprocess.Popen[str]:
    """A long-lived process in a mount namespace of its own, a slave of the node's (as kubelet gives a
    container a hostPath with HostToContainer). It prints `up` once set up, then waits for a line."""
    proc = subprocess.Popen(
        [*node.namespace_argv(), "unshare", "--mount", "--propagation", "slave", "sh", "-c", script],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "up", proc.stderr.read() if proc.stderr else ""
    return proc


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate("go\n", timeout=30)
    assert proc.returncode == 0, err
    return out


def _upgrade(node: FakeNode, driver: str) -> str:
    node.make_payload(driver=driver)
    node.make_userspace(driver=driver)
    node.driver = driver
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    return run.stderr


def test_driver_root_is_found_through_the_toolkits_search_lists(node: FakeNode) -> None:
    assert node.run().rc == 0
    root = node.seen(node.host / "run/nvidia/driver")
    smi = _locate(root, EXECUTABLE_DIRS, "nvidia-smi")
    assert smi is not None and os.access(smi, os.X_OK)
    nvml = _locate(root, LIBRARY_DIRS, "libnvidia-ml.so.1")
    assert nvml is not None and nvml.read_text() == f"libnvidia-ml.so {DRIVER}\n"
    assert list((root / "lib/firmware/nvidia" / DRIVER).glob("gsp*.bin"))
    # Nothing is found where the mount is not: outside the node's namespace the root is an empty directory.
    assert _locate(node.host / "run/nvidia/driver", EXECUTABLE_DIRS, "nvidia-smi") is None


def test_the_search_resolves_links_inside_the_root(tmp_path: Path) -> None:
    """The helper above must not find files through links that leave the root, as the toolkit would not."""
    root = tmp_path / "root"
    (root / "opt/nv").mkdir(parents=True)
    (root / "opt/nv/libnvidia-ml.so.1").write_text("inside\n")
    (root / "lib64").symlink_to("/opt/nv")  # absolute: re-rooted, not this machine's /opt/nv
    (root / "usr").mkdir()
    (root / "usr/lib64").symlink_to("/usr/lib/x86_64-linux-gnu")  # exists on this machine, not in the root
    assert _locate(root, LIBRARY_DIRS, "libnvidia-ml.so.1") == root / "opt/nv/libnvidia-ml.so.1"
    assert _locate(root, LIBRARY_DIRS, "libc.so.6") is None


def test_driver_root_survives_a_restart_and_comes_back_after_a_reboot(node: FakeNode) -> None:
    assert node.run().rc == 0
    driver_root = node.host / "run/nvidia/driver"
    tree = str(node.tree("open"))
    run = node.run()  # the pod restarts: the mount is there, nothing is stacked
    assert run.rc == 0 and "already shows" in run.stderr
    assert node.mounts_at(driver_root) == [tree]
    node.reboot()
    assert node.mounts_at(driver_root) == []
    run = node.run()  # from the cache, the mount again
    assert run.rc == 0 and "not unpacking" in run.stderr
    assert node.mounts_at(driver_root) == [tree]
    status = node.run("status")
    assert f"/run/nvidia/driver shows driver {DRIVER} (open)" in status.stdout


def test_a_reader_that_mounted_the_root_before_the_driver_was_ready_sees_it(node: FakeNode) -> None:
    """Like the operator's device plugin (host /run/nvidia/driver at /driver-root, HostToContainer),
    started before the installer: kubelet made an empty directory, the installer's mount reaches it."""
    driver_root = node.host / "run/nvidia/driver"
    driver_root.mkdir()  # what kubelet's DirectoryOrCreate leaves for a pod scheduled first
    pod_view = node.root / "plugin-pod/driver-root"
    pod_view.mkdir(parents=True)
    reader = _reader(
        node,
        f"mount --rbind {driver_root} {pod_view} && mount --make-rslave {pod_view} && ls -A {pod_view} && "
        f"echo up && read -r _ && cat {pod_view}/bin/nvidia-smi >/dev/null && cat {pod_view}/.complete",
    )
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    assert _finish(reader) == (node.tree("open") / ".complete").read_text()


def test_upgrade_switches_the_root_under_a_reader_holding_the_old_one(node: FakeNode) -> None:
    """The new tree is mounted over the old: a new lookup sees the new driver, a process with the old
    tree open (a file and its working directory) still reads the old one."""
    assert node.run().rc == 0
    driver_root = node.host / "run/nvidia/driver"
    lib = "lib/libnvidia-ml.so.1"
    reader = _reader(
        node,
        f"cd {driver_root} && exec 3<{lib} && echo up && read -r _ && cat <&3 && cat {lib} && "
        f"cat {driver_root}/{lib}",
    )
    old_tree = str(node.tree("open"))
    _upgrade(node, NEW_DRIVER)
    assert _finish(reader).splitlines() == [
        f"libnvidia-ml.so {DRIVER}",  # the open file
        f"libnvidia-ml.so {DRIVER}",  # through the old working directory
        f"libnvidia-ml.so {NEW_DRIVER}",  # a new lookup
    ]
    assert node.mounts_at(driver_root) == [old_tree, str(node.tree("open"))]
    assert (node.seen(driver_root) / ".complete").read_text().startswith(f"DRIVER_VERSION={NEW_DRIVER}\n")


def test_covered_driver_roots_do_not_keep_old_trees_but_a_container_mount_does(node: FakeNode) -> None:
    """After two upgrades the first tree is covered twice at /run/nvidia/driver (the host's mount table,
    copied from the real kernel's into the fake /proc): it is pruned; the previous one is kept."""
    assert node.run().rc == 0
    first = node.tree("open")
    _upgrade(node, NEW_DRIVER)
    second = node.tree("open")
    host_mounts = Path(f"/proc/{node.namespace_pid}/mountinfo").read_text()
    (node.proc / "1").mkdir(parents=True)
    (node.proc / "1/mountinfo").write_text(host_mounts)
    log = _upgrade(node, NEWER_DRIVER)
    # The first tree's files are gone; its directory is the mount point of the mount stacked on it, so it
    # stays, empty, until a reboot (then the next prune removes it).
    assert f"emptied /opt/nvidia-installer/cache/{first.name}" in log
    assert node.cache_entries() == sorted([first.name, second.name, node.tree("open").name])
    assert list(first.iterdir()) == []
    node.reboot()
    (node.proc / "1/mountinfo").unlink()  # the host's mount table after the reboot: no driver root yet
    node.env_extra["CACHE_KEEP_PREVIOUS"] = "0"
    _upgrade(node, "590.44.01")
    assert node.cache_entries() == [node.tree("open").name]


def test_an_uncovered_container_mount_keeps_its_tree(node: FakeNode) -> None:
    assert node.run().rc == 0
    first = node.tree("open")
    _upgrade(node, NEW_DRIVER)
    node.add_container_mount(4711, first)  # a GPU pod with the first driver at /usr/local/nvidia
    log = _upgrade(node, NEWER_DRIVER)
    assert f"keeping cache entry {first.name}: a container has it mounted" in log
    assert (first / ".complete").is_file()


def test_a_foreign_driver_root_is_left_alone(node: FakeNode) -> None:
    """Another installer's root (the GPU Operator's driver container mounts its root there) is refused."""
    foreign = node.root / "operator-driver"
    (foreign / "usr/bin").mkdir(parents=True)
    driver_root = node.host / "run/nvidia/driver"
    driver_root.mkdir()
    assert node.in_node(["mount", "--bind", str(foreign), str(driver_root)]).returncode == 0
    before = node.snapshot()
    run = node.run()
    assert run.rc == 7 and "holds a driver root that is not this installer's" in run.first_error
    assert node.snapshot() == before and node.mounts_at(driver_root) == [str(foreign)]


def test_symlink_of_an_older_installer_becomes_a_mount(node: FakeNode) -> None:
    (node.host / "run/nvidia/driver").symlink_to("/opt/nvidia-installer/driver")
    run = node.run()
    assert run.rc == 0 and "replacing the symlink" in run.stderr
    assert node.mounts_at(node.host / "run/nvidia/driver") == [str(node.tree("open"))]
