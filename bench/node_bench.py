"""Benchmark of the node installer's time to a ready driver, cold and from the host cache.

Usage (Debian 12 with the slow tier's packages: a real host module tree with modules.dep):
    python -m bench.node_bench [--runs 5] [--modules DIR] [--userspace-mib 94] [--output FILE]

The installer runs for real (bash, tar, zstd, depmod, modinfo) on the fake node of tests/node/fakenode.py;
only the commands that would touch the kernel or a GPU are stubs. The host's module tree is the real
/lib/modules/<KERNEL_612> of the slow tier (4,000+ xz-compressed modules and their modules.dep), seen
through a link. The NVIDIA modules are real compiled ones when --modules names a compile output dir
(open/*.ko), else stand-ins that declare the same in-kernel dependencies. The user space is --userspace-mib
of incompressible files. Two host layouts are compared on the same payload:

- "needed modules": the installer links only the in-kernel modules the NVIDIA modules declare (from the
  host's modules.dep), so depmod reads a handful;
- "whole tree": the host's modules.dep hidden, so the installer falls back to linking the whole host
  kernel/ directory and depmod reads every module (the behaviour before the change).

"cold" = empty cache (unpack, link, depmod, seal, load); "cache" = after a reboot (verify the tree, load).
Medians and ranges of --runs runs; time from the installer's start to its readiness file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.report import emit, machine_line
from tests.node.fakenode import MODULES, FakeNode, tar_zstd
from tests.pins import PINS

KERNEL = f"{PINS['KERNEL_612']}-amd64"
HOST_TREE = Path("/lib/modules") / KERNEL


def require_host_tree() -> None:
    """Stops with what to install when the real host module tree (with its modules.dep) is missing."""
    if not (HOST_TREE / "modules.dep").is_file():
        raise SystemExit(
            f"{HOST_TREE}/modules.dep missing: install linux-image-{KERNEL} (.ci/system-deps.sh)"
        )


def _stand_in_modules(compiled: Path | None, driver: str) -> dict[str, bytes]:
    if compiled is not None:
        return {f"kernel-open/{ko.name}": ko.read_bytes() for ko in sorted(compiled.glob("*.ko"))}
    depends = {"nvidia-drm": "drm,drm_kms_helper", "nvidia-peermem": "ib_core"}
    text = "version={}\ntype=open\nname={}\ndepends={}\n"
    return {f"kernel-open/{m}.ko": text.format(driver, m, depends.get(m, "")).encode() for m in MODULES}


def _node(root: Path, layout: str, files: dict[str, bytes], userspace_mib: int) -> FakeNode:
    node = FakeNode(root, kernel=KERNEL, real_depmod=True)
    host_kdir = node.host / "lib/modules" / KERNEL
    shutil.rmtree(host_kdir)
    if layout == "needed modules":
        host_kdir.symlink_to(HOST_TREE)
    else:
        host_kdir.mkdir(parents=True)
        (host_kdir / "kernel").symlink_to(HOST_TREE / "kernel")
        for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            shutil.copy(HOST_TREE / name, host_kdir / name)
    blob = node.userspace / "lib" / "libnvidia-bench.so.1"
    with blob.open("wb") as out:
        for _ in range(userspace_mib):
            out.write(os.urandom(1 << 20))
    node.make_payload(ko_files=files)
    # The stub modprobe reads version=/type= lines; real modules carry neither: load is simulated.
    node.env_extra["FAKE_MODPROBE_VERSION"] = node.driver
    return node


def _measure(layout: str, files: dict[str, bytes], runs: int, userspace_mib: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"cold": [], "cache": []}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
            node = _node(Path(tmp), layout, files, userspace_mib)
            for phase in ("cold", "cache"):
                run = node.run(timeout=300.0)
                if run.rc != 0 or run.ready_seconds is None:
                    raise SystemExit(f"installer failed ({layout}, {phase}):\n{run.stderr}")
                times[phase].append(run.ready_seconds)
                node.reboot()
    return times


def _row(name: str, values: list[float]) -> str:
    return f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modules", type=Path, help="a compile output dir holding open/*.ko")
    parser.add_argument("--userspace-mib", type=int, default=94)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    require_host_tree()
    compiled = args.modules / "open" if args.modules else None
    files = _stand_in_modules(compiled, "580.65.06")
    host_modules = sum(1 for _ in (HOST_TREE / "kernel").rglob("*.ko*"))
    payload_bytes = len(tar_zstd(files))
    rows = []
    for layout in ("needed modules", "whole tree"):
        times = _measure(layout, files, args.runs, args.userspace_mib)
        rows += [_row(f"{layout}, {phase}", values) for phase, values in times.items()]
    source = f"real modules from {args.modules}" if args.modules else "stand-in modules"
    lines = [
        f"# node installer: seconds from start to ready, {args.runs} runs",
        machine_line(),
        f"# host tree: {HOST_TREE} ({host_modules} modules, xz); payload: {source}, "
        f"{payload_bytes / 1e6:.1f} MB zstd (fake-node compression, level 3); "
        f"user space {args.userspace_mib} MiB",
        "| layout, start | median s | min-max s |",
        "|---|---|---|",
        *rows,
    ]
    emit(lines, args.output)


if __name__ == "__main__":
    main()
