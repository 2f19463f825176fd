"""Benchmark of the load check's cost: tool install, kernel fetch, initramfs, boot, verdict.

Usage (root, Debian 12, modules already built and stripped):
    python -m bench.load_check_bench --modules DIR --release 6.1.0-50-amd64 [--runs 3]
        [--base-image localhost/some-debian:tag]   # also time the tool install in a fresh container

Each run fetches the kernel package afresh (a new cache dir), so "fetch" is `apt-get download` plus
`dpkg-deb -x`. The phases come from load-check.sh's own `timings:` line. Prints a table of medians
(min-max) and, with --output, writes it with the date, the machine and its load average.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.report import emit, machine_line
from tests.containers import PODMAN_RUN
from tests.verify.verdict_run import LOAD_CHECK

PHASES = ("fetch", "initramfs", "boot", "verdict")
TOOLS = "qemu-system-x86 busybox-static cpio kmod binutils xz-utils"


def _one_run(modules: Path, release: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-load-check-") as tmp:
        started = time.monotonic()
        result = subprocess.run(
            [
                str(LOAD_CHECK),
                "run",
                str(modules),
                release,
                f"{tmp}/verdict.env",
                "--kernel-cache",
                f"{tmp}/k",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        total = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"load check failed, nothing to measure:\n{result.stderr}")
    match = re.search(r"timings: (.*)", result.stderr)
    if match is None:
        raise SystemExit(f"no timings line in load-check.sh's output:\n{result.stderr}")
    times = {name: float(value) for name, value in re.findall(r"(\w+) ([0-9.]+)s", match.group(1))}
    times["total"] = total
    return times


def _tool_install(base_image: str) -> float:
    """apt-get update + install of the stage's tools in a fresh container of `base_image`."""
    script = (
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        f"apt-get install -y -qq --no-install-recommends {TOOLS} >/dev/null"
    )
    started = time.monotonic()
    subprocess.run(
        [
            *PODMAN_RUN,
            base_image,
            "sh",
            "-c",
            script,
        ],
        check=True,
    )
    return time.monotonic() - started


def _row(name: str, values: list[float]) -> str:
    return f"| {name} | {statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modules", type=Path, required=True)
    parser.add_argument("--release", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base-image")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    rows: dict[str, list[float]] = {}
    if args.base_image:
        rows["tool install (apt-get update + install, fresh container)"] = [
            _tool_install(args.base_image) for _ in range(args.runs)
        ]
    runs = [_one_run(args.modules, args.release) for _ in range(args.runs)]
    for phase in (*PHASES, "total"):
        rows[phase] = [run[phase] for run in runs]

    lines = [
        f"# load check cost, {args.release}, {args.runs} runs, seconds",
        machine_line(),
        "| phase | median | min-max |",
        "|---|---|---|",
        *(_row(name, values) for name, values in rows.items()),
    ]
    emit(lines, args.output)


if __name__ == "__main__":
    main()
