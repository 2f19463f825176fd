"""The node installer with an arm64 image on the fake host (issue 13): an arm64 payload installs on an
aarch64 node and is refused on an x86_64 one, and an amd64 payload is refused on an aarch64 node, each
before anything on the host changes. The node's machine is the uname stub's FAKE_MACHINE."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node.fakenode import FakeNode

ARM64_KERNEL = "6.12.40-cloud-arm64"


def _arm64_node(tmp_path: Path, machine: str) -> FakeNode:
    node = FakeNode(tmp_path, kernel=ARM64_KERNEL, env_extra={"FAKE_MACHINE": machine})
    # The payload as an arm64 build writes it (pack-payload.sh copies ARCH from build.env).
    node.make_payload()
    manifest = node.payload / "manifest.env"
    manifest.write_text(manifest.read_text().replace("ARCH=amd64\n", "ARCH=arm64\n"))
    node.write_sums()
    return node


def test_an_arm64_payload_installs_on_an_arm64_node(tmp_path: Path) -> None:
    node = _arm64_node(tmp_path, "aarch64")
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    assert f"kernel {ARM64_KERNEL} (Garden Linux 1877.17, arm64, cloud)" in run.stderr
    assert node.ready_values()["MODULE_TYPE"] == "open"


@pytest.mark.parametrize(
    ("payload_arch", "machine", "message"),
    [
        ("arm64", "x86_64", "this image is built for arm64 but node gpu-node-1 is amd64"),
        ("amd64", "aarch64", "this image is built for amd64 but node gpu-node-1 is arm64"),
    ],
    ids=["arm64-image-on-amd64", "amd64-image-on-arm64"],
)
def test_an_image_for_the_other_arch_is_refused_before_any_change(
    tmp_path: Path, payload_arch: str, machine: str, message: str
) -> None:
    node = (
        _arm64_node(tmp_path, machine) if payload_arch == "arm64" else FakeNode(tmp_path, kernel=ARM64_KERNEL)
    )
    node.env_extra["FAKE_MACHINE"] = machine
    before = node.snapshot()
    run = node.run()
    assert run.rc == 3, run.stderr
    assert run.first_error.startswith("nvidia-installer: error: ")
    assert message in run.first_error
    assert "nothing on the host was changed" in run.stderr
    assert node.snapshot() == before
