"""Real image builds: image/Dockerfile built with podman (chroot isolation) on a Debian stand-in base,
for two kernels of the same driver, pushed to a real registry on loopback and read back with skopeo.

The driver tree comes from Debian's packages (DRIVER_SOURCE=debian): NVIDIA's servers are unreachable
here. Each build compiles the open modules once (a few minutes) and runs the QEMU load check.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers import PODMAN_RUN
from tests.image.images import Pushed, build_image, push_image, run_ok
from tests.pins import PINS
from tests.verify.verdict_run import parse_env

pytestmark = pytest.mark.slow

KERNELS = {"metal": f"{PINS['KERNEL_61']}-amd64", "cloud": f"{PINS['KERNEL_61']}-cloud-amd64"}
FORBIDDEN = (
    "usr/bin/gcc",
    "usr/bin/cc",
    "usr/bin/make",
    "usr/bin/apt",
    "usr/bin/apt-get",
    "usr/bin/dpkg",
    "usr/bin/ld",
)
PAYLOAD = "opt/nvidia-installer/payload"
USERSPACE = "opt/nvidia-installer/userspace"


@pytest.fixture(scope="module")
def images(
    standin_base: str, registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Pushed]]:
    tmp = tmp_path_factory.mktemp("images")
    pushed: dict[str, Pushed] = {}
    tags = []
    for flavour in ("metal", "cloud"):
        tag = f"localhost/nvidia-installer-test:{flavour}"
        build_image(standin_base, flavour, tag)
        tags.append(tag)
        pushed[flavour] = push_image(tag, registry, flavour, tmp)
    yield pushed
    subprocess.run(["podman", "rmi", *tags], capture_output=True, check=False)


def _files(image: str, tmp: Path) -> dict[str, tarfile.TarInfo]:
    container = run_ok(["podman", "create", image, "status"]).strip()
    try:
        export = tmp / "rootfs.tar"
        run_ok(["podman", "export", "-o", str(export), container])
    finally:
        subprocess.run(["podman", "rm", container], capture_output=True, check=False)
    with tarfile.open(export) as archive:
        return {member.name.lstrip("./"): member for member in archive.getmembers()}


def _size(layer: dict[str, object]) -> int:
    size = layer["size"]
    assert isinstance(size, int)
    return size


def test_kernels_of_one_driver_share_every_layer_but_the_payload(images: dict[str, Pushed]) -> None:
    first, second = images["metal"].layers, images["cloud"].layers
    assert images["metal"].digest != images["cloud"].digest
    # runtime root, user space, installer: identical; the payload: per kernel, last.
    assert len(first) == len(second) == 4
    assert [layer["digest"] for layer in first[:3]] == [layer["digest"] for layer in second[:3]]
    assert first[3]["digest"] != second[3]["digest"]
    known = {layer["digest"] for layer in first}
    unique = sum(_size(layer) for layer in second if layer["digest"] not in known)
    total = sum(_size(layer) for layer in second)
    assert unique < 0.2 * total, f"a node moving to the second kernel pulls {unique} of {total} bytes"


def _diff_ids(pushed: Pushed) -> list[str]:
    rootfs = pushed.config["rootfs"]
    assert isinstance(rootfs, dict)
    return list(rootfs["diff_ids"])


def test_a_builder_without_a_shared_cache_makes_the_same_layers(
    images: dict[str, Pushed], standin_base: str, registry: str, tmp_path: Path
) -> None:
    """Issue 8: another builder (its own storage, so no layer cache, and another time) builds the runtime
    root, user space and installer layers byte for byte alike, so a node moving to a new kernel pulls
    only the payload whoever built its image. The base moves over as an archive, as a runner pulls it."""
    # podman refuses a runroot path longer than 50 characters: a short one of its own.
    runroot = Path(tempfile.mkdtemp(prefix="nvi-run-", dir="/tmp"))
    podman = ("podman", "--root", str(tmp_path / "storage"), "--runroot", str(runroot))
    archive = tmp_path / "base.tar"
    run_ok(["podman", "save", "-o", str(archive), standin_base])
    run_ok([*podman, "load", "-i", str(archive)])
    tag = "localhost/nvidia-installer-test:elsewhere"
    try:
        build_image(standin_base, "cloud", tag, load_check="off", podman=podman)
        other = push_image(tag, registry, "elsewhere", tmp_path, podman=podman)
    finally:
        subprocess.run([*podman, "rmi", "--all", "--force"], capture_output=True, check=False)
        shutil.rmtree(runroot, ignore_errors=True)
    assert _diff_ids(other)[:3] == _diff_ids(images["cloud"])[:3] == _diff_ids(images["metal"])[:3]
    assert [layer["digest"] for layer in other.layers[:3]] == [
        layer["digest"] for layer in images["cloud"].layers[:3]
    ]
    assert _diff_ids(other)[3] != _diff_ids(images["cloud"])[3]  # load check off: another manifest


def test_final_image_is_minimal_and_complete(images: dict[str, Pushed], tmp_path: Path) -> None:
    files = _files("localhost/nvidia-installer-test:cloud", tmp_path)
    for path in FORBIDDEN:
        assert path not in files, f"{path} must not be in the final image"
    # merged /usr kept: /lib and /bin are links, never real directories (a COPY of lib/ over them
    # breaks every program).
    assert files["lib"].issym() and files["bin"].issym()
    for path in ("SHA256SUMS", "manifest.env", "modules-open.tar.zst"):
        assert f"{PAYLOAD}/{path}" in files
    assert f"{PAYLOAD}/modules-proprietary.tar.zst" not in files
    version = PINS["NVIDIA_VERSION"]
    for path in (
        "bin/nvidia-smi",
        "bin/nvidia-persistenced",
        f"lib/libcuda.so.{version}",
        "lib/libcuda.so.1",
    ):
        assert f"{USERSPACE}/{path}" in files, path
    assert any(name.startswith(f"{USERSPACE}/firmware/nvidia/{version}/gsp_") for name in files)
    entrypoint = files["opt/nvidia-installer/bin/nvidia-installer"]
    assert entrypoint.mode & 0o111


def test_image_records_kernel_and_load_check_verdict(images: dict[str, Pushed], tmp_path: Path) -> None:
    manifest = run_ok(
        [
            *PODMAN_RUN,
            "--entrypoint",
            "/bin/bash",
            "localhost/nvidia-installer-test:cloud",
            "-c",
            f"cd /{PAYLOAD} && sha256sum -c --quiet SHA256SUMS && zstd -dc modules-open.tar.zst | tar -t && "
            "modprobe --version >/dev/null && flock --version >/dev/null && cat manifest.env",
        ]
    )
    values = parse_env(manifest)  # the tar listing's lines are no KEY=VALUE lines
    assert values["KERNEL_NAME"] == KERNELS["cloud"]
    assert values["KERNEL_FLAVOUR"] == "cloud"
    assert values["MODULE_TYPES"] == "open"
    assert values["LOAD_CHECK_VERDICT"] == "pass"
    assert values["LOAD_CHECK_KERNEL"] == KERNELS["cloud"]
    assert "./nvidia.ko" in manifest
    labels = images["cloud"].config["config"]
    assert isinstance(labels, dict)
    assert labels["Labels"]["io.gardenlinux.nvidia-installer.load-check"] == "on"
    assert labels["Labels"]["io.gardenlinux.nvidia-installer.driver-version"] == PINS["NVIDIA_VERSION"]
