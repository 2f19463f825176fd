"""Real image builds for the slow tier and the image benchmark: a Debian stand-in for kmodbuild, a loopback
registry, podman build and push.

No registry can be pulled from here, so the stand-in base is made with debootstrap (Debian 12, the
same kernel packaging as Garden Linux) and imported into podman's store; it is cached there under a
tag derived from its recipe, so a session builds it at most once (about three minutes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cache import cache_root, file_lock
from tests.pins import PINS
from tests.ports import free_port

CONTEXT = Path(__file__).resolve().parents[2] / "image"
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


def make_standin_base() -> str:
    """Builds (or finds in podman's store) the stand-in base image; returns its reference."""
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


@contextmanager
def running_registry() -> Iterator[str]:
    """Starts docker-registry on loopback with temporary storage; stops it and removes the storage after."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
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


@dataclass(frozen=True)
class Pushed:
    """One image as the registry serves it."""

    ref: str
    digest: str
    layers: list[dict[str, object]]
    config: dict[str, object]


def run_ok(argv: list[str], timeout: int = 600) -> str:
    """Runs a command; fails the test with its output when it fails. Returns stdout."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(argv[:3])} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def build_image(
    base: str,
    flavour: str,
    tag: str,
    *,
    load_check: str = "on",
    podman: Sequence[str] = ("podman",),
    arch: str = "amd64",
    builder_base: str | None = None,
) -> None:
    """Builds image/Dockerfile for the open modules of the pinned Debian driver: `base` stands in for the
    target's kmodbuild and runtime base, `builder_base` (default: `base`) for this amd64 machine's own
    kmodbuild, where every RUN happens. buildah 1.28 does not set BUILDPLATFORM/BUILDARCH: passed here."""
    args = {
        "ARCH": arch,
        "GL_VERSION": "1877.17",
        "DRIVER_VERSION": PINS["NVIDIA_VERSION"],
        "DRIVER_SOURCE": "debian",
        "KERNEL_FLAVOUR": flavour,
        "MODULE_TYPE": "open",
        "LOAD_CHECK": load_check,
        "BUILD_BASE": base,
        "RUNTIME_BASE": base,
        "BUILDER_BASE": builder_base or base,
        "BUILDPLATFORM": "linux/amd64",
        "BUILDARCH": "amd64",
    }
    argv = [*podman, "build", "--isolation=chroot", "--layers", "--platform", f"linux/{arch}"]
    argv += ["-f", str(CONTEXT / "Dockerfile"), "-t", tag]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    run_ok([*argv, str(CONTEXT)], timeout=3600)


def push_image(tag: str, registry: str, name: str, tmp: Path, podman: Sequence[str] = ("podman",)) -> Pushed:
    """Pushes to the loopback registry and reads digest, manifest and config back with skopeo."""
    ref = f"{registry}/nvidia-installer:{name}"
    digestfile = tmp / f"{name}.digest"
    run_ok([*podman, "push", "--tls-verify=false", "--digestfile", str(digestfile), tag, ref])
    inspect = ["skopeo", "inspect", "--tls-verify=false"]
    digest = run_ok([*inspect, f"docker://{ref}", "--format", "{{.Digest}}"]).strip()
    if digest != digestfile.read_text().strip():
        pytest.fail(f"registry digest {digest} differs from podman's {digestfile.read_text()}")
    manifest = json.loads(run_ok([*inspect, "--raw", f"docker://{ref}"]))
    config = json.loads(run_ok([*inspect, "--config", f"docker://{ref}"]))
    return Pushed(ref=ref, digest=digest, layers=manifest["layers"], config=config)
