"""arm64 beside amd64 (issue 13): module compile time (cross on this amd64 machine vs native), load-check
boot time under TCG (qemu-system-aarch64 -cpu max,pauth-impdef=on vs qemu-system-x86_64), payload bytes
per module type (stripped, zstd -19, as pack-payload.sh packs them).

Usage (root, after .ci/system-deps.sh; reuses the slow tier's compile cache, so run the slow tests first
or expect four compiles of about four minutes each):
    .venv/bin/python -m bench.arm64_bench [--runs 3] [--output bench/results/arm64.md]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.report import emit, machine_line
from tests.image.compile_cache import ARM64_ROOT, cached_driver_tree, modules_factory
from tests.pins import PINS
from tests.verify.verdict_run import LOAD_CHECK

KERNELS = {"amd64": f"{PINS['KERNEL_61']}-amd64", "arm64": f"{PINS['KERNEL_61']}-arm64"}
TYPES = ("open", "proprietary")


def _boot_seconds(modules: Path, arch: str, kernel_cache: Path) -> float:
    """One load-check.sh run; the boot phase from its own `timings:` line."""
    env = dict(os.environ)
    if arch == "arm64":
        env["LOAD_CHECK_BUSYBOX"] = str(ARM64_ROOT / "busybox" / "bin" / "busybox")
        kernel_cache = ARM64_ROOT / "kernels"
    with tempfile.TemporaryDirectory(prefix="bench-arm64-") as tmp:
        argv = [str(LOAD_CHECK), "run", str(modules), KERNELS[arch], f"{tmp}/verdict.env", "--arch", arch]
        argv += ["--kernel-cache", str(kernel_cache)]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"load check of {modules} failed:\n{result.stderr[-3000:]}")
    match = re.search(r"boot ([0-9.]+)s", result.stderr)
    if match is None:
        raise SystemExit(f"no boot time in load-check.sh's output:\n{result.stderr[-2000:]}")
    return float(match.group(1))


def _payload_bytes(modules: Path) -> tuple[int, int]:
    """Bytes of the stripped .ko files, and of them as one tarball, zstd -19 (pack-payload.sh's way)."""
    names = sorted(path.name for path in modules.glob("*.ko"))
    raw = sum((modules / name).stat().st_size for name in names)
    tar = subprocess.run(
        [
            "tar",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--mtime=@0",
            "-C",
            str(modules),
            "-cf",
            "-",
            *names,
        ],
        capture_output=True,
        check=True,
    ).stdout
    packed = subprocess.run(["zstd", "-19", "-q", "-T0"], input=tar, capture_output=True, check=True).stdout
    return raw, len(packed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    factory = modules_factory(cached_driver_tree())
    modules = {(arch, kind): factory(KERNELS[arch], kind) for arch in KERNELS for kind in TYPES}
    lines = [
        f"# NVIDIA {PINS['NVIDIA_VERSION']} (Debian's packages), kernels {KERNELS['amd64']} and "
        f"{KERNELS['arm64']}; command: .venv/bin/python -m bench.arm64_bench --runs {args.runs}",
        "",
        "| | amd64 (native) | arm64 (cross, aarch64-linux-gnu-gcc-12) |",
        "|---|---|---|",
    ]
    for kind in TYPES:
        cells = [(modules[arch, kind] / "compile.seconds").read_text().strip() + " s" for arch in KERNELS]
        lines.append(
            f"| compile, {kind} modules (make -j2, recorded by the compile cache) | {' | '.join(cells)} |"
        )
    with tempfile.TemporaryDirectory(prefix="bench-arm64-kernels-") as cache:
        boots = {
            arch: [_boot_seconds(modules[arch, "open"], arch, Path(cache)) for _ in range(args.runs)]
            for arch in KERNELS
        }
    cells = [f"{statistics.median(b):.1f} s ({min(b):.1f}-{max(b):.1f})" for b in boots.values()]
    lines.append(
        f"| load check boot under TCG, open modules, median of {args.runs} (min-max) | {' | '.join(cells)} |"
    )
    for kind in TYPES:
        sizes = [_payload_bytes(modules[arch, kind]) for arch in KERNELS]
        cells = [f"{packed / 2**20:.1f} MiB ({raw / 2**20:.1f} MiB unpacked)" for raw, packed in sizes]
        lines.append(f"| payload, {kind} modules, zstd -19 | {' | '.join(cells)} |")
    lines += [
        "",
        "Compile times are what the compile cache recorded when it built each entry, maybe while other",
        "jobs shared the cores; compare them within one run of the cache, not across machines.",
    ]
    emit([machine_line(), *lines], args.output)


if __name__ == "__main__":
    main()
