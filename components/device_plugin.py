"""DevicePlugin: GKE's NVIDIA device plugin on the union of all targets' nodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import specs
from components.config import DevicePluginConfig
from components.selection import Requirement


@dataclass(frozen=True)
class DevicePluginArgs:
    """The plugin settings, every target's node selection (one term each) and the pull secret."""

    namespace: str
    settings: DevicePluginConfig
    selections: Sequence[Sequence[Requirement]]
    pull_secret_name: pulumi.Input[str] | None


class DevicePlugin(pulumi.ComponentResource):
    """The device-plugin DaemonSet and, with time-sharing, its gpu_config.json ConfigMap."""

    daemonset_name: str
    config_map_name: str | None

    def __init__(self, name: str, args: DevicePluginArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nvidia-installer:device_plugin:DevicePlugin", name, None, opts)
        depends: list[pulumi.Resource] = []
        self.config_map_name = None
        sharing = args.settings.time_sharing
        if sharing is not None:
            data = {specs.GPU_CONFIG_FILE: specs.gpu_config_json(sharing.max_shared_clients_per_gpu)}
            object_labels = specs.labels(specs.DEVICE_PLUGIN_NAME, specs.DEVICE_PLUGIN_NAME, "device-plugin")
            cm_spec = specs.config_map(specs.DEVICE_PLUGIN_NAME, args.namespace, object_labels, data)
            self.config_map_name = cm_spec["metadata"]["name"]
            depends.append(
                k8s.core.v1.ConfigMap(
                    f"{name}-config",
                    metadata=cm_spec["metadata"],
                    data=cm_spec["data"],
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
        ds_spec = specs.device_plugin_daemonset(
            namespace=args.namespace,
            image=args.settings.image,
            selections=args.selections,
            gpu_config_map=self.config_map_name,
            pull_secret_name=args.pull_secret_name,
        )
        self.daemonset_name = ds_spec["metadata"]["name"]
        k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata=ds_spec["metadata"],
            spec=ds_spec["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )
        self.register_outputs(
            {"daemonset_name": self.daemonset_name, "config_map_name": self.config_map_name}
        )
