"""Fast tests of the build-time scripts on small fake inputs (no compile, no download, no container)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "image" / "build"
DATA = Path(__file__).with_name("data")
CHECKSUMS = ROOT / "image" / "checksums" / "nvidia-driver.sha256"


def run(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUILD / script), *args],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def parse_env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in pairs}


# ---- kernel detection on fake /usr/src trees ----


def fake_headers(root: Path, name: str, common: str | None, release: str | None = None) -> None:
    """A Debian-style flavour directory whose Makefile includes its common directory."""
    flavour = root / f"linux-headers-{name}"
    (flavour / "include" / "generated").mkdir(parents=True)
    if common is not None:
        (root / f"linux-headers-{common}").mkdir(exist_ok=True)
        (flavour / "Makefile").write_text(f"include /usr/src/linux-headers-{common}/Makefile\n")
    else:
        (flavour / "Makefile").write_text("# unsplit tree\n")
    (flavour / "include" / "generated" / "utsrelease.h").write_text(
        f'#define UTS_RELEASE "{release or name}"\n'
    )


def detect(
    root: Path, flavour: str, arch: str = "amd64", version: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {"HEADERS_ROOT": str(root), "KERNEL_FLAVOUR": flavour, "ARCH": arch}
    if version:
        env["KERNEL_VERSION"] = version
    return run("detect-kernel.sh", env=env)


@pytest.fixture
def gardenlinux_like(tmp_path: Path) -> Path:
    # The layout of kmodbuild: one kernel, both flavours, a shared -common directory.
    fake_headers(tmp_path, "6.12.72-cloud-amd64", "6.12.72-common")
    fake_headers(tmp_path, "6.12.72-amd64", "6.12.72-common")
    return tmp_path


@pytest.mark.parametrize(
    ("flavour", "expected"), [("cloud", "6.12.72-cloud-amd64"), ("metal", "6.12.72-amd64")]
)
def test_detection_picks_the_flavour_directory_and_its_common_dir(
    gardenlinux_like: Path, flavour: str, expected: str
) -> None:
    result = detect(gardenlinux_like, flavour)
    assert result.returncode == 0, result.stderr
    found = parse_env(result.stdout)
    assert found == {
        "KERNEL_NAME": expected,
        "HEADERS_DIR": str(gardenlinux_like / f"linux-headers-{expected}"),
        # The Makefile says /usr/src/...; the script re-roots it to where the headers are.
        "COMMON_DIR": str(gardenlinux_like / "linux-headers-6.12.72-common"),
    }


def test_detection_ignores_rt_and_other_arch_for_metal(tmp_path: Path) -> None:
    fake_headers(tmp_path, "6.12.72-amd64", "6.12.72-common")
    fake_headers(tmp_path, "6.12.72-rt-amd64", "6.12.72-common")
    fake_headers(tmp_path, "6.12.72-arm64", "6.12.72-common")
    result = detect(tmp_path, "metal")
    assert result.returncode == 0, result.stderr
    assert parse_env(result.stdout)["KERNEL_NAME"] == "6.12.72-amd64"


def test_detection_without_candidates_fails_naming_flavour_and_what_is_there(tmp_path: Path) -> None:
    fake_headers(tmp_path, "6.12.72-amd64", "6.12.72-common")
    result = detect(tmp_path, "cloud")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no kernel headers for flavour cloud, arch amd64" in lines[0]
    assert "linux-headers-6.12.72-amd64" in lines[0]
    assert result.stdout == ""


def test_detection_with_several_candidates_fails_listing_them(tmp_path: Path) -> None:
    fake_headers(tmp_path, "6.1.0-50-amd64", "6.1.0-50-common")
    fake_headers(tmp_path, "6.1.0-56-amd64", "6.1.0-56-common")
    result = detect(tmp_path, "metal")
    assert result.returncode != 0
    assert "several kernels match" in result.stderr
    assert "6.1.0-50-amd64 6.1.0-56-amd64" in result.stderr
    assert "KERNEL_VERSION" in result.stderr
    # ...and KERNEL_VERSION resolves it.
    chosen = detect(tmp_path, "metal", version="6.1.0-56")
    assert parse_env(chosen.stdout)["KERNEL_NAME"] == "6.1.0-56-amd64", chosen.stderr


def test_detection_rejects_a_directory_whose_release_differs(tmp_path: Path) -> None:
    fake_headers(tmp_path, "6.12.72-amd64", "6.12.72-common", release="6.12.71-amd64")
    result = detect(tmp_path, "metal")
    assert result.returncode != 0
    assert "'6.12.71-amd64', not '6.12.72-amd64'" in result.stderr


def test_detection_fails_when_the_common_directory_is_missing(tmp_path: Path) -> None:
    fake_headers(tmp_path, "6.12.72-amd64", "6.12.72-common")
    (tmp_path / "linux-headers-6.12.72-common").rmdir()
    result = detect(tmp_path, "metal")
    assert result.returncode != 0
    assert "common headers" in result.stderr


def test_detection_rejects_an_unknown_flavour(gardenlinux_like: Path) -> None:
    result = detect(gardenlinux_like, "baremetal")
    assert result.returncode != 0
    assert "KERNEL_FLAVOUR='baremetal' is not one of: cloud metal" in result.stderr


# ---- checksum verification ----


@pytest.fixture
def checksum_file(tmp_path: Path) -> Path:
    good = tmp_path / "NVIDIA-Linux-x86_64-580.1.2.run"
    good.write_bytes(b"pretend installer\n")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    sums = tmp_path / "sums"
    sums.write_text(
        f"# a comment\n{digest}  NVIDIA-Linux-x86_64-580.1.2.run\n"
        f"{'0' * 64}  NVIDIA-Linux-aarch64-580.1.2.run\n"
    )
    return sums


def test_verify_accepts_a_matching_file(checksum_file: Path) -> None:
    result = run(
        "fetch-driver.sh",
        "verify",
        str(checksum_file.parent / "NVIDIA-Linux-x86_64-580.1.2.run"),
        env={"CHECKSUM_FILE": str(checksum_file)},
    )
    assert result.returncode == 0, result.stderr


def test_verify_rejects_a_mismatch_naming_both_sums(checksum_file: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "arm" / "NVIDIA-Linux-aarch64-580.1.2.run"
    tampered.parent.mkdir()
    tampered.write_bytes(b"something else\n")
    result = run("fetch-driver.sh", "verify", str(tampered), env={"CHECKSUM_FILE": str(checksum_file)})
    assert result.returncode != 0
    assert "checksum mismatch for NVIDIA-Linux-aarch64-580.1.2.run" in result.stderr
    assert "0" * 64 in result.stderr
    assert hashlib.sha256(b"something else\n").hexdigest() in result.stderr


def test_verify_rejects_an_unknown_version_listing_the_known_ones(
    checksum_file: Path, tmp_path: Path
) -> None:
    unknown = tmp_path / "NVIDIA-Linux-x86_64-999.0.0.run"
    unknown.write_bytes(b"x")
    result = run("fetch-driver.sh", "verify", str(unknown), env={"CHECKSUM_FILE": str(checksum_file)})
    assert result.returncode != 0
    assert "no checksum for NVIDIA-Linux-x86_64-999.0.0.run" in result.stderr
    assert "x86_64-580.1.2" in result.stderr


def test_fetch_refuses_an_unknown_version_before_any_download(checksum_file: Path, tmp_path: Path) -> None:
    # A mirror that cannot answer: reaching it would give a download error, not the checksum one.
    env = {
        "CHECKSUM_FILE": str(checksum_file),
        "DRIVER_VERSION": "999.0.00",
        "ARCH": "amd64",
        "NVIDIA_MIRRORS": "http://127.0.0.1:9",
    }
    result = run("fetch-driver.sh", "fetch", str(tmp_path / "out"), env=env)
    assert result.returncode != 0
    assert "no checksum for NVIDIA-Linux-x86_64-999.0.00.run" in result.stderr
    assert "downloading" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_repository_checksum_file_is_well_formed() -> None:
    entries = [line for line in CHECKSUMS.read_text().splitlines() if line and not line.startswith("#")]
    assert entries, "no checksums at all"
    for line in entries:
        digest, _, name = line.partition("  ")
        assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest), line
        assert name.startswith(("NVIDIA-Linux-x86_64-", "NVIDIA-Linux-aarch64-")) and name.endswith(".run"), (
            line
        )
    names = [line.partition("  ")[2] for line in entries]
    assert len(names) == len(set(names)), "a file is listed twice"


# ---- compile-failure report ----


def test_condensed_failure_is_one_line_then_a_short_excerpt() -> None:
    # A real log: 535.261.03's open modules against Debian's 6.1.0-56 headers (kernel 6.1.192).
    log = DATA / "compile-535.261.03-6.1.0-56-amd64.log"
    result = run("condense-log.sh", str(log), "535.261.03", "6.1.0-56-amd64", "open")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "building the open modules of NVIDIA driver 535.261.03 for kernel 6.1.0-56-amd64 failed: "
        "nvidia/nv-pci.c:"
    ), lines[0]
    assert "too few arguments to function 'pci_resize_resource'" in lines[0]
    assert len(lines) <= 25
    assert len(result.stdout) < 4000 < log.stat().st_size


def test_condensed_failure_without_a_compiler_error_shows_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)) + "make: *** [Makefile:42] Killed\n")
    result = run("condense-log.sh", str(log), "580.1.2", "6.12.72-amd64", "open")
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "building the open modules of NVIDIA driver 580.1.2 for kernel 6.12.72-amd64 failed"
    )
    assert "no compiler error" in lines[0]
    assert lines[-1] == "make: *** [Makefile:42] Killed"
    assert "line 50" not in result.stdout


def test_compile_rejects_a_bad_module_type(tmp_path: Path) -> None:
    env = {
        "DRIVER_TREE": str(tmp_path),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "MODULE_TYPE": "both",
        "KERNEL_FLAVOUR": "cloud",
        "ARCH": "amd64",
    }
    result = run("compile-modules.sh", env=env)
    assert result.returncode != 0
    assert "MODULE_TYPE='both' is not one of: auto open proprietary" in result.stderr
    assert not (tmp_path / "out").exists()


# ---- payload ----


@pytest.fixture
def built_modules(tmp_path: Path) -> Path:
    modules = tmp_path / "modules"
    for module_type in ("open", "proprietary"):
        (modules / module_type).mkdir(parents=True)
        for name in ("nvidia", "nvidia-uvm"):
            (modules / module_type / f"{name}.ko").write_bytes(f"{module_type} {name}".encode())
    (modules / "build.env").write_text(
        'DRIVER_VERSION=580.1.2\nKERNEL_NAME=6.12.72-cloud-amd64\nMODULE_TYPES="open proprietary"\n'
        "KERNEL_FLAVOUR=cloud\nARCH=amd64\nHEADERS_DIR=/usr/src/linux-headers-6.12.72-cloud-amd64\n"
    )
    return modules


def test_payload_holds_tarballs_manifest_and_sums(built_modules: Path, tmp_path: Path) -> None:
    (built_modules / "verdict.env").write_text(
        "LOAD_CHECK_VERDICT=pass\nLOAD_CHECK_KERNEL=6.12.72-cloud-amd64\n"
        "LOAD_CHECK_DETAIL=pass: No such device\n"
    )
    payload = tmp_path / "payload"
    result = run("pack-payload.sh", str(built_modules), str(payload), env={"GL_VERSION": "1877.17"})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in payload.iterdir()) == [
        "SHA256SUMS",
        "manifest.env",
        "modules-open.tar.zst",
        "modules-proprietary.tar.zst",
    ]
    assert parse_env((payload / "manifest.env").read_text()) == {
        "DRIVER_VERSION": "580.1.2",
        "KERNEL_NAME": "6.12.72-cloud-amd64",
        "MODULE_TYPES": "open proprietary",
        "GL_VERSION": "1877.17",
        "ARCH": "amd64",
        "KERNEL_FLAVOUR": "cloud",
        "LOAD_CHECK_VERDICT": "pass",
        "LOAD_CHECK_KERNEL": "6.12.72-cloud-amd64",
        "LOAD_CHECK_DETAIL": "pass: No such device",
    }
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=payload, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout
    assert len(check.stdout.splitlines()) == 3
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(
        ["tar", "--zstd", "-xf", str(payload / "modules-proprietary.tar.zst"), "-C", str(unpacked)],
        check=True,
    )
    assert (unpacked / "nvidia.ko").read_bytes() == b"proprietary nvidia"


def test_payload_is_reproducible(built_modules: Path, tmp_path: Path) -> None:
    (built_modules / "verdict.env").write_text(
        "LOAD_CHECK_VERDICT=skipped\nLOAD_CHECK_KERNEL=\nLOAD_CHECK_DETAIL=off\n"
    )
    first, second = tmp_path / "a", tmp_path / "b"
    for target in (first, second):
        assert (
            run("pack-payload.sh", str(built_modules), str(target), env={"GL_VERSION": "1"}).returncode == 0
        )
        os.utime(built_modules / "open" / "nvidia.ko", (1, 1))
    assert (first / "SHA256SUMS").read_text() == (second / "SHA256SUMS").read_text()


def test_payload_refuses_modules_without_a_verdict(built_modules: Path, tmp_path: Path) -> None:
    result = run("pack-payload.sh", str(built_modules), str(tmp_path / "p"), env={"GL_VERSION": "1"})
    assert result.returncode != 0
    assert "verdict.env is missing" in result.stderr
    assert not (tmp_path / "p").exists()


def test_load_check_off_records_skipped(built_modules: Path) -> None:
    result = run("run-load-check.sh", str(built_modules), env={"LOAD_CHECK": "off"})
    assert result.returncode == 0, result.stderr
    verdict = parse_env((built_modules / "verdict.env").read_text())
    assert verdict["LOAD_CHECK_VERDICT"] == "skipped"
    assert verdict["LOAD_CHECK_KERNEL"] == ""
    assert "NOT proven to load" in result.stderr


def test_load_check_rejects_an_unknown_mode(built_modules: Path) -> None:
    result = run("run-load-check.sh", str(built_modules), env={"LOAD_CHECK": "maybe"})
    assert result.returncode != 0
    assert "LOAD_CHECK='maybe' is not one of: on off" in result.stderr
    assert not (built_modules / "verdict.env").exists()


# ---- user space ----


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to make a tiny shared library")
def test_userspace_layout_with_soname_links(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "firmware").mkdir(parents=True)
    (tree / "32").mkdir()
    for name in ("nvidia-smi", "nvidia-modprobe", "nvidia-persistenced"):
        (tree / name).write_text("#!/bin/sh\n")
    source = tmp_path / "x.c"
    source.write_text("int x(void) { return 1; }\n")
    for lib, soname in (("libcuda", "libcuda.so.1"), ("libnvidia-ml", "libnvidia-ml.so.1")):
        subprocess.run(
            [
                "cc",
                "-shared",
                "-fPIC",
                f"-Wl,-soname,{soname}",
                "-o",
                str(tree / f"{lib}.so.580.1.2"),
                str(source),
            ],
            check=True,
        )
    shutil.copy(tree / "libcuda.so.580.1.2", tree / "32" / "libcuda.so.580.1.2")
    (tree / "firmware" / "gsp_ga10x.bin").write_bytes(b"fw")
    out = tmp_path / "userspace"
    result = run("assemble-userspace.sh", str(tree), str(out), env={"DRIVER_VERSION": "580.1.2"})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "bin").iterdir()) == [
        "nvidia-modprobe",
        "nvidia-persistenced",
        "nvidia-smi",
    ]
    assert os.readlink(out / "lib" / "libcuda.so.1") == "libcuda.so.580.1.2"
    assert os.readlink(out / "lib" / "libnvidia-ml.so.1") == "libnvidia-ml.so.580.1.2"
    assert sorted(p.name for p in (out / "lib").iterdir()) == [
        "libcuda.so.1",
        "libcuda.so.580.1.2",
        "libnvidia-ml.so.1",
        "libnvidia-ml.so.580.1.2",
    ]
    assert (out / "firmware" / "nvidia" / "580.1.2" / "gsp_ga10x.bin").read_bytes() == b"fw"


def test_userspace_without_firmware_fails(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in (
        "nvidia-smi",
        "nvidia-modprobe",
        "nvidia-persistenced",
        "libcuda.so.1.0",
        "libnvidia-ml.so.1.0",
    ):
        (tree / name).write_text("x")
    result = run("assemble-userspace.sh", str(tree), str(tmp_path / "out"), env={"DRIVER_VERSION": "1.0"})
    assert result.returncode != 0
    assert "has no firmware/gsp_*.bin" in result.stderr


# ---- download: mirror fallback, verification, extraction (a local HTTP server stands in for NVIDIA) ----

FAKE_RUN = """#!/bin/sh
# Stands in for NVIDIA's makeself installer: `-x` extracts into ./NVIDIA-Linux-x86_64-<ver>/.
[ "$1" = "-x" ] || exit 3
mkdir -p NVIDIA-Linux-x86_64-{ver}/kernel-open NVIDIA-Linux-x86_64-{ver}/firmware
echo 'ccflags-y += -DNV_VERSION_STRING=\\"{ver}\\"' > NVIDIA-Linux-x86_64-{ver}/kernel-open/Kbuild
"""


@pytest.fixture
def mirrors(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Two base URLs: the first answers 404 for everything, the second serves tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield f"{base}/missing {base}/tesla", served
    finally:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging every request to stderr."""

    def log_message(self, format: str, *args: object) -> None:
        return


