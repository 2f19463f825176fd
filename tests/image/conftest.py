"""Slow-tier fixtures for real image builds: a Debian stand-in for kmodbuild and a loopback registry.

No registry can be pulled from here, so the stand-in base is made with debootstrap (Debian 12, the
same kernel packaging as Garden Linux) and imported into podman's store; it is cached there under a
tag derived from its recipe, so a session builds it at most once (about three minutes).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cache_root, file_lock
from tests.pins import PINS

DEBIAN_MIRROR = "http://deb.debian.org/debian"
COMPONENTS = "main contrib non-free non-free-firmware"
# What the compile, load-check and payload stages need of kmodbuild: toolchain, both flavours' headers
# of one kernel, apt sources that carry the kernel image and NVIDIA's packages.
STANDIN_PACKAGES = [
    "build-essential",
    "binutils",
    "kmod",
    "ca-certificates",
    "curl",
    f"linux-headers-{PINS['KERNEL_61']}-amd64",
    f"linux-headers-{PINS['KERNEL_61']}-cloud-amd64",
]
SOURCES = f"""Types: deb
URIs: {DEBIAN_MIRROR}
Suites: bookworm bookworm-updates
Components: {COMPONENTS}
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: {COMPONENTS}
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def _recipe_key() -> str:
    return hashlib.sha256((SOURCES + " ".join(STANDIN_PACKAGES)).encode()).hexdigest()[:12]


def _run(argv: list[str], **kwargs: object) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        pytest.fail(f"{' '.join(argv[:4])} ... failed ({result.returncode}):\n{result.stderr[-3000:]}")


def _image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0


def _make_rootfs(rootfs: Path) -> None:
    _run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR], timeout=900)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    # Keep package scripts from starting services in the chroot (101: action forbidden).
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    proc = rootfs / "proc"
    _run(["mount", "-t", "proc", "proc", str(proc)])
    try:
        _run(["chroot", str(rootfs), "apt-get", "update", "-qq"], timeout=600)
        _run(
            [
                "chroot",
                str(rootfs),
                "apt-get",
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                *STANDIN_PACKAGES,
            ],
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            timeout=1200,
        )
        _run(["chroot", str(rootfs), "apt-get", "clean"])
    finally:
        subprocess.run(["umount", str(proc)], check=False)
    policy.unlink()


@pytest.fixture(scope="session")
def standin_base() -> str:
    """A podman image standing in for kmodbuild and the Garden Linux base: Debian 12 with the toolchain
    and the 6.1 headers of PINS KERNEL_61 in the default and cloud flavours. Returns its reference."""
    for tool in ("podman", "debootstrap", "buildah", "skopeo"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run .ci/system-deps.sh")
    ref = f"localhost/nvidia-installer-standin:{_recipe_key()}"
    with file_lock(cache_root() / "standin.lock"):
        if _image_exists(ref):
            return ref
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _make_rootfs(rootfs)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            _run(["podman", "import", "-", ref], stdin=tar.stdout, timeout=600)
            tar.wait()
    return ref


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    """A real Distribution registry on a free loopback port with throw-away storage: `127.0.0.1:PORT`."""
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is missing: run .ci/system-deps.sh")
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        config = Path(tmp) / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {tmp}/data\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        server = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _wait_for_port(port, server)
            yield f"127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"docker-registry exited: {server.stderr.read().decode() if server.stderr else ''}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"docker-registry did not listen on 127.0.0.1:{port} within 30 s")
