"""One contract between Python and bash: the node installer run exactly as the rendered DaemonSet runs it.

The installer DaemonSet (components/specs.py, the one description the program, the render and the
cluster use) says which command runs, with which environment and which volumes. Here its pod is
rebuilt on the fake node: each hostPath volume becomes a real bind mount of the fake host's directory at
the pod's mount path, in the node's mount namespace (read-only where the volume is, with the propagation
kubelet gives its `mountPropagation`: rprivate, rslave or rshared; root only, as CI runs), the ConfigMap
volume a directory of its rendered files, each env value and downward-API field is set as the kubelet
would set it. The payload is written by the real
`image/build/pack-payload.sh`. If the installer wrote a host path the DaemonSet does not mount, it would
land in the pod's own filesystem: the test fails on any real file there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components import specs
from components.selection import Requirement
from tests.node.fakenode import DRIVER, KERNEL, FakeNode, modules_tarball

REPO = Path(__file__).resolve().parents[2]
PACK_PAYLOAD = REPO / "image/build/pack-payload.sh"
POD_NAME = "nvidia-installer-gl1877-cloud-x7k2p"
PARAMETERS = {"nvidia": ["NVreg_EnableGpuFirmware=1"], "nvidia-uvm": []}


def _rendered() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The installer DaemonSet, its parameters ConfigMap and the device plugin, as rendered."""
    cm = specs.config_map(
        "nvidia-installer-modprobe", "kube-system", {}, {"modprobe.conf": specs.modprobe_conf(PARAMETERS)}
    )
    selection = [
        Requirement("os-version", "In", ("1877.17",)),
        Requirement("kubernetes.io/arch", "In", ("amd64",)),
    ]
    installer = specs.installer_daemonset(
        target="gl1877-cloud", namespace="kube-system", image="registry.example/nv:1", module_type="auto",
        selection=selection, parameters_config_map=cm["metadata"]["name"], pull_secret_name=None,
        version_labels={},
    )  # fmt: skip
    plugin = specs.device_plugin_daemonset(
        namespace="kube-system", image="plugin:tag", selections=[selection], gpu_config_map=None,
        pull_secret_name=None,
    )  # fmt: skip
    return installer, cm, plugin


def _pack_real_payload(node: FakeNode, tmp: Path) -> None:
    """The payload as the image build writes it: build.env, verdict.env, modules, pack-payload.sh."""
    modules = tmp / "modules"
    for module_type in ("open", "proprietary"):
        (modules / module_type).mkdir(parents=True)
        untar = ["tar", "--use-compress-program=zstd", "-x", "-C", str(modules / module_type), "-f", "-"]
        subprocess.run(untar, input=modules_tarball(DRIVER, module_type), check=True, capture_output=True)
        for ko in (modules / module_type).rglob("*.ko"):
            ko.rename(modules / module_type / ko.name)
    (modules / "build.env").write_text(
        f'DRIVER_VERSION="{DRIVER}"\nKERNEL_NAME="{KERNEL}"\nMODULE_TYPES="open proprietary"\n'
        'ARCH="amd64"\nKERNEL_FLAVOUR="cloud"\n'
    )
    (modules / "verdict.env").write_text(
        f'LOAD_CHECK_VERDICT="pass"\nLOAD_CHECK_KERNEL="{KERNEL}"\nLOAD_CHECK_DETAIL="nvidia.ko: ENODEV"\n'
    )
    for old in node.payload.iterdir():
        old.unlink()
    env = {**os.environ, "GL_VERSION": "1877.17"}
    subprocess.run(
        ["bash", str(PACK_PAYLOAD), str(modules), str(node.payload)], env=env, check=True, capture_output=True
    )


def _pod_path(pod: Path, mounts: dict[str, Path], path: str) -> Path:
    """Where a path the pod sees lands: under the longest mount path that holds it, else the pod's root."""
    for mount in sorted(mounts, key=len, reverse=True):
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return mounts[mount] / path[len(mount) :].lstrip("/")
    return pod / path.lstrip("/")


Bind = Callable[[Path, Path, bool, str], None]


