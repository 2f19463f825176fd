"""The rules of the nvidia-installer policy pack, importable without starting the pack.

Each rule is a `pulumi_policy.ResourceValidationPolicy` whose `validate` reads the resource's inputs
(`args.props`, camelCase as the Kubernetes provider receives them) and its configuration (defaults below,
overridden with `pulumi preview --policy-pack policy --policy-pack-config FILE`). The pack's entry point
(`policy/__main__.py`) only hands `POLICIES` to a PolicyPack, which starts a gRPC server and never
returns: tests import this module, never that one.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

# How the policy SDK shows a value that is not known during a preview (an image digest not built yet).
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
_DIGEST_RE = re.compile(r"@sha256:[a-f0-9]{64}$")
_CREDENTIAL_NAME_RE = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|API_?KEY", re.IGNORECASE)

# What the project's own DaemonSets need (components/specs.py; a test keeps the two in step).
DEFAULT_PRIVILEGED = [
    {"workload": "nvidia-installer-*", "container": "nvidia-installer",
     "reason": "loads the NVIDIA kernel modules into the host kernel and creates /dev/nvidia* nodes"},
    {"workload": "nvidia-device-plugin", "container": "nvidia-device-plugin",
     "reason": "opens /dev/nvidia* through NVML, which the device cgroup refuses to an unprivileged "
               "container (as GKE's own manifest; docs/privileges.md)"},
]  # fmt: skip
DEFAULT_HOST_PATHS = [
    "/opt/nvidia-installer",
    "/run/nvidia",
    "/run/nvidia-installer",
    "/lib/modules",
    "/dev",
    "/var/lib/kubelet/device-plugins",
]
DEFAULT_TAG_IMAGES = [
    {"repository": "gcr.io/gke-release/nvidia-gpu-device-plugin",
     "reason": "GKE publishes it by tag; mirror it and set devicePlugin.image to <mirror>@sha256:<digest>"},
]  # fmt: skip
DEFAULT_NAMESPACES = ["kube-system"]
NODE_CRITICAL = "system-node-critical"

_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "DaemonSet": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def _kind(args: ResourceValidationArgs) -> str:
    return args.resource_type.rsplit(":", 1)[-1]


def _name(props: Mapping[str, Any]) -> str:
    name = (props.get("metadata") or {}).get("name")
    return name if isinstance(name, str) else "<unnamed>"


def pod_spec(args: ResourceValidationArgs) -> Mapping[str, Any] | None:
    """The pod spec of a workload resource, None for anything else."""
    if not args.resource_type.startswith("kubernetes:"):
        return None
    path = _TEMPLATE_PATHS.get(_kind(args))
    node: Any = args.props
    for key in path or ():
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if path and isinstance(node, Mapping) else None


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Init containers, then containers."""
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if isinstance(container, Mapping):
                yield container


def _config_list(args: ResourceValidationArgs, key: str, default: list[Any]) -> list[Any]:
    """A list setting of the rule's configuration; its default when the pack runs without one."""
    value = args.get_config().get(key, default)
    return list(value) if isinstance(value, list) else list(default)


# --- the rules -----------------------------------------------------------------------------------------


def _images_pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = pod_spec(args)
    if spec is None:
        return
    allowed = {entry["repository"] for entry in _config_list(args, "tagImagesAllowed", DEFAULT_TAG_IMAGES)}
    for container in containers(spec):
        image = container.get("image")
        if not isinstance(image, str) or image == UNKNOWN or _DIGEST_RE.search(image):
            continue  # unknown until the image is built, or pinned
        repository = image.rsplit("@", 1)[0]
        repository = repository.rsplit(":", 1)[0] if ":" in repository.rsplit("/", 1)[-1] else repository
        if repository not in allowed:
            report(
                f"{_kind(args)} {_name(args.props)}: container {container.get('name')!r} uses {image!r}, "
                "not pinned by digest; use <image>@sha256:<digest> (or allow the repository in "
                "tagImagesAllowed with a reason)",
                None,
            )


