"""Installer: the DaemonSet that loads one target's driver on that target's nodes."""

from __future__ import annotations

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
    parameters_config_map: pulumi.Input[str]
    pull_secret_name: pulumi.Input[str] | None


class Installer(pulumi.ComponentResource):
    """The installer DaemonSet of one target."""

    daemonset_name: str

    def __init__(self, name: str, args: InstallerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nvidia-installer:installer:Installer", name, None, opts)
        target = args.target
        ds_spec = specs.installer_daemonset(
            target=target.name,
            namespace=args.namespace,
            image=args.image,
            module_type=target.node_module_type(),
            selection=target.selection(),
            parameters_config_map=args.parameters_config_map,
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
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"daemonset_name": self.daemonset_name})