def _serve_run(served: Path, version: str, body: str) -> str:
    target = served / "tesla" / version / f"NVIDIA-Linux-x86_64-{version}.run"
    target.parent.mkdir(parents=True)
    target.write_text(body)
    return hashlib.sha256(body.encode()).hexdigest()


def test_fetch_falls_back_to_the_second_mirror_verifies_and_extracts(
    mirrors: tuple[str, Path], tmp_path: Path
) -> None:
    urls, served = mirrors
    digest = _serve_run(served, "580.10.02", FAKE_RUN.format(ver="580.10.02"))
    sums = tmp_path / "sums"
    sums.write_text(f"{digest}  NVIDIA-Linux-x86_64-580.10.02.run\n")
    env = {"CHECKSUM_FILE": str(sums), "DRIVER_VERSION": "580.10.02", "ARCH": "amd64", "NVIDIA_MIRRORS": urls}
    result = run("fetch-driver.sh", "fetch", str(tmp_path / "driver"), env=env)
    assert result.returncode == 0, result.stderr
    assert "download from http://127.0.0.1" in result.stderr and "/missing failed" in result.stderr
    assert "checksum ok: NVIDIA-Linux-x86_64-580.10.02.run" in result.stderr
    kbuild = (tmp_path / "driver" / "kernel-open" / "Kbuild").read_text()
    assert 'NV_VERSION_STRING=\\"580.10.02\\"' in kbuild


