"""Rules the OpenAPI schema cannot check (operators, references between fields, value ranges), and the
pod contract of docs/architecture.md, over every rendered object of both example stacks."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest

from components.render import render_objects

TOLERATION_OPERATORS = {"Exists", "Equal"}
TAINT_EFFECTS = {"NoSchedule", "PreferNoSchedule", "NoExecute"}
NODE_OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"}
HOSTPATH_TYPES = {
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
}
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
INSTALLER_BIN = "/opt/nvidia-installer/bin/nvidia-installer"


STACKS = ["dev", "prod"]


@cache
def _daemonsets(stack: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """(`<stack>/<name>`, DaemonSet) of a stack, rendered once and only when a test asks (a broken stack
    fails that test, not the collection)."""
    objects, _ = render_objects(stack)
    return tuple((f"{stack}/{o['metadata']['name']}", o) for o in objects if o["kind"] == "DaemonSet")


def _installers(stack: str) -> list[tuple[str, dict[str, Any]]]:
    return [(n, d) for n, d in _daemonsets(stack) if not n.endswith("/nvidia-device-plugin")]


def _plugins(stack: str) -> list[tuple[str, dict[str, Any]]]:
    return [(n, d) for n, d in _daemonsets(stack) if n.endswith("/nvidia-device-plugin")]


def _pod(ds: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = ds["spec"]["template"]["spec"]
    return pod


def _mounts(ds: dict[str, Any]) -> set[tuple[str, str, bool, str]]:
    """(source, mount path, read-only, hostPath type) per mount; source is the host path or `cm:<name>`."""
    volumes = {v["name"]: v for v in _pod(ds)["volumes"]}
    out = set()
    for mount in _pod(ds)["containers"][0]["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            source, kind = volume["hostPath"]["path"], volume["hostPath"].get("type", "")
        else:
            source, kind = "cm:" + volume["configMap"]["name"].rsplit("-", 1)[0], "configMap"
        out.add((source, mount["mountPath"], bool(mount.get("readOnly", False)), kind))
    return out


def test_there_are_installers_and_plugins() -> None:
    assert sum(len(_installers(s)) for s in STACKS) == 4
    assert [len(_plugins(s)) for s in STACKS] == [1, 1]


@pytest.mark.parametrize("stack", STACKS)
def test_tolerations_tolerate_every_taint_with_valid_operators(stack: str) -> None:
    for name, ds in _daemonsets(stack):
        _tolerations_tolerate_every_taint_with_valid_operators(name, ds)


def _tolerations_tolerate_every_taint_with_valid_operators(name: str, ds: dict[str, Any]) -> None:
    tolerations = _pod(ds)["tolerations"]
    for toleration in tolerations:
        assert toleration["operator"] in TOLERATION_OPERATORS, name
        if toleration["operator"] == "Exists":
            assert "value" not in toleration, name
        assert toleration.get("effect", "NoSchedule") in TAINT_EFFECTS, name
    # an empty key with Exists and no effect matches every taint (core/v1 Toleration docs)
    assert {"operator": "Exists"} in tolerations, name


@pytest.mark.parametrize("stack", STACKS)
def test_node_affinity_expressions_are_well_formed(stack: str) -> None:
    for name, ds in _daemonsets(stack):
        _node_affinity_expressions_are_well_formed(name, ds)


def _node_affinity_expressions_are_well_formed(name: str, ds: dict[str, Any]) -> None:
    required = _pod(ds)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    terms = required["nodeSelectorTerms"]
    assert terms, name
    for term in terms:
        assert term["matchExpressions"], f"{name}: an empty term matches every node"
        for expression in term["matchExpressions"]:
            assert expression["operator"] in NODE_OPERATORS, name
            if expression["operator"] in ("In", "NotIn"):
                assert expression["values"], name
            else:
                assert "values" not in expression, name
        arch = [e for e in term["matchExpressions"] if e["key"] == "kubernetes.io/arch"]
        assert len(arch) == 1 and arch[0]["operator"] == "In", f"{name}: each term must pin the arch"


@pytest.mark.parametrize("stack", STACKS)
def test_references_and_labels_are_consistent(stack: str) -> None:
    for name, ds in _daemonsets(stack):
        _references_and_labels_are_consistent(name, ds)


def _references_and_labels_are_consistent(name: str, ds: dict[str, Any]) -> None:
    pod = _pod(ds)
    volume_names = [v["name"] for v in pod["volumes"]]
    assert len(volume_names) == len(set(volume_names)), name
    for container in pod["containers"]:
        for mount in container["volumeMounts"]:
            assert mount["name"] in volume_names, f"{name}: mount {mount['name']} has no volume"
    for volume in pod["volumes"]:
        if "hostPath" in volume:
            assert volume["hostPath"]["type"] in HOSTPATH_TYPES, name
    template_labels = ds["spec"]["template"]["metadata"]["labels"]
    for key, value in ds["spec"]["selector"]["matchLabels"].items():
        assert template_labels[key] == value, f"{name}: selector does not match the pod template"
    for value in {**ds["metadata"]["labels"], **template_labels}.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), f"{name}: bad label value {value!r}"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["containers"][0]["securityContext"]["privileged"] is True


def _quantity(text: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("stack", STACKS)
def test_requests_fit_within_limits(stack: str) -> None:
    for name, ds in _daemonsets(stack):
        _requests_fit_within_limits(name, ds)


def _requests_fit_within_limits(name: str, ds: dict[str, Any]) -> None:
    resources = _pod(ds)["containers"][0]["resources"]
    for kind in ("cpu", "memory"):
        assert _quantity(resources["requests"][kind]) <= _quantity(resources["limits"][kind]), name


@pytest.mark.parametrize("stack", STACKS)
def test_installer_follows_the_contract(stack: str) -> None:
    for name, ds in _installers(stack):
        _installer_follows_the_contract(name, ds)


def _installer_follows_the_contract(name: str, ds: dict[str, Any]) -> None:
    pod = _pod(ds)
    (container,) = pod["containers"]
    assert container["command"] == [INSTALLER_BIN, "install"]
    assert container["readinessProbe"]["exec"]["command"] == [INSTALLER_BIN, "probe"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HOST_ROOT"]["value"] == "/host"
    assert env["MODULE_TYPE"]["value"] in ("auto", "open", "proprietary")
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # the lock holder's name in "the node lock is held by ..." messages
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["MODULE_PARAMETERS_FILE"]["value"] == "/etc/nvidia-installer/modprobe.conf"
    assert _mounts(ds) == {
        ("/opt/nvidia-installer", "/host/opt/nvidia-installer", False, "DirectoryOrCreate"),
        ("/run/nvidia", "/host/run/nvidia", False, "DirectoryOrCreate"),
        # the installer's own lock and readiness file, apart from the GPU Operator's /run/nvidia/validations
        ("/run/nvidia-installer", "/host/run/nvidia-installer", False, "DirectoryOrCreate"),
        ("/lib/modules", "/host/lib/modules", True, "Directory"),
        ("/dev", "/dev", False, "Directory"),
        ("cm:nvidia-installer-modprobe", "/etc/nvidia-installer", True, "configMap"),
    }
    assert pod["hostPID"] is True
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert "pulumi.com/skipAwait" not in ds["metadata"].get("annotations", {})


@pytest.mark.parametrize("stack", STACKS)
def test_device_plugin_follows_the_contract(stack: str) -> None:
    for name, ds in _plugins(stack):
        _device_plugin_follows_the_contract(name, ds)


def _device_plugin_follows_the_contract(name: str, ds: dict[str, Any]) -> None:
    pod = _pod(ds)
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:5] == [
        "-host-path=/opt/nvidia-installer/driver",
        "-container-path=/usr/local/nvidia",
        "-plugin-directory=/device-plugin",
        "-host-vulkan-icd-path=/opt/nvidia-installer/driver/vulkan/icd.d",
        "-enable-health-monitoring=false",
    ]
    sharing = args[5:] == ["-gpu-config=/etc/nvidia/gpu_config.json"]
    assert args[5:] == [] or sharing
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"GOMAXPROCS": "1", "LD_LIBRARY_PATH": "/usr/local/nvidia/lib"}
    expected = {
        ("/var/lib/kubelet/device-plugins", "/device-plugin", False, "Directory"),
        ("/dev", "/dev", True, "Directory"),  # read-only: the plugin opens device nodes, never makes one
        ("/opt/nvidia-installer/driver", "/usr/local/nvidia", True, "Directory"),
        # the gate: a File-typed hostPath keeps the pod from starting before the driver is ready
        ("/run/nvidia-installer/driver-ready", "/run/nvidia-installer/driver-ready", True, "File"),
    }
    if sharing:
        expected.add(("cm:nvidia-device-plugin", "/etc/nvidia", True, "configMap"))
    assert _mounts(ds) == expected
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert "hostPID" not in pod
