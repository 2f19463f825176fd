"""The arm64 image built on this amd64 machine without emulation (issue 13): image/Dockerfile with podman
(`--platform linux/arm64`), every RUN on the build platform (the amd64 stand-in as BUILDER_BASE: cross
compiler, qemu-system-aarch64, the arm64 kernel and busybox as packages), the arm64 stand-in only copied
from (headers) and mounted (runtime root). This machine has no binfmt_misc registration for aarch64, so
a single RUN in an arm64 stage would fail with "Exec format error": the build passing is the proof.

Two images, pushed to the loopback registry: 6.1 default flavour with the QEMU load check, and the 6.1
cloud flavour (a second kernel) with LOAD_CHECK=off. The second is there only for the layer-sharing claim:
the runtime root, user space and installer stages take no kernel and no load-check input, so a second
boot would prove nothing about sharing and costs a download and a boot; its open modules still compile
(about four minutes), since its payload must be its own kernel's.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.images import Pushed, build_image, push_image, run_ok
from tests.pins import PINS
from tests.verify.verdict_run import parse_env

pytestmark = pytest.mark.slow

KERNELS = {"metal": f"{PINS['KERNEL_61']}-arm64", "cloud": f"{PINS['KERNEL_61']}-cloud-arm64"}
EM_AARCH64 = 183
EM_X86_64 = 62
EM_RISCV = 243
PAYLOAD = "opt/nvidia-installer/payload"
USERSPACE = "opt/nvidia-installer/userspace"
FORBIDDEN = ("usr/bin/gcc", "usr/bin/make", "usr/bin/apt-get", "usr/bin/dpkg", "usr/bin/ld")


@pytest.fixture(scope="module")
def arm64_images(
    arm64_standin_base: str, standin_base: str, registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Pushed]]:
    tmp = tmp_path_factory.mktemp("arm64-images")
    pushed: dict[str, Pushed] = {}
    tags = []
    for flavour, load_check in (("metal", "on"), ("cloud", "off")):
        tag = f"localhost/nvidia-installer-test:arm64-{flavour}"
        build_image(
            arm64_standin_base, flavour, tag, load_check=load_check, arch="arm64", builder_base=standin_base
        )
        tags.append(tag)
        pushed[flavour] = push_image(tag, registry, f"arm64-{flavour}", tmp)
    yield pushed
    subprocess.run(["podman", "rmi", *tags], capture_output=True, check=False)


def _layer_files(pushed: Pushed, tmp: Path) -> dict[str, bytes]:
    """Every regular file of the image as the registry serves it (layers applied in order), read without
    running anything of arm64."""
    target = tmp / pushed.ref.rsplit(":", 1)[1]
    run_ok(["skopeo", "copy", "--src-tls-verify=false", f"docker://{pushed.ref}", f"dir:{target}"])
    files: dict[str, bytes] = {}
    for layer in pushed.layers:
        digest = str(layer["digest"]).removeprefix("sha256:")
        with tarfile.open(target / digest) as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("./")
                if member.isfile():
                    extracted = archive.extractfile(member)
                    assert extracted is not None
                    files[name] = extracted.read()
                elif member.issym():
                    files[name] = b"->" + member.linkname.encode()
    return files


def _machine(data: bytes) -> int | None:
    return int.from_bytes(data[18:20], "little") if data[:4] == b"\x7fELF" else None


def _needed(path: Path) -> list[str]:
    out = run_ok(["readelf", "-d", str(path)])
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def test_the_final_image_is_arm64_and_every_program_in_it_aarch64(
    arm64_images: dict[str, Pushed], tmp_path: Path
) -> None:
    """Built on amd64, the image holds nothing of amd64: its config says arm64, and every ELF file (the
    runtime root's programs and libraries, the driver's user space, the modules in the payload) is an
    aarch64 one, but the GSP firmware (ELF for the GPU's own RISC-V core, the same on both arches)."""
    for pushed in arm64_images.values():
        assert pushed.config["architecture"] == "arm64"
        assert pushed.config["os"] == "linux"
    files = _layer_files(arm64_images["metal"], tmp_path)
    for path in FORBIDDEN:
        assert path not in files, f"{path} must not be in the final image"
    assert files["lib"] == b"->usr/lib" and files["bin"] == b"->usr/bin"
    machines = {name: _machine(data) for name, data in files.items() if _machine(data) is not None}
    assert len(machines) > 100, sorted(machines)
    firmware = f"{USERSPACE}/firmware/"
    assert {name for name, machine in machines.items() if machine == EM_X86_64} == set()
    assert {
        n for n, machine in machines.items() if machine != EM_AARCH64 and not n.startswith(firmware)
    } == set()
    assert {machines[n] for n in machines if n.startswith(firmware)} == {EM_RISCV}
    for program in ("usr/bin/bash", "usr/bin/kmod", "usr/bin/flock", "usr/bin/zstd", "usr/bin/curl"):
        assert machines[program] == EM_AARCH64, program
    assert machines[f"{USERSPACE}/bin/nvidia-smi"] == EM_AARCH64
    assert machines[f"{USERSPACE}/lib/libcuda.so.{PINS['NVIDIA_VERSION']}"] == EM_AARCH64
    payload = files[f"{PAYLOAD}/modules-open.tar.zst"]
    listing = subprocess.run(["zstd", "-dc"], input=payload, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as modules:
        member = modules.extractfile("./nvidia.ko")
        assert member is not None
        assert _machine(member.read()) == EM_AARCH64


def test_every_library_the_programs_need_is_in_the_image(
    arm64_images: dict[str, Pushed], tmp_path: Path
) -> None:
    """What make-runtime-rootfs.sh read from the ELF headers instead of running ldd: the interpreter and
    every NEEDED library of every program in the image, transitively, is there (the node runs them)."""
    files = _layer_files(arm64_images["metal"], tmp_path)
    root = tmp_path / "root"
    sonames = {name.rsplit("/", 1)[1] for name in files if "/lib/" in f"/{name}" and ".so" in name}
    programs = [n for n in files if n.startswith(("usr/bin/", "usr/sbin/", f"{USERSPACE}/bin/"))]
    missing: dict[str, list[str]] = {}
    for name in programs:
        data = files[name]
        if _machine(data) is None:
            continue  # a script, or a link
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        absent = [lib for lib in _needed(path) if lib not in sonames]
        if absent:
            missing[name] = absent
    assert missing == {}
    assert "usr/lib/ld-linux-aarch64.so.1" in files
    assert "usr/lib/aarch64-linux-gnu/libc.so.6" in files


def test_a_second_arm64_kernel_shares_every_layer_but_the_payload(arm64_images: dict[str, Pushed]) -> None:
    first, second = arm64_images["metal"].layers, arm64_images["cloud"].layers
    assert len(first) == len(second) == 4
    # runtime root, user space, installer: identical digests; the payload: the kernel's own.
    assert [layer["digest"] for layer in first[:3]] == [layer["digest"] for layer in second[:3]]
    assert first[3]["digest"] != second[3]["digest"]


def test_the_arm64_image_records_its_kernel_and_the_load_check(
    arm64_images: dict[str, Pushed], tmp_path: Path
) -> None:
    """The load check booted the arm64 kernel under qemu-system-aarch64 during the build (on amd64) and
    passed; the second image says it was not checked."""
    files = _layer_files(arm64_images["metal"], tmp_path)
    manifest = parse_env(files[f"{PAYLOAD}/manifest.env"].decode())
    assert manifest["ARCH"] == "arm64"
    assert manifest["KERNEL_NAME"] == KERNELS["metal"]
    assert manifest["LOAD_CHECK_VERDICT"] == "pass"
    assert manifest["LOAD_CHECK_KERNEL"] == KERNELS["metal"]
    labels = arm64_images["metal"].config["config"]
    assert isinstance(labels, dict)
    assert labels["Labels"]["io.gardenlinux.nvidia-installer.arch"] == "arm64"
    assert labels["Labels"]["io.gardenlinux.nvidia-installer.load-check"] == "on"
    cloud = parse_env(_layer_files(arm64_images["cloud"], tmp_path)[f"{PAYLOAD}/manifest.env"].decode())
    assert cloud["KERNEL_NAME"] == KERNELS["cloud"]
    assert cloud["LOAD_CHECK_VERDICT"] == "skipped"
