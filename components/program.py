"""Wires the components for one validated StackConfig; the same code runs under `pulumi up` and under
the in-process mocks of the offline render and the tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import specs
from components.cluster import cluster_provider
from components.config import StackConfig, TargetConfig
from components.device_plugin import DevicePlugin, DevicePluginArgs
from components.driver_image import DriverImage, DriverImageArgs
from components.gpu_operator import GpuOperator, GpuOperatorArgs
from components.image_key import ImageKey
from components.installer import Installer, InstallerArgs, InstallerIdentity
from components.pinning import unpinned_images
from components.pull_secret import PullSecret, PullSecretArgs


def _pull_secret(config: StackConfig, opts: pulumi.ResourceOptions) -> pulumi.Output[str] | None:
    registry = config.registry
    if registry is None or registry.username is None or config.registry_password is None:
        return None  # nothing to authenticate with (e.g. a public or node-configured registry)
    args = PullSecretArgs(
        namespace=config.namespace,
        server=registry.server,
        username=registry.username,
        password=config.registry_password.output(),
    )
    return PullSecret("registry", args, opts=opts).secret_name


def _built_images(config: StackConfig) -> dict[ImageKey, pulumi.Input[str]]:
    registry = config.registry
    assert registry is not None  # StackConfig requires a registry when building
    password = config.registry_password.output() if config.registry_password is not None else None
    images: dict[ImageKey, pulumi.Input[str]] = {}
    for key in config.image_keys():
        args = DriverImageArgs(key=key, registry=registry, password=password, settings=config.image)
        image = DriverImage(f"driver-{specs.image_tag(key)}", args)
        images[key] = image.repo_digest
    return images


def _prebuilt_image(target: TargetConfig) -> str:
    assert target.image is not None  # StackConfig requires an image per target when not building
    return target.image


def _module_parameters(config: StackConfig, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """The modprobe.conf ConfigMap every installer mounts (always present, may be empty); its name
    carries a hash of the content, so a change is a new ConfigMap that new installer pods pick up."""
    data = {specs.MODULE_PARAMETERS_FILE: specs.modprobe_conf(config.module_parameters.by_module())}
    labels = specs.labels(specs.INSTALLER_NAME, "module-parameters", "driver-installer")
    spec = specs.config_map(f"{specs.INSTALLER_NAME}-modprobe", config.namespace, labels, data)
    name: str = spec["metadata"]["name"]
    config_map = k8s.core.v1.ConfigMap(
        "module-parameters", metadata=spec["metadata"], data=spec["data"], opts=opts
    )
    # Read back from the resource, so every installer DaemonSet depends on its creation.
    return config_map.metadata.apply(lambda meta: meta.name or name)


def _mark_uncovered_nodes(uncovered: Mapping[str, str], opts: pulumi.ResourceOptions) -> None:
    """A server-side-apply patch per GPU node no target covers (status `uncovered`, the message as an
    annotation); a node that a target covers again loses its patch, and with it the mark."""
    for node, message in sorted(uncovered.items()):
        spec = specs.uncovered_node_patch(node, message)
        k8s.core.v1.NodePatch(f"uncovered-{node}", metadata=spec["metadata"], opts=opts)


def run(config: StackConfig, uncovered: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Registers every resource of the stack and returns the stack outputs. `uncovered`: GPU nodes no
    target covers (node name -> message, components/cluster_nodes.py), marked on the nodes themselves."""
    for warning in unpinned_images(config):
        pulumi.log.warn(warning)
    for target in config.targets:
        note = target.module_type_note() if config.image.build else None
        if note is not None:
            pulumi.log.info(note)
    provider = cluster_provider(config)
    k8s_opts = pulumi.ResourceOptions(providers=[provider])
    pull_secret_name = _pull_secret(config, k8s_opts)
    _mark_uncovered_nodes(uncovered or {}, k8s_opts)
    parameters = _module_parameters(config, k8s_opts)
    images = _built_images(config) if config.image.build else {}
    outputs: dict[str, Any] = {}
    installers: list[pulumi.Resource] = []
    # The pods' ServiceAccount must exist before the DaemonSet controller creates them.
    identity = InstallerIdentity(
        "installer-identity", config.namespace, drain=config.rollout.drain.evicts, opts=k8s_opts
    )
    installer_opts = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[identity]))
    for target in config.targets:
        image = images[target.image_key()] if config.image.build else _prebuilt_image(target)
        installer = Installer(
            f"installer-{target.name}",
            InstallerArgs(
                target=target,
                namespace=config.namespace,
                image=image,
                parameters_config_map=parameters,
                pull_secret_name=pull_secret_name,
                rollout=config.rollout,
            ),
            opts=installer_opts,
        )
        installers.append(installer)
        outputs[target.name] = {
            "image": image,
            "daemonSet": installer.daemonset_name,
            # "Which driver runs where": the node selection, as kubectl's label-selector syntax reads.
            "driverVersion": target.driver_version,
            "nodeSelection": " AND ".join(r.describe() for r in target.selection()),
            "moduleTypes": target.built_module_type() if config.image.build else target.node_module_type(),
        }
    selections = [t.selection() for t in config.targets]
    operator = config.operator_settings()
    if operator is not None:
        # NVIDIA's GPU Operator brings its own device plugin: no GKE plugin DaemonSet in this mode.
        gpu_operator = GpuOperator(
            "gpu-operator",
            GpuOperatorArgs(settings=operator, selections=selections, installers=installers),
            opts=k8s_opts,
        )
        result: dict[str, Any] = {"targets": outputs, "gpuOperatorValues": gpu_operator.values}
        if gpu_operator.release_name is not None:
            result["gpuOperatorRelease"] = f"{operator.namespace}/{gpu_operator.release_name}"
        return result
    plugin = DevicePlugin(
        "device-plugin",
        DevicePluginArgs(
            namespace=config.namespace,
            settings=config.device_plugin,
            selections=selections,
            pull_secret_name=pull_secret_name,
        ),
        opts=k8s_opts,
    )
    return {"targets": outputs, "devicePluginDaemonSet": plugin.daemonset_name}
