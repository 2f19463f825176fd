"""Real image builds for the slow tier and the image benchmark: a Debian stand-in for kmodbuild, a loopback
registry, podman build and push.

No registry can be pulled from here, so the stand-in base is made with debootstrap (Debian 12, the
same kernel packaging as Garden Linux) and imported into podman's store; it is cached there under a
tag derived from its recipe, so a session builds it at most once (about three minutes).

The arm64 stand-in (kmodbuild and runtime base of an arm64 target) cannot be made that way: nothing of
arm64 runs here (no binfmt emulation). It is assembled from Debian's arm64 packages, unpacked and never
configured, with the dpkg database an installation would leave, and imported with arm64 in its config.
That is enough, because the Dockerfile never runs a target stage: it copies the headers and mounts the
runtime root (docs/image.md, "arm64").
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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


def _apt_config(directory: Path, arch: str) -> dict[str, str]:
    """A private APT state for another architecture (own sources, lists, cache, empty dpkg status), so the
    host's package state is never touched. Returns the environment that selects it."""
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / "status").touch()
    (directory / "sources.list.d" / "debian.sources").write_text(SOURCES)
    (directory / "apt.conf").write_text(
        f'Dir::State::status "{directory}/status";\n'
        f'Dir::State::Lists "{directory}/lists";\n'
        f'Dir::Cache "{directory}/cache";\n'
        f'Dir::Etc::SourceList "{directory}/sources.list";\n'
        f'Dir::Etc::SourceParts "{directory}/sources.list.d";\n'
        f'APT::Architecture "{arch}";\n'
        f'APT::Architectures {{ "{arch}"; }};\n'
        'Acquire::Languages "none";\n'
        'APT::Sandbox::User "root";\n'
    )
    return {"APT_CONFIG": str(directory / "apt.conf"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


# What the image's arm64 stages take from the target bases: the 6.1 headers of both flavours (compile
# stage: /usr/src) and a runtime root holding make-runtime-rootfs.sh's packages (with everything they
# depend on), base-passwd for /etc/passwd and /etc/group, and libtirpc3 for nvidia-persistenced (the
# amd64 stand-in has it through build-essential).
ARM64_HEADERS = [
    f"linux-headers-{PINS['KERNEL_61']}-arm64",
    f"linux-headers-{PINS['KERNEL_61']}-cloud-arm64",
    f"linux-headers-{PINS['KERNEL_61']}-common",
    "linux-kbuild-6.1",
]
ARM64_RUNTIME = [
    "bash",
    "coreutils",
    "kmod",
    "tar",
    "zstd",
    "util-linux",
    "mount",
    "findutils",
    "grep",
    "sed",
    "hostname",
    "curl",
    "libc-bin",
    "base-files",
    "base-passwd",
    "libtirpc3",
]


def _register(root: Path, deb: Path) -> None:
    """What dpkg's unpack and configure would record for one package (its status paragraph and file
    list), so dpkg-query --admindir answers for the root; no maintainer script runs."""
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    fields = dict(
        line.split(": ", 1) for line in control.splitlines() if ": " in line and not line[0].isspace()
    )
    package, arch = fields["Package"], fields["Architecture"]
    lines = control.rstrip("\n").splitlines()
    paragraph = [lines[0], "Status: install ok installed", *lines[1:]]
    info = root / "var/lib/dpkg/info"
    with (root / "var/lib/dpkg/status").open("a") as status:
        status.write("\n".join(paragraph) + "\n\n")
    names = subprocess.run(
        f"dpkg-deb --fsys-tarfile {deb} | tar -t", shell=True, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    paths = ["/." if name in ("./", ".") else "/" + name.removeprefix("./").rstrip("/") for name in names]
    qualified = f"{package}:{arch}" if fields.get("Multi-Arch") == "same" else package
    (info / f"{qualified}.list").write_text("\n".join(paths) + "\n")


def _make_foreign_rootfs(rootfs: Path, work: Path, arch: str) -> None:
    env = _apt_config(work / "apt", arch)
    _run(["apt-get", "update", "-qq"], env=env, timeout=900)
    debs = work / "headers"
    _run(
        ["apt-get", "install", "-y", "-qq", "--download-only", "--no-install-recommends", *ARM64_RUNTIME],
        env={**env, "DEBIAN_FRONTEND": "noninteractive"},
        timeout=900,
    )
    runtime = sorted((work / "apt/cache/archives").glob("*.deb"))
    debs.mkdir(parents=True, exist_ok=True)
    _run(["apt-get", "download", "-q", *ARM64_HEADERS], env=env, cwd=str(debs), timeout=900)
    # Merged /usr like Debian 12 and Garden Linux: the links first, kept while the packages unpack.
    for link in ("bin", "sbin", "lib"):
        (rootfs / "usr" / link).mkdir(parents=True, exist_ok=True)
        (rootfs / link).symlink_to(f"usr/{link}")
    (rootfs / "var/lib/dpkg/info").mkdir(parents=True)
    (rootfs / "var/lib/dpkg/status").touch()
    for deb in [*runtime, *sorted(debs.glob("*.deb"))]:
        _run(["sh", "-c", f"dpkg-deb --fsys-tarfile {deb} | tar -x --keep-directory-symlink -C {rootfs}"])
        _register(rootfs, deb)
    # base-passwd's postinst would do this (it cannot run here).
    for name in ("passwd", "group"):
        shutil.copy2(rootfs / f"usr/share/base-passwd/{name}.master", rootfs / "etc" / name)


def _imported_rootfs(
    ref: str, tools: Sequence[str], make: Callable[[Path, Path], None], *import_args: str
) -> str:
    """Finds `ref` in podman's store or makes a root with `make(rootfs, workdir)` and imports it as `ref`
    (under the stand-in lock, so concurrent sessions build it once)."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run .ci/system-deps.sh")
    with file_lock(cache_root() / "standin.lock"):
        if _image_exists(ref):
            return ref
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            make(rootfs, Path(tmp))
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            _run(["podman", "import", *import_args, "-", ref], stdin=tar.stdout, timeout=600)
            tar.wait()
    return ref


def make_arm64_standin_base() -> str:
    """Builds (or finds in podman's store) the arm64 stand-in for kmodbuild and the runtime base, from
    Debian's arm64 packages without running any of them; returns its reference."""
    key = hashlib.sha256((SOURCES + " ".join(ARM64_HEADERS + ARM64_RUNTIME)).encode()).hexdigest()[:12]
    return _imported_rootfs(
        f"localhost/nvidia-installer-standin-arm64:{key}",
        ("podman", "apt-get", "dpkg-deb"),
        lambda rootfs, work: _make_foreign_rootfs(rootfs, work, "arm64"),
        "--arch",
        "arm64",
    )


def make_standin_base() -> str:
    """Builds (or finds in podman's store) the stand-in base image; returns its reference."""
    return _imported_rootfs(
        f"localhost/nvidia-installer-standin:{_recipe_key()}",
        ("podman", "debootstrap", "buildah", "skopeo"),
        lambda rootfs, _work: _make_rootfs(rootfs),
    )


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
