"""Installer: the DaemonSet that loads one target's driver on that target's nodes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import specs
from components.config import TargetConfig


@dataclass(frozen=True)
class InstallerArgs:
    """One target, the image to run (digest-pinned when built here) and the shared pod settings."""

    target: TargetConfig
    namespace: str
    image: pulumi.Input[str]
    module_parameters: Mapping[str, Sequence[str]]
    pull_secret_name: pulumi.Input[str] | None


class Installer(pulumi.ComponentResource):
    """A module-parameters ConfigMap and the installer DaemonSet of one target."""

    daemonset_name: str
    config_map_name: str

    def __init__(self, name: str, args: InstallerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nvidia-installer:installer:Installer", name, None, opts)
        target = args.target
        instance_labels = specs.labels(specs.INSTALLER_NAME, target.name, "driver-installer")
        data = {specs.MODULE_PARAMETERS_FILE: specs.modprobe_conf(args.module_parameters)}
        self.config_map_name = specs.content_name(f"{specs.INSTALLER_NAME}-{target.name}", data)
        cm_spec = specs.config_map(self.config_map_name, args.namespace, instance_labels, data)
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-modprobe",
            metadata=cm_spec["metadata"],
            data=cm_spec["data"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        ds_spec = specs.installer_daemonset(
            target=target.name,
            namespace=args.namespace,
            image=args.image,
            module_type=target.module_type,
            selection=target.selection(),
            parameters_config_map=self.config_map_name,
            pull_secret_name=args.pull_secret_name,
            version_labels={
                "nvidia-installer/driver-version": target.driver_version,
                "nvidia-installer/gl-version": target.gl_version,
                "nvidia-installer/kernel-flavour": target.flavour,
            },
        )
        self.daemonset_name = ds_spec["metadata"]["name"]
        k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata=ds_spec["metadata"],
            spec=ds_spec["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[config_map]),
        )
        self.register_outputs(
            {"daemonset_name": self.daemonset_name, "config_map_name": self.config_map_name}
        )