def test_fetch_refuses_a_download_that_does_not_match(mirrors: tuple[str, Path], tmp_path: Path) -> None:
    urls, served = mirrors
    _serve_run(served, "580.10.02", FAKE_RUN.format(ver="580.10.02") + "# tampered\n")
    sums = tmp_path / "sums"
    sums.write_text(f"{'ab' * 32}  NVIDIA-Linux-x86_64-580.10.02.run\n")
    env = {"CHECKSUM_FILE": str(sums), "DRIVER_VERSION": "580.10.02", "ARCH": "amd64", "NVIDIA_MIRRORS": urls}
    result = run("fetch-driver.sh", "fetch", str(tmp_path / "driver"), env=env)
    assert result.returncode != 0
    assert f"checksum mismatch for NVIDIA-Linux-x86_64-580.10.02.run: expected {'ab' * 32}" in result.stderr
    assert not (tmp_path / "driver").exists()


def test_seal_layer_sets_every_timestamp_to_zero_and_changes_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    (root / "opt/nvidia-installer/userspace/lib").mkdir(parents=True)
    lib = root / "opt/nvidia-installer/userspace/lib/libcuda.so.580.65.06"
    lib.write_bytes(b"\x7fELF")
    lib.chmod(0o755)
    (lib.parent / "libcuda.so.1").symlink_to(lib.name)
    outside = tmp_path / "outside"
    outside.write_text("not in the layer")
    (root / "opt/link-out").symlink_to(outside)
    before = outside.stat().st_mtime_ns
    result = run("seal-layer.sh", str(root))
    assert result.returncode == 0, result.stderr
    for path in [root, *root.rglob("*")]:
        assert path.lstat().st_mtime_ns == 0, path
    assert lib.read_bytes() == b"\x7fELF" and lib.stat().st_mode & 0o777 == 0o755
    assert os.readlink(lib.parent / "libcuda.so.1") == lib.name
    assert outside.stat().st_mtime_ns == before  # a symlink's own time, never its target's


def test_seal_layer_refuses_a_missing_root(tmp_path: Path) -> None:
    result = run("seal-layer.sh", str(tmp_path / "absent"))
    assert result.returncode != 0 and "is not a directory" in result.stderr
