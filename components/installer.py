"""Installer: the DaemonSet that loads one target's driver on that target's nodes, and the identity all
installers share (ServiceAccount, RBAC and the admission policy that holds it to its own node)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components import specs
from components.config import RolloutConfig, TargetConfig


@dataclass(frozen=True)
class InstallerArgs:
    """One target, the image to run (digest-pinned when built here) and the shared pod settings."""

    target: TargetConfig
    namespace: str
    image: pulumi.Input[str]
    parameters_config_map: pulumi.Input[str]
    pull_secret_name: pulumi.Input[str] | None
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


def rollout_timeouts(rollout: RolloutConfig) -> pulumi.CustomTimeouts:
    """How long `pulumi up` follows the DaemonSet's rollout (create: every node ready; update: every node
    runs a ready pod of the new template) before it fails the update. Deletion keeps the provider's
    default."""
    limit = f"{rollout.timeout_minutes}m"
    return pulumi.CustomTimeouts(create=limit, update=limit)


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
            max_unavailable=args.rollout.max_unavailable,
            drain_timeout_minutes=args.rollout.drain.timeout_minutes if args.rollout.drain.evicts else None,
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
            opts=pulumi.ResourceOptions(parent=self, custom_timeouts=rollout_timeouts(args.rollout)),
        )
        self.register_outputs({"daemonset_name": self.daemonset_name})


# The Kubernetes provider's resource class of each kind of the installer's identity.
_IDENTITY_KINDS: dict[str, type[pulumi.CustomResource]] = {
    "ServiceAccount": k8s.core.v1.ServiceAccount,
    "ClusterRole": k8s.rbac.v1.ClusterRole,
    "ClusterRoleBinding": k8s.rbac.v1.ClusterRoleBinding,
    "ValidatingAdmissionPolicy": k8s.admissionregistration.v1.ValidatingAdmissionPolicy,
    "ValidatingAdmissionPolicyBinding": k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding,
}


class InstallerIdentity(pulumi.ComponentResource):
    """The installers' ServiceAccount, its ClusterRole (patch nodes, create events; with the drain opt-in
    also get nodes, list pods, evict) and binding, and the ValidatingAdmissionPolicies with their bindings
    that let it change only its own node and evict only its pods (specs.installer_access_objects;
    docs/privileges.md)."""

    def __init__(
        self, name: str, namespace: str, drain: bool = False, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("nvidia-installer:installer:InstallerIdentity", name, None, opts)
        previous: pulumi.Resource | None = None
        seen: set[str] = set()
        for obj in specs.installer_access_objects(namespace, drain):
            kind = obj["kind"]
            # The first object of a kind keeps its resource name of before; another (the eviction policy
            # and its binding) is told apart by the end of its object name ("-own-pods").
            suffix = obj["metadata"]["name"].rsplit("-", 2)[-2:] if kind in seen else []
            seen.add(kind)
            # The SDK's keyword arguments are snake_case (roleRef -> role_ref); nested dicts stay as they are.
            fields = {_snake(key): value for key, value in obj.items() if key not in ("apiVersion", "kind")}
            # In order: the binding after its policy, the role binding after its role.
            depends = [previous] if previous is not None else []
            previous = _IDENTITY_KINDS[kind](
                "-".join([name, *suffix, _kebab(kind)]),
                **fields,
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
            )
        self.register_outputs({})


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _kebab(kind: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in kind).lstrip("-")
