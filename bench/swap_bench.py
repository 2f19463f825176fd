"""Benchmark of the GPU downtime of one driver swap on the fake host with a real payload.

Usage (Debian 12 with the slow tier's packages and its module cache, as bench/node_bench.py):
    nice -n 10 .venv/bin/python -m bench.swap_bench [--runs 5] [--old-modules DIR] [--new-modules DIR]
        [--userspace-mib 94] [--output FILE]

Each run is a fresh fake node (tests/node/fakenode.py, real depmod and modinfo on the slow tier's real host
module tree, as bench/node_bench.py's "needed modules" layout) with one GPU:

1. the old driver is installed and loaded (its installer gets SIGTERM and leaves the modules loaded, as
   when the DaemonSet controller deletes the old pod in a rollout);
2. cold swap: the image changes to the new driver, whose tree is not in the host cache: the new installer
   unloads the old driver, unpacks, links, runs depmod, seals the tree, loads, runs nvidia-smi, writes
   its readiness file;
3. cache swap, rollback: the image changes back to the old driver, whose tree is still in the cache;
4. cache swap, forward again: back to the new driver, now cached too.

Downtime = from the moment the first NVIDIA module of the old driver disappears from the fake sysfs (the
rmmod stub removes it; a thread polls every 2 ms) to the readiness file's mtime (the installer writes it
last, after nvidia-smi). Also shown: the new installer's whole run, start to ready. The NVIDIA modules
are real compiled ones (two builds, the compile outputs of the slow tier) and the user space is
--userspace-mib of incompressible files per driver; the commands that touch a kernel or a GPU are the
fake node's stubs (modprobe, rmmod, nvidia-smi: milliseconds), so a real kernel adds its module load
time (a few seconds for nvidia.ko with GSP firmware) to every row alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.node_bench import HOST_TREE, KERNEL, require_host_tree
from bench.report import emit, machine_line
from tests.node.fakenode import READY_FILE, FakeNode
from tests.pins import PINS

CACHE = Path("/var/tmp/nvidia-installer-test-cache/modules")
# The manifests' driver versions (>= 560, so "auto" picks the open modules the payload holds); the .ko
# files are two real builds of the slow tier (535.261.03): the installer's work does not depend on it.
OLD_DRIVER, NEW_DRIVER = "580.65.06", "580.82.07"
COMMAND = "nice -n 10 .venv/bin/python -m bench.swap_bench"


# Two distinct real builds of the open modules from the slow tier's compile cache (the first is the one
# bench/results/node.md used; the second was built for the host tree's kernel).
DEFAULT_OLD = CACHE / "cebf375907e57412/6.1.0-50-amd64-open/open"
DEFAULT_NEW = CACHE / f"5317fab7037b1e61/{PINS['KERNEL_612']}-amd64-open/open"


def _modules(directory: Path) -> dict[str, bytes]:
    return {f"kernel-open/{ko.name}": ko.read_bytes() for ko in sorted(directory.glob("*.ko"))}


class Swapper:
    """A fake node that can switch its image between two drivers (payload and user space)."""

    def __init__(self, root: Path, files: dict[str, dict[str, bytes]], userspace_mib: int) -> None:
        self.files = files
        self.blobs = {driver: os.urandom(userspace_mib << 20) for driver in files}
        self.node = FakeNode(root, driver=OLD_DRIVER, kernel=KERNEL, real_depmod=True)
        host_kdir = self.node.host / "lib/modules" / KERNEL
        shutil.rmtree(host_kdir)
        host_kdir.symlink_to(HOST_TREE)
        self.use(OLD_DRIVER)

    def use(self, driver: str) -> None:
        """The image of `driver`: the same bytes every time, so a tree built once is found in the cache."""
        node = self.node
        node.driver = driver
        node.make_userspace(driver)
        (node.userspace / "lib" / "libnvidia-bench.so.1").write_bytes(self.blobs[driver])
        node.make_payload(ko_files=self.files[driver], types=("open",))
        # The stub modprobe reads version= lines; real modules carry none: the load is simulated.
        node.env_extra["FAKE_MODPROBE_VERSION"] = driver

    def loaded(self) -> set[str]:
        return {p.name for p in (self.node.sys / "module").glob("nvidia*")}

    def swap(self, driver: str) -> tuple[float, float]:
        """Switches to `driver` and runs its installer: (downtime, start to ready) in seconds."""
        before = self.loaded()
        assert "nvidia" in before, f"no driver loaded before the swap: {before}"
        self.use(driver)
        unloaded: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                if not before <= self.loaded():
                    unloaded.append(time.time())
                    return
                time.sleep(0.002)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            run = self.node.run(timeout=300.0)
        finally:
            stop.set()
            watcher.join()
        if run.rc != 0 or run.ready_seconds is None:
            raise SystemExit(f"installer failed (swap to {driver}):\n{run.stderr}")
        if not unloaded:
            raise SystemExit(f"the old driver was never unloaded (swap to {driver}):\n{run.stderr}")
        ready_at = (self.node.host / READY_FILE).stat().st_mtime
        assert self.node.ready_values()["DRIVER_VERSION"] == driver
        return ready_at - unloaded[0], run.ready_seconds


def _row(name: str, values: list[float]) -> str:
    return f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |"


def _compile_seconds() -> list[tuple[str, int]]:
    """What compiling the open modules natively (amd64) cost the slow tier: the compile.seconds it
    records next to each compile output, by build key and kernel."""
    found = []
    for path in sorted(CACHE.glob("*/*/open/compile.seconds")):
        if "ARCH=amd64" in (path.parent / "build.env").read_text().split():
            found.append((f"{path.parents[2].name}/{path.parents[1].name}", int(path.read_text())))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--old-modules", type=Path, help="a compile output's open/ dir (the old driver)")
    parser.add_argument("--new-modules", type=Path, help="another one (the new driver)")
    parser.add_argument("--userspace-mib", type=int, default=94)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    require_host_tree()
    old_dir, new_dir = args.old_modules or DEFAULT_OLD, args.new_modules or DEFAULT_NEW
    for directory in (old_dir, new_dir):
        if not (directory / "nvidia.ko").is_file():
            raise SystemExit(f"no nvidia.ko in {directory}: run the slow tier, or pass --old/--new-modules")
    files = {OLD_DRIVER: _modules(old_dir), NEW_DRIVER: _modules(new_dir)}
    times: dict[str, list[float]] = {}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-swap-") as tmp:
            swapper = Swapper(Path(tmp), files, args.userspace_mib)
            first = swapper.node.run(timeout=300.0)
            if first.rc != 0 or not first.ready:
                raise SystemExit(f"first install failed:\n{first.stderr}")
            for phase, driver in (
                ("cold (new tree unpacked)", NEW_DRIVER),
                ("cache, rollback to the old driver", OLD_DRIVER),
                ("cache, forward to the new driver again", NEW_DRIVER),
            ):
                down, whole = swapper.swap(driver)
                times.setdefault(f"downtime: {phase}", []).append(down)
                times.setdefault(f"installer start to ready: {phase}", []).append(whole)
        print(f"run {run + 1}: " + ", ".join(f"{v[-1]:.2f}" for v in times.values()), flush=True)
    compiles = _compile_seconds()
    compile_values = [seconds for _, seconds in compiles]
    lines = [
        f"# GPU downtime of one driver swap on the fake node, seconds, {args.runs} runs",
        machine_line(),
        f"# command: {COMMAND} --runs {args.runs} --userspace-mib {args.userspace_mib}",
        f"# old driver {OLD_DRIVER}: {old_dir}; new driver {NEW_DRIVER}: {new_dir} (real open modules, "
        f"{sum(len(b) for b in files[NEW_DRIVER].values()) / 1e6:.0f} MB uncompressed); "
        f"user space {args.userspace_mib} MiB per driver; host tree {HOST_TREE}",
        "| what, swap | median s | min-max s |",
        "|---|---|---|",
        *(_row(name, values) for name, values in times.items()),
    ]
    if compile_values:
        lines += [
            "",
            f"Compiling the modules on a node instead (the slow tier's compile.seconds, make -j2 on this "
            f"machine, {len(compiles)} compiles): median {statistics.median(compile_values):.0f} s, "
            f"{min(compile_values)}-{max(compile_values)} s: "
            + ", ".join(f"{name} {seconds} s" for name, seconds in compiles)
            + ".",
        ]
    emit(lines, args.output)


if __name__ == "__main__":
    main()
