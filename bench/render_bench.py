"""Benchmark of the offline render (`python -m components.render`) for synthetic stacks of 1, 8, 32 and
128 targets. Prints a Markdown table: cold wall time of the whole command (a fresh process, imports
included), warm in-process time (median of several runs), objects rendered, peak RSS of the process.

Usage: .venv/bin/python bench/render_bench.py [--runs N] [--sizes 1,8,32,128] > bench/results/render.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.checksums import available_checksums  # noqa: E402
from components.render import render_objects  # noqa: E402

GL_VERSIONS = ["1877.10", "1877.17", "2150.7.0", "2150.9.0"]


def synthetic_stack(count: int) -> dict[str, Any]:
    """A building stack with `count` targets on disjoint node pools, cycling through GL versions,
    flavours and every amd64 driver that has a checksum (so images are shared as in real clusters)."""
    drivers = sorted(v for a, v in available_checksums() if a == "amd64" and not v.startswith("570"))
    targets = []
    for i in range(count):
        targets.append(
            {
                "name": f"pool-{i}",
                "glVersion": GL_VERSIONS[i % len(GL_VERSIONS)],
                "arch": "amd64",
                "flavour": "cloud" if (i // len(GL_VERSIONS)) % 2 == 0 else "metal",
                "driverVersion": drivers[(i // 8) % len(drivers)],
                "nodeSelector": [
                    {"key": "gpu", "operator": "Exists"},
                    {"key": "example.com/pool", "operator": "In", "values": [f"pool-{i}"]},
                    # A target's selection must pin its Garden Linux version (docs/configuration.md).
                    {"key": "os-version", "operator": "In", "values": [GL_VERSIONS[i % len(GL_VERSIONS)]]},
                ],
            }
        )
    return {
        "config": {
            "pulumi:disable-default-providers": ["kubernetes"],
            "nvidia-installer:cluster": {"context": "bench"},
            "nvidia-installer:registry": {
                "server": "registry.example.com",
                "repository": "gpu/d",
                "username": "u",
            },
            "nvidia-installer:registryPassword": {"secure": "v1:placeholder"},
            "nvidia-installer:targets": targets,
            "nvidia-installer:devicePlugin": {"timeSharing": {"maxSharedClientsPerGpu": 4}},
        }
    }


def _write_stack(directory: Path, count: int) -> str:
    name = f"bench{count}"
    (directory / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(synthetic_stack(count)))
    return name


def measure_one(count: int, runs: int) -> dict[str, Any]:
    """In this process: warm render times and peak RSS (ru_maxrss is KiB on Linux)."""
    with tempfile.TemporaryDirectory() as tmp:
        stack = _write_stack(Path(tmp), count)
        render_objects(stack, Path(tmp))  # warm-up: imports and first-run caches
        times = []
        cpu = []
        objects = 0
        for _ in range(runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            rendered, _ = render_objects(stack, Path(tmp))
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            objects = len(rendered)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "count": count,
        "median": statistics.median(times),
        "cpu": statistics.median(cpu),
        "objects": objects,
        "peak_mib": peak_mib,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_command(count: int) -> tuple[float, float]:
    """Wall and CPU time of `python -m components.render` in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        stack = _write_stack(Path(tmp), count)
        start, start_cpu = time.perf_counter(), _children_cpu()
        subprocess.run(
            [sys.executable, "-m", "components.render", stack, "--stacks-dir", tmp],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - start, _children_cpu() - start_cpu


def _machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = Path("/proc/loadavg").read_text().split()[0]
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, load {load}"
    )


def main() -> int:
    """Runs every size in its own process (so peak memory is per size) and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1,8,32,128")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure_one(args.one, args.runs)))
        return 0
    rows = []
    for count in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(count), "--runs", str(args.runs)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(out)
        cold = [cold_command(count) for _ in range(3)]
        row["cold"] = statistics.median(wall for wall, _ in cold)
        row["cold_cpu"] = statistics.median(cpu for _, cpu in cold)
        rows.append(row)
    print("# Offline render benchmark\n")
    print(f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ")
    print(f"Machine: {_machine()}  ")
    print(f"Command: `.venv/bin/python bench/render_bench.py --runs {args.runs}`\n")
    print(
        "| targets | objects | cold command: wall s | cold command: CPU s | warm render: wall s "
        "| warm render: CPU s | peak RSS MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [r["count"], r["objects"], f"{r['cold']:.2f}", f"{r['cold_cpu']:.2f}"]
        cells += [f"{r['median']:.2f}", f"{r['cpu']:.2f}", f"{r['peak_mib']:.0f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(
        f"\nMedians: cold over 3 runs, warm over {args.runs}. Cold = a fresh `python -m components.render` "
        "process (imports of pulumi, pulumi-kubernetes, pulumi-docker and pydantic included); warm = "
        "`render_objects` again in a process that has rendered once. CPU = user + system time of the "
        "process, which stays meaningful when other jobs share the machine (see the load figure)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
