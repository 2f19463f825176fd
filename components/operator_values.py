"""The Helm values of NVIDIA's GPU Operator chart for one stack, and the objects they refer to (the
operator's namespace, the device plugin's time-slicing ConfigMap). Pure functions, no resources: the
program exports the values (`gpuOperatorValues`) and hands them to the Helm release, the offline render
writes them next to the manifests, and the tests read them from here.

Chart keys as read in NVIDIA/gpu-operator, deployments/gpu-operator/values.yaml at commit d7413be (the
v24.6 line: device plugin v0.16.1, container toolkit v1.16.1) and templates/clusterpolicy.yaml; the
bundled Node Feature Discovery subchart's `worker.affinity` in its templates/worker.yaml. Every key
produced here is listed in CHART_VALUE_PATHS, and `check` refuses any other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from components import specs
from components.operator_config import GpuOperatorConfig
from components.selection import Requirement

# The driver root the node installer bind-mounts (docs/node.md); the operator's toolkit, validator and
# device plugin look for nvidia-smi, libnvidia-ml.so.1 and the GSP firmware under it.
DRIVER_INSTALL_DIR = "/run/nvidia/driver"
# Garden Linux's /usr is read-only, so the toolkit cannot use the chart's default /usr/local/nvidia; the
# Garden Linux project's own operator values install it to /opt/nvidia as well.
TOOLKIT_INSTALL_DIR = "/opt/nvidia"
# The device plugin's config: the key of the ConfigMap every node uses (devicePlugin.config.default;
# without it the operator applies the config to no node until one is labelled).
PLUGIN_CONFIG_KEY = "nvidia-installer"
TIME_SLICING_NAME = "nvidia-installer-time-slicing"
# NVIDIA's install guide: the operands are privileged, so a namespace under Pod Security Admission must
# admit privileged pods.
NAMESPACE_LABELS = {"pod-security.kubernetes.io/enforce": "privileged"}

# Paths (dot-joined) of the chart values this program sets; each exists in the chart version named above.
CHART_VALUE_PATHS = frozenset(
    {
        "driver.enabled",
        "hostPaths.driverInstallDir",
        "toolkit.enabled",
        "toolkit.installDir",
        "cdi.enabled",
        "cdi.default",
        "devicePlugin.enabled",
        "devicePlugin.config.name",
        "devicePlugin.config.default",
        "gfd.enabled",
        "dcgmExporter.enabled",
        "mig.strategy",
        "migManager.enabled",
        "nfd.enabled",
        "node-feature-discovery.worker.affinity",
    }
)
# Values whose whole object is one setting (not walked into).
_OPAQUE = frozenset({"node-feature-discovery.worker.affinity"})


class OperatorValuesError(ValueError):
    """The values contradict the chart or the stack: a bug in this module, never a user setting."""


def time_slicing_config(replicas: int, mig_strategy: str) -> str:
    """The device plugin's config file (k8s-device-plugin `version: v1`): every GPU advertised `replicas`
    times; the MIG strategy repeated so the file agrees with the chart's mig.strategy."""
    config = {
        "version": "v1",
        "flags": {"migStrategy": mig_strategy},
        "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": replicas}]}},
    }
    text: str = yaml.safe_dump(config, sort_keys=True)
    return text


def time_slicing_config_map(settings: GpuOperatorConfig) -> dict[str, Any] | None:
    """The ConfigMap `devicePlugin.config.name` names (in the operator's namespace), or None without
    time-slicing. Its name carries a hash of the content: the operator does not watch a ConfigMap, but a
    new name changes the ClusterPolicy, and that rolls the device plugin."""
    if settings.time_slicing is None:
        return None
    data = {PLUGIN_CONFIG_KEY: time_slicing_config(settings.time_slicing.replicas, settings.mig.strategy)}
    object_labels = specs.labels(TIME_SLICING_NAME, TIME_SLICING_NAME, "device-plugin-config")
    return specs.config_map(TIME_SLICING_NAME, settings.namespace, object_labels, data)


def namespace(settings: GpuOperatorConfig) -> dict[str, Any]:
    """The operator's namespace, admitting privileged pods."""
    object_labels = {
        **specs.labels(settings.namespace, settings.namespace, "gpu-operator"),
        **NAMESPACE_LABELS,
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.namespace, "labels": object_labels},
    }


def values(
    settings: GpuOperatorConfig,
    selections: Sequence[Sequence[Requirement]],
    plugin_config_map: str | None,
) -> dict[str, Any]:
    """The chart's values: the driver is this project's (disabled in the operator, found at
    DRIVER_INSTALL_DIR), the operands from the stack, and, with the bundled NFD, its worker only on the
    targets' nodes (one affinity term per target): the operator places its operands on the nodes NFD
    labelled as having an NVIDIA PCI device, so nodes no target covers get none."""
    toolkit: dict[str, Any] = {"enabled": settings.toolkit}
    if settings.toolkit:
        toolkit["installDir"] = TOOLKIT_INSTALL_DIR
    device_plugin: dict[str, Any] = {"enabled": True}
    if plugin_config_map is not None:
        device_plugin["config"] = {"name": plugin_config_map, "default": PLUGIN_CONFIG_KEY}
    bundled_nfd = settings.nfd == "bundled"
    result: dict[str, Any] = {
        "driver": {"enabled": False},
        "hostPaths": {"driverInstallDir": DRIVER_INSTALL_DIR},
        "toolkit": toolkit,
        "cdi": {"enabled": settings.cdi, "default": settings.cdi},
        "devicePlugin": device_plugin,
        "gfd": {"enabled": True},
        "dcgmExporter": {"enabled": settings.dcgm_exporter},
        "mig": {"strategy": settings.mig.strategy},
        "migManager": {"enabled": settings.mig.manager},
        "nfd": {"enabled": bundled_nfd},
    }
    if bundled_nfd:
        result["node-feature-discovery"] = {"worker": {"affinity": specs.node_affinity(selections)}}
    return result


def leaf_paths(document: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """The dot-joined paths of every setting in a values document (objects in _OPAQUE count as one)."""
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path not in _OPAQUE:
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


def check(document: Mapping[str, Any], selections: Sequence[Sequence[Requirement]]) -> None:
    """Raises OperatorValuesError unless the values use only known chart keys, leave the driver to this
    project, and (with the bundled NFD) select exactly the targets' nodes."""
    unknown = sorted(set(leaf_paths(document)) - CHART_VALUE_PATHS)
    if unknown:
        raise OperatorValuesError(f"keys the chart does not have: {', '.join(unknown)}")
    if document["driver"]["enabled"] is not False:
        raise OperatorValuesError("driver.enabled must be false: the driver is this project's")
    if document["hostPaths"]["driverInstallDir"] != DRIVER_INSTALL_DIR:
        raise OperatorValuesError(f"hostPaths.driverInstallDir must be {DRIVER_INSTALL_DIR}")
    if document["migManager"]["enabled"] and document["mig"]["strategy"] == "none":
        raise OperatorValuesError("migManager.enabled with mig.strategy none")
    if document["nfd"]["enabled"]:
        affinity = document["node-feature-discovery"]["worker"]["affinity"]
        if affinity != specs.node_affinity(selections):
            raise OperatorValuesError("the NFD worker's affinity is not the targets' node selection")
    elif "node-feature-discovery" in document:
        raise OperatorValuesError("node-feature-discovery settings while nfd.enabled is false")
