"""Image benchmark (not a test): for one driver and two kernels, what the image costs and what a node pulls.

Reports: size per layer of both images and the bytes a node pulls for the second kernel, when both images
come from one builder (its layer cache shared) and when the second comes from a builder of its own (separate
storage: no cache, another time); payload bytes per module type; the payload as this project ships it beside
the way precompiled-driver images commonly ship one (both module types, debug info kept, gzip tarballs), with
unpack times (medians); one module compile; the QEMU load check's parts (tool install, kernel fetch, boot +
verdict).

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

from tests.cache import cache_root, file_lock
from tests.containers import PODMAN_RUN
from tests.image.compile_cache import cached_driver_tree, inputs_key, modules_factory, run_compile
from tests.image.images import Pushed, build_image, make_standin_base, push_image, running_registry
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


def _pulled(have: Pushed, want: Pushed) -> tuple[int, int]:
    """Bytes of `want`'s layers a node holding `have` must pull, and `want`'s total."""
    known = {layer["digest"] for layer in have.layers}
    sizes = [(int(str(layer["size"])), layer["digest"] in known) for layer in want.layers]
    return sum(size for size, shared in sizes if not shared), sum(size for size, _ in sizes)


def _build_elsewhere(base: str, registry: str, tmp: Path) -> Pushed:
    """The cloud image from a builder of its own: separate podman storage (no layer cache), the base moved
    over as an archive the way a fresh CI runner pulls it; compiles and load-checks again."""
    runroot = Path(tempfile.mkdtemp(prefix="nvi-run-", dir="/tmp"))  # podman: runroot under 50 chars
    podman = ("podman", "--root", str(tmp / "storage"), "--runroot", str(runroot))
    sh(["podman", "save", "-o", str(tmp / "base.tar"), base])
    sh([*podman, "load", "-i", str(tmp / "base.tar")])
    tag = "localhost/nvidia-installer-test:elsewhere"
    try:
        build_image(base, "cloud", tag, podman=podman)
        return push_image(tag, registry, "bench-elsewhere", tmp, podman=podman)
    finally:
        subprocess.run([*podman, "rmi", "--all", "--force"], capture_output=True, check=False)
        shutil.rmtree(runroot, ignore_errors=True)


def layer_report(base: str, registry: str, lines: list[str]) -> None:
    """Builds both images (podman's layer cache makes a rerun cheap), pushes them, reads the manifests;
    then the second image again on a builder without a shared cache."""
    pushed = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
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
        started = time.monotonic()
        pushed["elsewhere"] = _build_elsewhere(base, registry, Path(tmp))
        seconds = time.monotonic() - started
        lines.append(
            f"- build of the cloud image on a builder without a shared cache: {seconds:.0f} s "
            "(cold: driver tree, compile, load check, user space)"
        )
    names = ["runtime root", "user space", "installer", "payload (modules)"]
    lines += [
        "",
        "| layer | metal image | cloud image | cloud image, other builder | shared by all three |",
        "|---|---|---|---|---|",
    ]
    columns = [pushed[name].layers for name in ("metal", "cloud", "elsewhere")]
    for name, *layers in zip(names, *columns, strict=True):
        shared = "yes" if len({layer["digest"] for layer in layers}) == 1 else "no"
        cells = " | ".join(mib(int(str(layer["size"]))) for layer in layers)
        lines.append(f"| {name} | {cells} | {shared} |")
    totals = " | ".join(mib(sum(int(str(x["size"])) for x in column)) for column in columns)
    lines += [f"| **total (compressed)** | {totals} | |", ""]
    for label, other in (("the same builder", "cloud"), ("a builder without a shared cache", "elsewhere")):
        unique, total = _pulled(pushed["metal"], pushed[other])
        lines.append(
            f"- cloud image from {label}: a node that has the metal image pulls **{mib(unique)}**, "
            f"**{100 * unique / total:.1f} %** of the image (goal: under 20 %)."
        )


def _tarball(modules: Path, compress: list[str], target: Path) -> None:
    """The .ko files of one directory as one compressed tarball (sorted, as pack-payload.sh packs them)."""
    names = sorted(path.name for path in modules.glob("*.ko"))
    tar_bytes = subprocess.run(
        ["tar", "--sort=name", "-C", str(modules), "-cf", "-", *names], capture_output=True, check=True
    ).stdout
    target.write_bytes(subprocess.run(compress, input=tar_bytes, capture_output=True, check=True).stdout)


def _unpack_median(tarballs: list[Path], decompress: str, work: Path) -> float:
    samples = []
    target = work / "out"
    for _ in range(RUNS):
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        started = time.monotonic()
        for tarball in tarballs:
            subprocess.run(f"{decompress} {tarball} | tar -x -C {target}", shell=True, check=True)
        samples.append(time.monotonic() - started)
    return statistics.median(samples)


def unstripped_modules(tree: Path, kernel: str, module_type: str) -> Path:
    """Modules as NVIDIA's make leaves them (debug info kept): compile-modules.sh run with a `strip` on
    PATH that copies. Kept in the test cache (compiled once; the compile lock serializes)."""
    entry = cache_root() / "bench-unstripped" / inputs_key() / f"{kernel}-{module_type}"
    with file_lock(cache_root() / "compile.lock"):
        if not (entry / ".complete").is_file():
            with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
                shim = Path(tmp) / "bin"
                shim.mkdir()
                (shim / "strip").write_text(
                    "#!/bin/sh\n# compile-modules.sh calls strip --strip-debug -o OUT IN: copy instead\n"
                    'while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift 2 ;; -*) shift ;; '
                    '*) in="$1"; shift ;; esac; done\nexec cp "$in" "$out"\n'
                )
                (shim / "strip").chmod(0o755)
                saved = os.environ["PATH"]
                os.environ["PATH"] = f"{shim}:{saved}"
                try:
                    shutil.rmtree(entry, ignore_errors=True)
                    result = run_compile(tree, entry, kernel, module_type)
                finally:
                    os.environ["PATH"] = saved
            if result.returncode != 0:
                raise SystemExit(f"unstripped compile of {module_type} for {kernel} failed:\n{result.stderr}")
            (entry / ".complete").touch()
    return entry / module_type


def payload_report(tree: Path, lines: list[str]) -> None:
    """Payload bytes per module type as shipped (stripped, zstd -19), the same with gzip, and the way
    precompiled-driver images commonly ship (both types, debug info kept, gzip tarballs); unpack times."""
    kernel = KERNELS["metal"]
    stripped = {kind: modules_factory(tree)(kernel, kind) for kind in ("open", "proprietary")}
    unstripped = {kind: unstripped_modules(tree, kernel, kind) for kind in ("open", "proprietary")}
    variants: list[tuple[str, dict[str, Path], list[str], str]] = [
        (
            "open only, stripped, zstd -19 (**this project's default**)",
            {"open": stripped["open"]},
            ["zstd", "-19", "-q", "-T0"],
            "zstd -dc",
        ),
        ("open only, stripped, gzip -9", {"open": stripped["open"]}, ["gzip", "-9"], "gzip -dc"),
        (
            "proprietary only, stripped, zstd -19",
            {"proprietary": stripped["proprietary"]},
            ["zstd", "-19", "-q", "-T0"],
            "zstd -dc",
        ),
        (
            "both types, stripped, zstd -19 (`moduleType: auto`)",
            stripped,
            ["zstd", "-19", "-q", "-T0"],
            "zstd -dc",
        ),
        ("both types, debug info kept, gzip -6 (the common way)", unstripped, ["gzip", "-6"], "gzip -dc"),
    ]
    lines += [
        "",
        f"Modules of {PINS['NVIDIA_VERSION']} for {kernel}, one tarball per module type; unpack is "
        f"decompress + tar -x into a fresh directory, median of {RUNS}.",
        "",
        "| payload | files (uncompressed) | compressed | unpack |",
        "|---|---|---|---|",
    ]
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        for label, dirs, compress, decompress in variants:
            tarballs = []
            for kind, directory in dirs.items():
                tarball = work / f"{kind}.tar.x"
                _tarball(directory, compress, tarball)
                tarballs.append(tarball)
            raw = sum(ko.stat().st_size for directory in dirs.values() for ko in directory.glob("*.ko"))
            sizes[label] = sum(tarball.stat().st_size for tarball in tarballs)
            median = _unpack_median(tarballs, decompress, work)
            lines.append(f"| {label} | {mib(raw)} | {mib(sizes[label])} | {median:.2f} s |")
            for tarball in tarballs:
                tarball.unlink()
    ours, common = sizes[variants[0][0]], sizes[variants[-1][0]]
    lines += [
        "",
        f"The default payload is **{100 * ours / common:.1f} %** of the common way's bytes "
        f"({common / ours:.0f}x smaller); goal: at most 6 MiB per kernel.",
    ]


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
    # The payload section first: its compiles (modules with debug info) take minutes, and the image
    # builds after them find more of podman's layer cache warm (the slow tier's image tests).
    payload = ["", "## Payload per module type, and the common way"]
    payload_report(tree, payload)
    with running_registry() as registry:
        layer_report(base, registry, lines)
    lines += payload
    lines += ["", "## Compile and load check", ""]
    compile_report(tree, lines)
    load_check_report(base, modules, lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