def _build_pod(
    node: FakeNode, installer: dict[str, Any], cm: dict[str, Any], bind: Bind
) -> tuple[Path, dict[str, Path], dict[str, str]]:
    """The pod's filesystem (volumes mounted where the DaemonSet says) and its environment."""
    pod_spec = installer["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    pod = node.root / "pod"
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        where = pod / mount["mountPath"].lstrip("/")
        where.mkdir(parents=True, exist_ok=True)
        if "hostPath" in volume:
            host = volume["hostPath"]
            if host["path"] == "/dev":
                source = node.dev  # the fake /dev the stubs create device nodes in
            else:
                source = node.host / host["path"].lstrip("/")
                if host["type"] == "DirectoryOrCreate":
                    source.mkdir(parents=True, exist_ok=True)
                assert source.exists(), f"hostPath {host['path']} of type {host['type']} missing on the node"
            bind(source, where, bool(mount.get("readOnly")), mount.get("mountPropagation", "None"))
        else:
            assert volume["configMap"]["name"] == cm["metadata"]["name"]
            for name, text in cm["data"].items():
                (where / name).write_text(text)
        mounts[mount["mountPath"]] = where
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = {"spec.nodeName": "gpu-node-7", "metadata.name": POD_NAME}[field]
    # Paths in the env are the pod's view: map them the way the mounts do.
    for name, value in env.items():
        if value.startswith("/"):
            env[name] = str(_pod_path(pod, mounts, value))
    return pod, mounts, env


def _files_outside_volumes(pod: Path, volumes: list[Path]) -> list[str]:
    """Files written into the pod's own filesystem, not through one of its volumes."""
    return [
        str(path.relative_to(pod))
        for path in pod.rglob("*")
        if path.is_file() and not any(v == path or v in path.parents for v in volumes)
    ]


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path / "node")


# What kubelet makes of a volume's mountPropagation (pkg/kubelet/kubelet_pods.go, translateMountPropagation).
KUBELET_PROPAGATION = {
    "None": "--make-rprivate",
    "HostToContainer": "--make-rslave",
    "Bidirectional": "--make-rshared",
}


@pytest.fixture
def bind(node: FakeNode) -> Iterator[Bind]:
    """Bind mounts in the node's own mount namespace (they end with it)."""
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root (CI runs as root)")

    def mount(source: Path, target: Path, read_only: bool, propagation: str) -> None:
        steps = [
            ["mount", "--rbind", str(source), str(target)],
            ["mount", KUBELET_PROPAGATION[propagation], str(target)],
        ]
        if read_only:
            steps.append(["mount", "-o", "remount,bind,ro", str(target)])
        for argv in steps:
            done = node.in_node(argv)
            assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"

    yield mount


def test_installer_runs_as_the_daemonset_says(node: FakeNode, tmp_path: Path, bind: Bind) -> None:
    installer, cm, plugin = _rendered()
    (container,) = installer["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [specs.INSTALLER_BIN, "install"]
    assert container["readinessProbe"]["exec"]["command"] == [specs.INSTALLER_BIN, "probe"]
    _pack_real_payload(node, tmp_path)
    pod, mounts, env = _build_pod(node, installer, cm, bind)
    modules_before = {k: v for k, v in node.snapshot().items() if k.startswith("host/lib/modules/")}
    node.env_extra.update(env)

    run = node.run(container["command"][1])
    assert run.rc == 0 and run.ready, run.stderr
    assert "node gpu-node-7: starting" in run.stderr
    # Every host path the installer wrote went through one of the DaemonSet's volumes.
    assert _files_outside_volumes(pod, list(mounts.values())) == []
    # The read-only /lib/modules volume was only read.
    assert {k: v for k, v in node.snapshot().items() if k.startswith("host/lib/modules/")} == modules_before
    # What the manifest of the real pack-payload.sh says reached the readiness file.
    ready = node.ready_values()
    assert (ready["DRIVER_VERSION"], ready["KERNEL_NAME"], ready["NODE_NAME"]) == (
        DRIVER,
        KERNEL,
        "gpu-node-7",
    )
    # The rendered parameters reached modprobe (through the installer's private copy).
    assert (node.state / "modprobe-conf-nvidia").read_text() == specs.modprobe_conf(PARAMETERS)
    # The readiness probe, run as the DaemonSet runs it, agrees.
    assert node.run(container["readinessProbe"]["exec"]["command"][1]).rc == 0
    # The driver root the installer mounted through its /run/nvidia volume reached the host's /run/nvidia
    # (Bidirectional propagation), and shows the tree in use.
    tree = node.tree("open")
    host_root = node.seen(node.host / "run/nvidia/driver")
    assert (host_root / ".complete").read_text() == (tree / ".complete").read_text()
    # The device plugin's hostPaths exist now, with the type the plugin's DaemonSet demands.
    for volume in plugin["spec"]["template"]["spec"]["volumes"]:
        host = volume.get("hostPath")
        if not host or host["path"] in ("/dev", "/var/lib/kubelet/device-plugins"):
            continue
        path = node.host / host["path"].lstrip("/")
        assert {"File": path.is_file, "Directory": path.is_dir}[host["type"]](), host
