"""A fake GPU node for the node-side installer: host root, sysfs, /dev, /proc, image payload and stubs.

The installer runs for real (bash), against directories in a temp dir. Commands that would touch a
real kernel or GPU (modprobe, rmmod, depmod, uname, nvidia-*) are stub scripts from `stubs/` that
record their argv and simulate their effect on the fake sysfs/dev/proc. PATH holds only the stub dir
and a dir of links to the plain tools the installer may use, so a real modprobe cannot be reached.

Each node has a mount namespace of its own (real, from `unshare`), in which every installer run happens:
its bind mount of the driver root lands there, never on this machine, and lives until the node reboots.
In it the fake host's /run/nvidia is a shared mount, as systemd makes /run on a real host.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "image" / "node" / "nvidia-installer"
STUBS = Path(__file__).with_name("stubs")

# Commands that must never resolve to a real binary from these tests.
STUBBED = (
    "uname", "modprobe", "rmmod", "depmod", "modinfo", "nvidia-smi", "nvidia-modprobe", "nvidia-persistenced",
)  # fmt: skip
NVIDIA_TOOLS = ("nvidia-smi", "nvidia-modprobe", "nvidia-persistenced")
HOST_TOOLS = ("modprobe", "rmmod", "depmod", "modinfo", "uname")
# kmod tools the real-depmod tests run for real (they only read modules and write below -b BASE).
REAL_KMOD_TOOLS = ("depmod", "modinfo")
# Plain tools the installer and the stubs may use (links to the real binaries).
ALLOWED_TOOLS = (
    "bash", "cat", "cp", "mv", "ln", "rm", "mkdir", "find", "sort", "readlink", "sleep", "flock",
    "sha256sum", "sed", "grep", "tr", "wc", "mktemp", "head", "dirname", "ls", "touch", "timeout", "du", "df",
    "date", "sync", "xargs", "tail", "mount", "stat", "curl",
)  # fmt: skip
# Wrapped tools: run the real binary, but record each call (to prove "no unpack").
SPIED_TOOLS = ("tar", "zstd")

DRIVER = "580.65.06"
KERNEL = "6.12.40-cloud-amd64"
MODULES = ("nvidia", "nvidia-uvm", "nvidia-modeset", "nvidia-drm", "nvidia-peermem")
# In-kernel modules the stand-in NVIDIA modules declare (like the real nvidia-drm.ko's .modinfo).
MODULE_DEPENDS = {"nvidia-drm": "drm,drm_kms_helper"}
READY_FILE = "run/nvidia-installer/driver-ready"


@dataclass
class Run:
    """The outcome of one installer run: exit code, output, whether it got ready, SIGTERM latency."""

    rc: int
    stderr: str
    ready: bool
    term_seconds: float | None = None
    stdout: str = ""
    # Seconds from the installer's start until the fresh readiness file was seen (polled every 10 ms).
    ready_seconds: float | None = None

    @property
    def first_error(self) -> str:
        """The first `error:` line (the one-line reason), or '' when there is none."""
        for line in self.stderr.splitlines():
            if "error:" in line:
                return line
        return ""


@dataclass
class FakeNode:
    """A temp-dir GPU node with one payload; methods build state, run the installer, inspect results."""

    root: Path
    driver: str = DRIVER
    kernel: str = KERNEL
    env_extra: dict[str, str] = field(default_factory=dict)
    # depmod -b only writes below its base dir: the real one may run here, on real modules.
    real_depmod: bool = False

    def __post_init__(self) -> None:
        self.host = self.root / "host"
        self.sys = self.root / "sys"
        self.dev = self.root / "dev"
        self.proc = self.root / "proc"
        self.payload = self.root / "image" / "payload"
        self.userspace = self.root / "image" / "userspace"
        self.stubs = self.root / "stubs"
        self.tools = self.root / "tools"
        self.state = self.root / "state"
        self.log = self.root / "calls.log"
        self.params = self.root / "etc" / "modprobe.conf"
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True)
        # The installer pod's hostPath volumes (DirectoryOrCreate) exist before the installer runs.
        dirs = (
            self.host / "opt/nvidia-installer", self.host / "run/nvidia", self.host / "run/nvidia-installer",
            self.dev, self.proc, self.state,
            self.sys / "module/firmware_class/parameters", self.sys / "bus/pci/devices",
        )  # fmt: skip
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        (self.sys / "module/firmware_class/parameters/path").write_text("")
        self.params.parent.mkdir(parents=True)
        self.params.write_text("options nvidia NVreg_EnableGpuFirmware=1\n")
        self.log.write_text("")
        self._make_host_kernel_tree()
        self._make_command_dirs()
        self._start_namespace()
        self.make_userspace()
        self.make_payload()
        self.add_gpu("0000:01:00.0", device="0x2330")  # H100: Hopper, open-capable

    # ---- the node's mount namespace ----

    def _start_namespace(self) -> None:
        """A holder process keeps the node's mount namespace alive; it ends when this object's pipe to it
        closes (the node is garbage, or the test process ended), so no namespace outlives its node."""
        run = self.host / "run/nvidia"
        unshare = ["unshare", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            unshare[1:1] = ["--user", "--map-root-user"]
        script = f"mount --bind {run} {run} && mount --make-shared {run} && echo up && read -r _"
        self._holder = subprocess.Popen(
            [*unshare, "sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "up":
            raise RuntimeError(f"cannot make a mount namespace for the fake node: {' '.join(unshare)}")

    def _stop_namespace(self) -> None:
        if self._holder.stdin is not None:
            self._holder.stdin.close()
        self._holder.wait(timeout=10)

    @property
    def namespace_pid(self) -> int:
        """The pid of the process holding the node's mount namespace (its /proc entry shows the mounts)."""
        return self._holder.pid

    def namespace_argv(self) -> list[str]:
        """The prefix that runs a command inside the node's mount namespace."""
        argv = [shutil.which("nsenter") or "nsenter", f"--target={self._holder.pid}", "--mount"]
        if os.geteuid() != 0:
            argv += ["--user", "--preserve-credentials"]
        return [*argv, "--"]

    def installer_argv(self, command: str = "install") -> list[str]:
        """The installer's command line, in the node's mount namespace (nsenter execs: the pid is bash's)."""
        return [*self.namespace_argv(), str(self.tools / "bash"), str(INSTALLER), command]

    def in_node(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Runs a command inside the node's mount namespace (as a pod on the node would see the host)."""
        return subprocess.run(
            [*self.namespace_argv(), *argv],
            input=stdin,
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def seen(self, path: Path) -> Path:
        """`path` (below the node's root) as seen inside the node's mount namespace, mounts included."""
        return Path(f"/proc/{self.namespace_pid}/root") / path.relative_to("/")

    def mounts_at(self, path: Path) -> list[str]:
        """The roots (path within the filesystem) of the mounts stacked on `path`, bottom first."""
        lines = Path(f"/proc/{self.namespace_pid}/mountinfo").read_text().splitlines()
        return [line.split()[3] for line in lines if line.split()[4] == str(path)]

    # ---- building the node ----

    def _make_host_kernel_tree(self) -> None:
        """The host's module tree as a distribution installs it: modules and their modules.dep."""
        kdir = self.host / "lib/modules" / self.kernel
        for rel in ("drivers/gpu/drm/drm.ko", "drivers/gpu/drm/drm_kms_helper.ko", "drivers/net/dummy.ko"):
            (kdir / "kernel" / rel).parent.mkdir(parents=True, exist_ok=True)
            (kdir / "kernel" / rel).write_text(f"in-kernel {rel}\n")
        (kdir / "modules.dep").write_text(
            "kernel/drivers/gpu/drm/drm_kms_helper.ko: kernel/drivers/gpu/drm/drm.ko\n"
            "kernel/drivers/gpu/drm/drm.ko:\nkernel/drivers/net/dummy.ko:\n"
        )
        (kdir / "modules.builtin").write_text("kernel/drivers/video/fbdev/core/fb.ko\n")

    def _make_command_dirs(self) -> None:
        self.stubs.mkdir()
        self.tools.mkdir()
        for src in STUBS.iterdir():
            if src.name in REAL_KMOD_TOOLS and self.real_depmod:
                continue
            if src.name in HOST_TOOLS or src.name.startswith("_"):
                (self.stubs / src.name).symlink_to(src)
        if self.real_depmod:
            for name in REAL_KMOD_TOOLS:
                real = shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
                assert real, f"kmod's {name} is needed"
                (self.tools / name).symlink_to(real)
        for name in ALLOWED_TOOLS:
            real = shutil.which(name)
            assert real, f"{name} is needed by the installer tests"
            (self.tools / name).symlink_to(real)
        for name in SPIED_TOOLS:
            real = shutil.which(name)
            assert real, f"{name} is needed by the installer tests"
            spy = self.tools / name
            record = f'printf "%s %s\\n" {name} "$*" >>"$STUB_LOG"\n'
            spy.write_text(f'#!{shutil.which("bash")}\n{record}{_fill_hook(name)}exec {real} "$@"\n')
            spy.chmod(0o755)

    def make_userspace(self, driver: str | None = None) -> None:
        """The image's kernel-independent layer: the NVIDIA tools are the stubs themselves."""
        ver = driver or self.driver
        if self.userspace.exists():
            shutil.rmtree(self.userspace)
        (self.userspace / "bin").mkdir(parents=True)
        for src in STUBS.iterdir():
            if src.name not in HOST_TOOLS:
                shutil.copy2(src, self.userspace / "bin" / src.name)
        lib = self.userspace / "lib"
        lib.mkdir()
        for name in ("libcuda.so", "libnvidia-ml.so"):
            (lib / f"{name}.{ver}").write_text(f"{name} {ver}\n")
            (lib / f"{name}.1").symlink_to(f"{name}.{ver}")
        fw = self.userspace / "firmware/nvidia" / ver
        fw.mkdir(parents=True)
        (fw / "gsp_ga10x.bin").write_bytes(b"\x7fGSP" + ver.encode())
        (self.userspace / "vulkan/icd.d").mkdir(parents=True)
        (self.userspace / "vulkan/icd.d/nvidia_icd.json").write_text('{"ICD": {}}\n')

    def make_payload(self, driver: str | None = None, types: tuple[str, ...] = ("open", "proprietary"),
                     verdict: str = "pass", kernel: str | None = None,
                     ko_files: dict[str, bytes] | None = None) -> None:  # fmt: skip
        """manifest.env, one real zstd tarball of text 'modules' per type, and SHA256SUMS."""
        ver, kname = driver or self.driver, kernel or self.kernel
        if self.payload.exists():
            shutil.rmtree(self.payload)
        self.payload.mkdir(parents=True)
        manifest = (
            f'DRIVER_VERSION={ver}\nKERNEL_NAME={kname}\nMODULE_TYPES="{" ".join(types)}"\n'
            f"GL_VERSION=1877.17\nARCH=amd64\nKERNEL_FLAVOUR=cloud\nLOAD_CHECK_VERDICT={verdict}\n"
            f"LOAD_CHECK_KERNEL={kname}\nLOAD_CHECK_DETAIL=nvidia.ko: No such device (no GPU in the guest)\n"
        )
        (self.payload / "manifest.env").write_text(manifest)
        for module_type in types:
            tarball = tar_zstd(ko_files) if ko_files else modules_tarball(ver, module_type)
            (self.payload / f"modules-{module_type}.tar.zst").write_bytes(tarball)
        self.write_sums()

    def write_sums(self) -> None:
        lines = [
            f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}"
            for f in sorted(self.payload.iterdir())
            if f.name != "SHA256SUMS"
        ]
        (self.payload / "SHA256SUMS").write_text("\n".join(lines) + "\n")

    def add_pci(self, addr: str, vendor: str, device: str, cls: str) -> None:
        dev = self.sys / "bus/pci/devices" / addr
        dev.mkdir(parents=True, exist_ok=True)
        for name, value in (("vendor", vendor), ("device", device), ("class", cls)):
            (dev / name).write_text(value + "\n")

    def add_gpu(self, addr: str, device: str) -> None:
        self.add_pci(addr, "0x10de", device, "0x030200")

    def remove_gpus(self) -> None:
        shutil.rmtree(self.sys / "bus/pci/devices")
        (self.sys / "bus/pci/devices").mkdir()

    def load_module(self, name: str, version: str, refcnt: int = 0, holders: tuple[str, ...] = ()) -> None:
        """A module as the kernel shows it in sysfs (loaded by someone else)."""
        mod = self.sys / "module" / name
        (mod / "holders").mkdir(parents=True, exist_ok=True)
        (mod / "version").write_text(version + "\n")
        (mod / "refcnt").write_text(f"{refcnt}\n")
        for holder in holders:
            (mod / "holders" / holder).symlink_to(f"../../{holder}")

    def add_process(self, pid: int, comm: str, fd_targets: tuple[str, ...]) -> None:
        (self.proc / str(pid) / "fd").mkdir(parents=True)
        (self.proc / str(pid) / "comm").write_text(comm + "\n")
        for n, target in enumerate(fd_targets):
            (self.proc / str(pid) / "fd" / str(n)).symlink_to(target)

    def add_container_mount(self, pid: int, tree: Path) -> None:
        """A container process whose mount table holds a bind mount of a cache entry at /usr/local/nvidia,
        as the kernel shows it in /proc/<pid>/mountinfo (root field: the path within the filesystem)."""
        (self.proc / str(pid)).mkdir(parents=True, exist_ok=True)
        root = f"/opt/nvidia-installer/cache/{tree.name}"
        (self.proc / str(pid) / "mountinfo").write_text(
            "2201 2187 0:52 / / rw,relatime - overlay overlay rw\n"
            f"2250 2201 259:1 {root} /usr/local/nvidia ro,relatime - ext4 /dev/nvme0n1p1 rw\n"
        )

    def reboot(self) -> None:
        """What a reboot clears: loaded modules, device nodes, /run (tmpfs), /proc/driver."""
        for mod in (self.sys / "module").glob("nvidia*"):
            shutil.rmtree(mod)
        for node in self.dev.iterdir():
            node.unlink()
        self._stop_namespace()  # its mounts go with it, as a reboot unmounts everything
        for run_dir in ("run/nvidia", "run/nvidia-installer"):
            shutil.rmtree(self.host / run_dir, ignore_errors=True)
        (self.host / "run/nvidia").mkdir()
        (self.host / "run/nvidia-installer").mkdir()
        self._start_namespace()
        shutil.rmtree(self.proc / "driver", ignore_errors=True)
        self.log.write_text("")

    # ---- running ----

    def env(self) -> dict[str, str]:
        env = {
            "PATH": f"{self.stubs}:{self.tools}",
            "HOST_ROOT": str(self.host),
            "SYS_ROOT": str(self.sys),
            "DEV_ROOT": str(self.dev),
            "PROC_ROOT": str(self.proc),
            "PAYLOAD_DIR": str(self.payload),
            "USERSPACE_DIR": str(self.userspace),
            "MODULE_PARAMETERS_FILE": str(self.params),
            "NODE_NAME": "gpu-node-1",
            "POD_NAME": "nvidia-installer-abcde",
            "TMPDIR": str(self.tmp),
            "LOCK_TIMEOUT": "2",
            "STUB_LOG": str(self.log),
            "STUB_STATE": str(self.state),
            "FAKE_KERNEL": self.kernel,
            "LC_ALL": "C",
            # No API access unless a test gives it (a token dir and KUBERNETES_SERVICE_HOST in env_extra).
            "SERVICE_ACCOUNT_DIR": str(self.root / "serviceaccount"),
        }
        env.update(self.env_extra)
        self._refuse_real_commands(env)
        return env

    def _refuse_real_commands(self, env: dict[str, str]) -> None:
        """Every dangerous command must resolve to a stub, on exactly the PATH the installer will use."""
        path = f"{env['USERSPACE_DIR']}/bin:{env['PATH']}"
        for name in STUBBED:
            if name in REAL_KMOD_TOOLS and self.real_depmod:
                continue
            found = shutil.which(name, path=path)
            assert found, f"stub {name} missing from PATH: refusing to run the installer"
            assert Path(found).resolve().parent in (STUBS, self.userspace / "bin"), (
                f"{name} resolves to {found}, not a stub: refusing to run the installer"
            )

    def run(
        self,
        command: str = "install",
        *,
        timeout: float = 15.0,
        sigterm: bool = True,
        hang_marker: str | None = None,
        await_state: tuple[str, ...] = ("nvidia-persistenced.pid",),
        kill_group: bool = True,
    ) -> Run:
        """Runs the installer. `install` never ends on success: once it writes the readiness file (or
        `hang_marker` appears in the state dir), it gets SIGTERM (or SIGKILL for the whole process group
        when sigterm is False, standing in for a node crash). `await_state` names files the stubs write
        into the state dir (daemon pid files) that must exist before the signal is sent, so a daemon
        stub is up (and has recorded its call) before it is asked to stop. With kill_group False only the
        installer gets SIGKILL: its children live on as orphans (`last_group` names their process group)."""
        for old in self.state.glob("*.pid"):
            old.unlink()
        proc = subprocess.Popen(
            self.installer_argv(command), env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, text=True,
        )  # fmt: skip
        self.last_group = proc.pid
        started = time.monotonic()
        ready_seconds: float | None = None
        ready_file = self.host / READY_FILE
        stale = _identity(ready_file)
        deadline = time.monotonic() + timeout
        ready = False
        term_seconds: float | None = None
        try:
            while proc.poll() is None:
                assert time.monotonic() < deadline, f"installer still running after {timeout}s"
                marker = hang_marker and (self.state / hang_marker).exists()
                fresh = _identity(ready_file) not in (None, stale) and all(
                    (self.state / name).exists() for name in await_state
                )
                if command == "install" and (fresh or marker):
                    ready = fresh
                    ready_seconds = time.monotonic() - started if fresh else None
                    if sigterm:
                        start = time.monotonic()
                        proc.send_signal(signal.SIGTERM)
                        proc.wait(timeout=10)
                        term_seconds = time.monotonic() - start
                    elif kill_group:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(timeout=10)
                    else:
                        proc.kill()
                        proc.wait(timeout=10)
                    break
                time.sleep(0.01)
            stdout, stderr = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if kill_group:
                kill_session(proc.pid)
        return Run(
            rc=proc.returncode, stderr=stderr, ready=ready, term_seconds=term_seconds, stdout=stdout,
            ready_seconds=ready_seconds,
        )  # fmt: skip

    # ---- inspecting ----

    def calls(self, name: str) -> list[list[str]]:
        """argv (without the name) of every recorded call of one stub or spied tool."""
        out = []
        for line in self.log.read_text().splitlines():
            words = shlex.split(line)
            if words and words[0] == name:
                out.append(words[1:])
        return out

    def snapshot(self) -> dict[str, tuple[str, str]]:
        """Every path under the fake host, sysfs, /dev and /proc with its kind and content or target."""
        snap: dict[str, tuple[str, str]] = {}
        root = self.seen(self.root)  # mounts of the node's namespace included
        for top in (self.host, self.sys, self.dev, self.proc):
            for path in sorted(self.seen(top).rglob("*")):
                rel = str(path.relative_to(root))
                if path.is_symlink():
                    snap[rel] = ("link", os.readlink(path))
                elif path.is_dir():
                    snap[rel] = ("dir", oct(path.stat().st_mode))
                else:
                    snap[rel] = ("file", path.read_bytes().hex())
        return snap

    def payload_digest(self) -> str:
        """The first 12 hex digits of sha256(SHA256SUMS): the cache key's payload part."""
        return hashlib.sha256((self.payload / "SHA256SUMS").read_bytes()).hexdigest()[:12]

    def tree(self, module_type: str, driver: str | None = None) -> Path:
        """The host cache entry of the current payload for a module type (pod view)."""
        name = f"{driver or self.driver}-{self.kernel}-{module_type}-{self.payload_digest()}"
        return self.host / "opt/nvidia-installer/cache" / name

    def cache_entries(self) -> list[str]:
        """Names of the cache's entries (also hidden ones: staging, damaged), sorted."""
        cache = self.host / "opt/nvidia-installer/cache"
        return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []

    def ready_values(self) -> dict[str, str]:
        """The readiness file's KEY=VALUE lines."""
        text = (self.host / READY_FILE).read_text()
        return dict(line.split("=", 1) for line in text.splitlines())

    def daemon_pid(self, name: str) -> int:
        """The pid a daemon stub recorded once it was up."""
        return int((self.state / f"{name}.pid").read_text())


@functools.cache
def modules_tarball(ver: str, module_type: str) -> bytes:
    """Text stand-ins for the .ko files (the stub modprobe reads version= and type= from them)."""
    text = "version={}\ntype={}\nname={}\ndepends={}\n"
    return tar_zstd(
        {
            f"kernel-{module_type}/{m}.ko": text.format(
                ver, module_type, m, MODULE_DEPENDS.get(m, "")
            ).encode()
            for m in MODULES
        }
    )


def tar_zstd(files: dict[str, bytes]) -> bytes:
    """A real zstd-compressed tarball of the given files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    zstd = shutil.which("zstd")
    assert zstd
    return subprocess.run([zstd, "-q", "-c"], input=buf.getvalue(), capture_output=True, check=True).stdout


def _fill_hook(name: str) -> str:
    """FAKE_FILL=<file>:<n>: the n-th call of this spied tool first fills that file's filesystem (another
    writer filling the disk while the installer unpacks, after its free-space check)."""
    dd = shutil.which("dd")
    assert dd, "dd is needed by the installer tests"
    return (
        f'if [[ -n "${{FAKE_FILL:-}}" ]] && '
        f'[[ "$(grep -c "^{name} " "$STUB_LOG")" == "${{FAKE_FILL#*:}}" ]]; '
        f'then {dd} if=/dev/zero of="${{FAKE_FILL%:*}}" bs=64k 2>/dev/null || true; fi\n'
    )


def kill_session(sid: int) -> None:
    """SIGKILL whatever is left of an installer's session (a hung stub after the installer was killed;
    `timeout` gives its command a process group of its own, the session stays)."""
    subprocess.run(["pkill", "-KILL", "-s", str(sid)], check=False)


def wait_until(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    """Polls `condition` every 20 ms; fails the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.02)


def _identity(path: Path) -> tuple[int, int] | None:
    """inode and mtime of a file, None when it does not exist: a new readiness file differs from the old."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def is_running(pid: int) -> bool:
    """True while a process exists (and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