def _privileged_allowed(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = pod_spec(args)
    if spec is None:
        return
    workload = _name(args.props)
    allowed = [
        entry
        for entry in _config_list(args, "privilegedAllowed", DEFAULT_PRIVILEGED)
        if fnmatch.fnmatchcase(workload, entry["workload"]) and entry.get("reason")
    ]
    for container in containers(spec):
        security = container.get("securityContext") or {}
        if security.get("privileged") is not True:
            continue
        if not any(entry["container"] == container.get("name") for entry in allowed):
            report(
                f"{_kind(args)} {workload}: container {container.get('name')!r} is privileged without an "
                "entry in privilegedAllowed (workload, container, reason)",
                None,
            )


def _daemonset_node_critical(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "kubernetes:apps/v1:DaemonSet":
        return
    spec = pod_spec(args) or {}
    name = _name(args.props)
    priority = spec.get("priorityClassName")
    if priority != NODE_CRITICAL:
        report(f"DaemonSet {name}: priorityClassName is {priority!r}; expected {NODE_CRITICAL!r}", None)
    namespace = (args.props.get("metadata") or {}).get("namespace")
    allowed = _config_list(args, "namespaces", DEFAULT_NAMESPACES)
    if namespace not in allowed:
        report(f"DaemonSet {name}: namespace {namespace!r} is not one of {allowed}", None)


def _looks_like_registry_auth(value: Any) -> bool:
    if not isinstance(value, str) or "auths" not in value:
        return False
    try:
        document = json.loads(value)
    except ValueError:
        return False
    return isinstance(document, dict) and "auths" in document


def _credentials_in_secrets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == "kubernetes:core/v1:Secret":
        return
    for key in ("data", "binaryData", "stringData"):
        for data_key, value in (args.props.get(key) or {}).items():
            if data_key == ".dockerconfigjson" or _looks_like_registry_auth(value):
                report(f"{_kind(args)} {_name(args.props)}: {key}.{data_key} holds registry credentials; "
                       "keep them in a kubernetes.io/dockerconfigjson Secret", None)  # fmt: skip
    spec = pod_spec(args)
    for container in containers(spec or {}):
        for env in container.get("env") or []:
            if _CREDENTIAL_NAME_RE.search(str(env.get("name", ""))) and "value" in env:
                report(f"{_kind(args)} {_name(args.props)}: container {container.get('name')!r} sets "
                       f"{env['name']} as a literal value; use valueFrom.secretKeyRef", None)  # fmt: skip


def _requests_everywhere(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = pod_spec(args)
    if spec is None:
        return
    for container in containers(spec):
        requests = (container.get("resources") or {}).get("requests") or {}
        missing = [r for r in ("cpu", "memory") if r not in requests]
        if missing:
            report(f"{_kind(args)} {_name(args.props)}: container {container.get('name')!r} has no "
                   f"{' or '.join(missing)} request", None)  # fmt: skip


def _is_within(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")


def _host_paths_allowed(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = pod_spec(args)
    if spec is None:
        return
    allowed = _config_list(args, "hostPaths", DEFAULT_HOST_PATHS)
    for volume in spec.get("volumes") or []:
        path = (volume.get("hostPath") or {}).get("path")
        if isinstance(path, str) and not any(_is_within(path, root) for root in allowed):
            report(f"{_kind(args)} {_name(args.props)}: hostPath {path!r} (volume {volume.get('name')!r}) "
                   f"is not within {allowed}", None)  # fmt: skip


def _schema(key: str, default: list[Any], item: Mapping[str, Any]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={key: {"type": "array", "items": dict(item), "default": default}})


_ENTRY = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": {"type": "string", "minLength": 1}},
}


def _policy(
    name: str, description: str, validate: Callable[[ResourceValidationArgs, ReportViolation], None],
    schema: PolicyConfigSchema | None = None,
) -> ResourceValidationPolicy:  # fmt: skip
    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=schema,
    )


POLICIES: list[Policy] = [
    _policy("images-pinned-by-digest", "Every container image is pinned by digest.", _images_pinned,
            _schema("tagImagesAllowed", DEFAULT_TAG_IMAGES, _ENTRY)),
    _policy("privileged-only-where-allowed",
            "A privileged container needs an allow-list entry with its reason.", _privileged_allowed,
            _schema("privilegedAllowed", DEFAULT_PRIVILEGED, _ENTRY)),
    _policy("daemonsets-node-critical-in-allowed-namespace",
            "Every DaemonSet is system-node-critical, in an allowed namespace.", _daemonset_node_critical,
            _schema("namespaces", DEFAULT_NAMESPACES, {"type": "string"})),
    _policy("registry-credentials-only-in-secrets",
            "Registry credentials and secret-looking variables live only in Secrets.",
            _credentials_in_secrets),
    _policy("requests-on-every-container", "Every container requests CPU and memory.", _requests_everywhere),
    _policy("host-paths-allowed", "hostPath volumes only at or below the allowed paths.", _host_paths_allowed,
            _schema("hostPaths", DEFAULT_HOST_PATHS, {"type": "string"})),
]  # fmt: skip
