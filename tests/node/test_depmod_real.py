"""The cache tree resolves in-kernel dependencies for the real kmod depmod (nothing is loaded here).

Real modules from the Debian kernel image the slow tier installs (tests/pins.env KERNEL_612) stand in
for NVIDIA's: drm_kms_helper.ko plays nvidia.ko, because like nvidia.ko it depends on an in-kernel
module (drm). The host's drm.ko sits in the fake host's /lib/modules, reachable only through the link
the installer puts into its tree.
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.node.fakenode import FakeNode
from tests.pins import PINS

KERNEL = f"{PINS['KERNEL_612']}-amd64"
REAL_MODULES = Path("/lib/modules") / KERNEL / "kernel"


def _real_module(rel: str) -> bytes:
    path = REAL_MODULES / f"{rel}.ko.xz"
    if not path.is_file():
        pytest.skip(
            f"{path} missing: install linux-image-{KERNEL} (.ci/system-deps.sh pulls it with the headers)"
        )
    return lzma.decompress(path.read_bytes())


def _depmod() -> str:
    found = shutil.which("depmod", path="/usr/sbin:/sbin")
    assert found, "kmod's depmod is needed"
    return found


def test_real_depmod_resolves_in_kernel_dependency_through_host_link(tmp_path: Path) -> None:
    helper = _real_module("drivers/gpu/drm/drm_kms_helper")
    leaf = _real_module("lib/crc-itu-t")
    node = FakeNode(tmp_path, kernel=KERNEL, real_depmod=True)
    drm_dir = node.host / "lib/modules" / KERNEL / "kernel/drivers/gpu/drm"
    (drm_dir / "drm.ko").unlink()
    (drm_dir / "drm.ko.xz").write_bytes((REAL_MODULES / "drivers/gpu/drm/drm.ko.xz").read_bytes())
    # The host's modules.dep, as the distribution's depmod wrote it when the kernel was installed.
    for stale in ("drm_kms_helper.ko", "../../net/dummy.ko"):
        (drm_dir / stale).unlink()
    host_kdir = node.host / "lib/modules" / KERNEL
    (host_kdir / "modules.dep").unlink()
    subprocess.run([_depmod(), "-b", str(node.host), KERNEL], check=True, capture_output=True)
    assert "kernel/drivers/gpu/drm/drm.ko.xz:" in (host_kdir / "modules.dep").read_text()
    node.make_payload(ko_files={"nvidia.ko": helper, "nvidia-uvm.ko": leaf})
    # Stop at the first modprobe: the tree is complete and switched by then; nothing needs a loaded module.
    node.env_extra["FAKE_MODPROBE_FAIL"] = "nvidia"
    run = node.run()
    assert run.rc == 8, run.stderr
    kdir = node.tree("open") / "lib/modules" / KERNEL
    deps = dict(line.split(":", 1) for line in (kdir / "modules.dep").read_text().splitlines())
    assert deps["nvidia/nvidia.ko"].split() == ["kernel/drivers/gpu/drm/drm.ko.xz"]
    assert deps["nvidia/nvidia-uvm.ko"].split() == []
    assert (kdir / "kernel/drivers/gpu/drm/drm.ko.xz").resolve() == (drm_dir / "drm.ko.xz").resolve()
    assert (kdir / "modules.dep.bin").is_file()
