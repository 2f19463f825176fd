"""Image benchmark (not a test): for one driver and two kernels, what the image costs and what a node pulls.

Reports: size per layer of both images and the bytes a node pulls for the second kernel; payload unpack
time with zstd (the chosen compression) against gzip as the baseline (medians); one module compile; the
QEMU load check's parts (tool install, kernel fetch, boot + verdict).

Usage (root, slow-tier dependencies installed; reuses the test caches, so run the slow tests first to
skip the image builds' compiles): .venv/bin/python -m bench.image_bench [--out bench/results/image.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.cache import cache_root
from tests.containers import PODMAN_RUN
from tests.image.compile_cache import cached_driver_tree, modules_factory, run_compile
from tests.image.images import build_image, make_standin_base, push_image, running_registry
from tests.pins import PINS

ROOT = Path(__file__).resolve().parents[1]
K61 = PINS["KERNEL_61"]
KERNELS = {"metal": f"{K61}-amd64", "cloud": f"{K61}-cloud-amd64"}
RUNS = 5


def sh(argv: list[str], timeout: int = 3600, stdin: bytes | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed:\n{result.stderr.decode()[-3000:]}")
    return result.stdout.decode()


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def mib(size: float) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


def layer_report(base: str, registry: str, lines: list[str]) -> None:
    """Builds both images (podman's layer cache makes a rerun cheap), pushes them, reads the manifests."""
    pushed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for flavour in ("metal", "cloud"):
            tag = f"localhost/nvidia-installer-test:{flavour}"
            started = time.monotonic()
            build_image(base, flavour, tag)
            seconds = time.monotonic() - started
            pushed[flavour] = push_image(tag, registry, f"bench-{flavour}", Path(tmp))
            lines.append(
                f"- build of the {flavour} image ({KERNELS[flavour]}): {seconds:.0f} s "
                "(podman's layer cache is warm when the slow tests ran before; a cold build adds a compile, "
                "the load check and the user-space assembly)"
            )
    names = ["runtime root", "user space", "installer", "payload (modules)"]
    lines += ["", "| layer | metal image | cloud image | shared |", "|---|---|---|---|"]
    first, second = pushed["metal"].layers, pushed["cloud"].layers
    for name, a, b in zip(names, first, second, strict=True):
        shared = "yes" if a["digest"] == b["digest"] else "no"
        lines.append(f"| {name} | {mib(int(str(a['size'])))} | {mib(int(str(b['size'])))} | {shared} |")
    total = sum(int(str(layer["size"])) for layer in second)
    known = {layer["digest"] for layer in first}
    unique = sum(int(str(layer["size"])) for layer in second if layer["digest"] not in known)
    lines.append(
        f"| **total (compressed)** | {mib(sum(int(str(x['size'])) for x in first))} | {mib(total)} | |"
    )
    lines.append("")
    lines.append(
        f"A node that has the metal image pulls **{mib(unique)}** for the cloud one: "
        f"**{100 * unique / total:.1f} %** of the image (goal: under 20 %)."
    )


def unpack_report(modules: Path, lines: list[str]) -> None:
    """zstd -19 (chosen) vs gzip -9 (baseline): size and median time to unpack the modules tarball."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Only the .ko files, as pack-payload.sh packs them.
        names = sorted(path.name for path in modules.glob("*.ko"))
        tar_bytes = subprocess.run(
            ["tar", "--sort=name", "-C", str(modules), "-cf", "-", *names], capture_output=True, check=True
        ).stdout
        variants = {
            "zstd -19": (["zstd", "-19", "-q", "-T0"], ["zstd", "-dc"]),
            "gzip -9": (["gzip", "-9"], ["gzip", "-dc"]),
        }
        lines += ["", "| compression | payload tarball | unpack (median of 5) |", "|---|---|---|"]
        for name, (compress, decompress) in variants.items():
            packed = work / "modules.tar.x"
            packed.write_bytes(
                subprocess.run(compress, input=tar_bytes, capture_output=True, check=True).stdout
            )
            samples = []
            target = work / "out"
            for _ in range(RUNS):
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
                started = time.monotonic()
                subprocess.run(
                    f"{' '.join(decompress)} {packed} | tar -x -C {target}", shell=True, check=True
                )
                samples.append(time.monotonic() - started)
            lines.append(f"| {name} | {mib(packed.stat().st_size)} | {statistics.median(samples):.2f} s |")
        lines.append(f"\nUncompressed, stripped open modules for {KERNELS['metal']}: {mib(len(tar_bytes))}.")


def compile_report(tree: Path, lines: list[str]) -> None:
    """Wall time of one compile per kernel: what the test cache recorded, else a fresh build."""
    factory = modules_factory(tree)
    for flavour, release in KERNELS.items():
        what = f"open modules {PINS['NVIDIA_VERSION']} for {release} (make -j2)"
        recorded = factory(release, "open") / "compile.seconds"
        if recorded.is_file():
            lines.append(f"- compile, {what}: {recorded.read_text().strip()} s (recorded by the test cache)")
            continue
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            started = time.monotonic()
            run_compile(tree, Path(tmp) / "out", release, "open")
            seconds = time.monotonic() - started
        lines.append(f"- compile, {what}: {seconds:.0f} s ({flavour}, fresh build)")


def load_check_report(base: str, modules: Path, lines: list[str]) -> None:
    """The load-check stage's parts, each measured the way the stage runs it."""
    tools = timed(
        lambda: sh(
            [
                *PODMAN_RUN,
                base,
                "bash",
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                "--no-install-recommends qemu-system-x86 busybox-static cpio kmod binutils xz-utils gzip "
                ">/dev/null",
            ]
        )
    )
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        package = f"linux-image-{KERNELS['metal']}"
        fetch = timed(
            lambda: (
                sh(["bash", "-c", f"cd {work} && apt-get download -q {package}"]),
                sh(["bash", "-c", f"dpkg-deb -x {work}/{package}_*.deb {work}/kernel"]),
            )
        )
        boot = timed(
            lambda: sh(
                [
                    str(ROOT / "image/verify/load-check.sh"),
                    "run",
                    str(modules),
                    KERNELS["metal"],
                    str(work / "v.env"),
                    "--kernel-dir",
                    str(work / "kernel"),
                ]
            )
        )
        verdict = (work / "v.env").read_text().splitlines()[0]
    lines += [
        f"- load check, tool install (apt-get update + QEMU etc. in the stand-in base): {tools:.0f} s",
        f"- load check, kernel fetch (apt-get download {package} + dpkg-deb -x): {fetch:.0f} s",
        f"- load check, initramfs + boot under TCG + verdict: {boot:.0f} s ({verdict})",
        f"- load check, total added to one image build: about {tools + fetch + boot:.0f} s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/image.md")
    args = parser.parse_args()

    tree = cached_driver_tree()
    modules = modules_factory(tree)(KERNELS["metal"], "open")
    base = make_standin_base()

    lines = [
        "# Image benchmark",
        "",
        f"Date: {datetime.date.today().isoformat()}; machine: {platform.node()}, {platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other jobs: timings are noisy), Debian 12, podman "
        f"{sh(['podman', '--version']).split()[-1]}.",
        f"Driver {PINS['NVIDIA_VERSION']} (Debian's packages, DRIVER_SOURCE=debian), open modules, kernels "
        f"{KERNELS['metal']} and {KERNELS['cloud']}; stand-in base: debootstrap bookworm minbase.",
        f"Command: `.venv/bin/python -m bench.image_bench` (cache: {cache_root()}).",
        "",
        "## Layers and what a node pulls",
        "",
    ]
    with running_registry() as registry:
        layer_report(base, registry, lines)
    lines += ["", "## Payload unpack"]
    unpack_report(modules, lines)
    lines += ["", "## Compile and load check", ""]
    compile_report(tree, lines)
    load_check_report(base, modules, lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
