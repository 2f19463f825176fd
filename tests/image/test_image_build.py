"""Real image builds: image/Dockerfile built with podman (chroot isolation) on a Debian stand-in base,
for two kernels of the same driver, pushed to a real registry on loopback and read back with skopeo.

The driver tree comes from Debian's packages (DRIVER_SOURCE=debian): NVIDIA's servers are unreachable
here. Each build compiles the open modules once (a few minutes) and runs the QEMU load check.
"""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers import PODMAN_RUN
from tests.image.images import Pushed, build_image, push_image, run_ok
from tests.pins import PINS

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
    values = dict(
        line.split("=", 1) for line in manifest.splitlines() if "=" in line and not line.endswith(".ko")
    )
    assert values["KERNEL_NAME"] == f'"{KERNELS["cloud"]}"'
    assert values["KERNEL_FLAVOUR"] == '"cloud"'
    assert values["MODULE_TYPES"] == '"open"'
    assert values["LOAD_CHECK_VERDICT"] == '"pass"'
    assert values["LOAD_CHECK_KERNEL"] == f'"{KERNELS["cloud"]}"'
    assert "./nvidia.ko" in manifest
    labels = images["cloud"].config["config"]
    assert isinstance(labels, dict)
    assert labels["Labels"]["io.gardenlinux.nvidia-installer.load-check"] == "on"
    assert labels["Labels"]["io.gardenlinux.nvidia-installer.driver-version"] == PINS["NVIDIA_VERSION"]
