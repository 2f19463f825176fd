"""The Kubernetes objects as plain dicts: the single description used by the components, the offline
render and the tests. Pure functions, no resources. Values may be Pulumi Inputs (an image digest, a
secret), which the Kubernetes provider resolves; everything else is literal.

Pod layout, paths and flags follow docs/architecture.md (the contract with image/ and image/node/).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi import Input

from components.image_key import ImageKey
from components.selection import Requirement

PART_OF = "nvidia-installer"
INSTALLER_NAME = "nvidia-installer"
DEVICE_PLUGIN_NAME = "nvidia-device-plugin"
PULL_SECRET_NAME = "nvidia-installer-registry"
PRIORITY_CLASS = "system-node-critical"
# The installer's identity: its pods' service account, the one object that may talk to the API server
# (node state labels and events, docs/node.md "What the installer reports"; docs/privileges.md).
INSTALLER_SERVICE_ACCOUNT = "nvidia-installer"
# The prefix of every label this project sets (on its DaemonSets and, by the installer, on its node).
# image/node/nvidia-installer's NODE_LABEL_PREFIX is the same string (a contract test holds them equal).
LABEL_PREFIX = "nvidia-installer/"
# The node-name extra of a bound service account token (Kubernetes 1.30+: ServiceAccountTokenPodNodeInfo,
# GA in 1.32): the node of the pod the kubelet requested the token for.
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"

# Installer paths (docs/architecture.md, "Installer pod").
INSTALLER_BIN = "/opt/nvidia-installer/bin/nvidia-installer"
MODULE_PARAMETERS_DIR = "/etc/nvidia-installer"
MODULE_PARAMETERS_FILE = "modprobe.conf"
HOST_ROOT = "/host"

# Device-plugin paths (docs/architecture.md, "Device-plugin pod"; the flags are those of GKE's plugin,
# GoogleCloudPlatform/container-engine-accelerators).
DEVICE_PLUGIN_BIN = "/usr/bin/nvidia-gpu-device-plugin"
HOST_DRIVER_DIR = "/opt/nvidia-installer/driver"
CONTAINER_DRIVER_DIR = "/usr/local/nvidia"
# The installer's own state: node lock, lock holder, readiness file (not /run/nvidia/validations, which
# belongs to NVIDIA's GPU Operator and whose driver-ready its components source as shell).
INSTALLER_STATE_DIR = "/run/nvidia-installer"
DRIVER_READY_FILE = f"{INSTALLER_STATE_DIR}/driver-ready"
GPU_CONFIG_DIR = "/etc/nvidia"
GPU_CONFIG_FILE = "gpu_config.json"

# Container security contexts (docs/privileges.md). A privileged container gets every capability, no
# seccomp filter and privilege escalation whatever else is set (the API server refuses
# allowPrivilegeEscalation: false beside privileged), so nothing else is set where it would have no effect.
INSTALLER_SECURITY_CONTEXT: dict[str, Any] = {"privileged": True}
DEVICE_PLUGIN_SECURITY_CONTEXT: dict[str, Any] = {"privileged": True, "readOnlyRootFilesystem": True}

# Requests: what an idle installer (a shell waiting on sleep) and the plugin use. Installer limits: unpacking
# the payload (zstd, ~30 MB of modules plus ~150 MB of user space) is page-cache heavy and runs once per
# driver change, so 1 CPU / 1 GiB keeps it from being OOM-killed or throttled for minutes.
INSTALLER_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
# GKE's own manifests give the plugin 50m/10-20Mi; GOMAXPROCS=1 keeps it small. Headroom for NVML.
DEVICE_PLUGIN_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "20Mi"},
    "limits": {"cpu": "100m", "memory": "64Mi"},
}


def selector_labels(app: str, instance: str) -> dict[str, str]:
    """The immutable DaemonSet selector: changing it would replace the DaemonSet (the
    Kubernetes provider replaces a DaemonSet whose selector changes)."""
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": instance}


def labels(app: str, instance: str, component: str) -> dict[str, str]:
    """The recommended app.kubernetes.io labels of every object."""
    return {
        **selector_labels(app, instance),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def content_name(base: str, data: Mapping[str, str]) -> str:
    """`<base>-<hash of data>`: a ConfigMap whose content changes gets a new name, so the pods that
    mount it see the change (and a stable, readable name otherwise)."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return f"{base}-{digest[:8]}"


def image_tag(key: ImageKey) -> str:
    """The tag of one driver image: every input of the build is visible in it."""
    return f"{key.driver_version}-gl{key.gl_version}-{key.flavour}-{key.arch}-{key.module_type}"


def image_name(server: str, repository: str, tag: str) -> str:
    """`<server>/<repository>:<tag>`."""
    return f"{server}/{repository}:{tag}"


def modprobe_conf(parameters: Mapping[str, Sequence[str]]) -> str:
    """modprobe.conf(5) text: one `options <module> <params>` line per module that has parameters."""
    lines = [f"options {module} {' '.join(params)}" for module, params in parameters.items() if params]
    return "".join(f"{line}\n" for line in lines)


def gpu_config_json(max_shared_clients: int) -> str:
    """GKE device plugin's gpu_config.json for time-sharing (its GPUConfig struct, field names as GKE's)."""
    config = {
        "GPUSharingConfig": {
            "GPUSharingStrategy": "time-sharing",
            "MaxSharedClientsPerGPU": max_shared_clients,
        }
    }
    return json.dumps(config, sort_keys=True)


def dockerconfigjson(server: str, username: str, password: str) -> str:
    """The base64 `.dockerconfigjson` value of a kubernetes.io/dockerconfigjson Secret."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    body = {"auths": {server: {"username": username, "password": password, "auth": auth}}}
    return base64.b64encode(json.dumps(body, sort_keys=True).encode()).decode()


def config_map(
    base: str, namespace: str, object_labels: Mapping[str, str], data: Mapping[str, str]
) -> dict[str, Any]:
    """A ConfigMap named `content_name(base, data)`: new content, new name, so mounting pods see it.
    Immutable: the name stands for the content, so nobody may change one under a running pod."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": content_name(base, data), "namespace": namespace, "labels": dict(object_labels)},
        "immutable": True,
        "data": dict(data),
    }


def pull_secret(name: str, namespace: str, encoded_config: Input[str]) -> dict[str, Any]:
    """The image pull Secret; `encoded_config` is the (secret) base64 .dockerconfigjson."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(INSTALLER_NAME, "registry", "registry-credentials"),
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": encoded_config},
    }


# Set by the Pulumi program (not by an installer) on a GPU node no target covers: the node itself says it
# gets no driver and what to add (docs/operations.md, "A GPU node no target covers").
UNCOVERED_STATUS = "uncovered"
UNCOVERED_ANNOTATION = f"{LABEL_PREFIX}uncovered"
UNCOVERED_FIELD_MANAGER = "nvidia-installer-coverage"


def uncovered_node_patch(node: str, message: str) -> dict[str, Any]:
    """The server-side-apply patch that marks a GPU node no target covers: status label `uncovered` and the
    coverage message as an annotation. Forced: it takes the status over from the installer that ran there
    before a Garden Linux update moved the node out of every target's selection. Its removal removes both."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "labels": {f"{LABEL_PREFIX}status": UNCOVERED_STATUS},
            "annotations": {
                UNCOVERED_ANNOTATION: message,
                "pulumi.com/patchForce": "true",
                # One field manager for the patch's whole life. Without it the provider applies an update
                # (the message names the next target index, which changes) as a new random manager, the old
                # one keeps the unchanged label, and removing the patch would leave the label behind.
                "pulumi.com/patchFieldManager": UNCOVERED_FIELD_MANAGER,
            },
        },
    }


def node_affinity(terms: Sequence[Sequence[Requirement]]) -> dict[str, Any]:
    """Required node affinity: a node must match one term (OR); inside a term every expression (AND)."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [r.as_dict() for r in term]} for term in terms]
            }
        }
    }


def _host_path(name: str, path: str, kind: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def _pod_basics(pull_secret_name: Input[str] | None) -> dict[str, Any]:
    basics: dict[str, Any] = {
        "priorityClassName": PRIORITY_CLASS,
        # GPU nodes are often tainted (nvidia.com/gpu:NoSchedule); the driver must reach every one of them.
        "tolerations": [{"operator": "Exists"}],
        # No API access unless a pod says otherwise (the installer: its own account, for its node's state).
        "automountServiceAccountToken": False,
    }
    if pull_secret_name is not None:
        basics["imagePullSecrets"] = [{"name": pull_secret_name}]
    return basics


def installer_daemonset(
    *,
    target: str,
    namespace: str,
    image: Input[str],
    module_type: str,
    selection: Sequence[Requirement],
    parameters_config_map: Input[str],
    pull_secret_name: Input[str] | None,
    version_labels: Mapping[str, str],
    max_unavailable: int | str = 1,
    drain_timeout_minutes: int | None = None,
) -> dict[str, Any]:
    """The installer DaemonSet of one target (docs/architecture.md, "Installer pod"); a driver change
    rolls over its nodes `max_unavailable` at a time (docs/operations.md). With `drain_timeout_minutes`
    (the stack's drain opt-in) an installer that finds its GPUs busy cordons its node and evicts the GPU
    pods for at most that long; without it, it only waits (and the pod template has no drain settings)."""
    name = f"{INSTALLER_NAME}-{target}"
    drain_env = []
    if drain_timeout_minutes is not None:
        drain_env = [
            {"name": "DRAIN_MODE", "value": "evict"},
            {"name": "DRAIN_TIMEOUT_SECONDS", "value": str(drain_timeout_minutes * 60)},
        ]
    container = {
        "name": "nvidia-installer",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [INSTALLER_BIN, "install"],
        "env": [
            {"name": "HOST_ROOT", "value": HOST_ROOT},
            {"name": "MODULE_TYPE", "value": module_type},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MODULE_PARAMETERS_FILE", "value": f"{MODULE_PARAMETERS_DIR}/{MODULE_PARAMETERS_FILE}"},
            *drain_env,
        ],
        "readinessProbe": {
            "exec": {"command": [INSTALLER_BIN, "probe"]},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # docs/privileges.md says why each privilege is needed. Privileged: modprobe/rmmod (CAP_SYS_MODULE),
        # mknod of /dev/nvidia* and opening them (the device cgroup), writing sysfs (firmware path). Its root
        # filesystem stays writable: nvidia-persistenced and nv-fabricmanager write under /var/run, /var/log.
        "securityContext": dict(INSTALLER_SECURITY_CONTEXT),
        "resources": INSTALLER_RESOURCES,
        "volumeMounts": [
            {"name": "host-installer", "mountPath": f"{HOST_ROOT}/opt/nvidia-installer"},
            # Bidirectional: the driver root the installer bind-mounts on /run/nvidia/driver reaches the host
            # and every pod that mounts it (NVIDIA's GPU Operator components read it there).
            {
                "name": "host-run-nvidia",
                "mountPath": f"{HOST_ROOT}/run/nvidia",
                "mountPropagation": "Bidirectional",
            },
            {"name": "host-run-installer", "mountPath": f"{HOST_ROOT}{INSTALLER_STATE_DIR}"},
            {"name": "host-modules", "mountPath": f"{HOST_ROOT}/lib/modules", "readOnly": True},
            {"name": "dev", "mountPath": "/dev"},
            {"name": "module-parameters", "mountPath": MODULE_PARAMETERS_DIR, "readOnly": True},
        ],
    }
    pod_spec = {
        **_pod_basics(pull_secret_name),
        "hostPID": True,
        "affinity": node_affinity([selection]),
        # The node's driver state in its labels and events (docs/node.md): a bound token, whose node-name
        # the admission policy (installer_node_policy) compares with the node it changes.
        "serviceAccountName": INSTALLER_SERVICE_ACCOUNT,
        "automountServiceAccountToken": True,
        "containers": [container],
        "volumes": [
            _host_path("host-installer", "/opt/nvidia-installer", "DirectoryOrCreate"),
            _host_path("host-run-nvidia", "/run/nvidia", "DirectoryOrCreate"),
            _host_path("host-run-installer", INSTALLER_STATE_DIR, "DirectoryOrCreate"),
            _host_path("host-modules", "/lib/modules", "Directory"),
            _host_path("dev", "/dev", "Directory"),
            {"name": "module-parameters", "configMap": {"name": parameters_config_map}},
        ],
    }
    object_labels = {**labels(INSTALLER_NAME, target, "driver-installer"), **version_labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        # No pulumi.com/skipAwait: `pulumi up` follows the rollout until every node runs a ready pod of this
        # template (the provider's DaemonSet await; timeout: the component's customTimeouts).
        "metadata": {"name": name, "namespace": namespace, "labels": object_labels},
        "spec": {
            "selector": {"matchLabels": selector_labels(INSTALLER_NAME, target)},
            "updateStrategy": installer_update_strategy(max_unavailable),
            # No minReadySeconds (0): the probe passes only once this image's driver is loaded and
            # nvidia-smi succeeded (docs/node.md, steps 14-15), so ready already means done; waiting longer
            # per node would only lengthen the rollout by N/width times that wait.
            "template": {"metadata": {"labels": object_labels}, "spec": pod_spec},
        },
    }


def installer_update_strategy(max_unavailable: int | str) -> dict[str, Any]:
    """Rolling update, `max_unavailable` nodes at a time, gated on the installer's readiness probe: the
    controller replaces the next node's pod only when the new pods are ready, i.e. the new driver is loaded.
    A node whose GPUs are busy holds its new pod not ready (docs/node.md, step 5), so it holds the rollout.
    maxSurge 0: the old pod is gone before the new one starts, never two installers on one node (they
    would also only queue on the node lock). maxSurge 0 is the API server's default for DaemonSets; it is
    written out so the intent does not depend on a default."""
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": 0}}


def device_plugin_args(with_gpu_config: bool) -> list[str]:
    """The plugin's flags (docs/architecture.md; GoogleCloudPlatform/container-engine-accelerators)."""
    args = [
        f"-host-path={HOST_DRIVER_DIR}",
        f"-container-path={CONTAINER_DRIVER_DIR}",
        "-plugin-directory=/device-plugin",
        f"-host-vulkan-icd-path={HOST_DRIVER_DIR}/vulkan/icd.d",
        # Health monitoring asks GCE's metadata server for the node name: off outside GKE.
        "-enable-health-monitoring=false",
    ]
    if with_gpu_config:
        args.append(f"-gpu-config={GPU_CONFIG_DIR}/{GPU_CONFIG_FILE}")
    return args


def device_plugin_daemonset(
    *,
    namespace: str,
    image: str,
    selections: Sequence[Sequence[Requirement]],
    gpu_config_map: str | None,
    pull_secret_name: Input[str] | None,
) -> dict[str, Any]:
    """The device-plugin DaemonSet on the union of all targets' nodes (docs/architecture.md)."""
    mounts: list[dict[str, Any]] = [
        {"name": "device-plugin", "mountPath": "/device-plugin"},
        # Read-only: it lists and opens device nodes, never creates one (a read-only mount does not stop
        # opening a device node for writing: Linux exempts special files from the mount's read-only flag).
        {"name": "dev", "mountPath": "/dev", "readOnly": True},
        {"name": "nvidia-driver", "mountPath": CONTAINER_DRIVER_DIR, "readOnly": True},
        {"name": "driver-ready", "mountPath": DRIVER_READY_FILE, "readOnly": True},
    ]
    volumes: list[dict[str, Any]] = [
        _host_path("device-plugin", "/var/lib/kubelet/device-plugins", "Directory"),
        _host_path("dev", "/dev", "Directory"),
        _host_path("nvidia-driver", HOST_DRIVER_DIR, "Directory"),
        # The gate: the kubelet does not start the pod until the installer wrote this file, so no GPU is
        # advertised before the driver is loaded.
        _host_path("driver-ready", DRIVER_READY_FILE, "File"),
    ]
    if gpu_config_map is not None:
        mounts.append({"name": "gpu-config", "mountPath": GPU_CONFIG_DIR, "readOnly": True})
        volumes.append({"name": "gpu-config", "configMap": {"name": gpu_config_map}})
    container = {
        "name": "nvidia-device-plugin",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [DEVICE_PLUGIN_BIN, "-logtostderr"],
        "args": device_plugin_args(gpu_config_map is not None),
        "env": [
            {"name": "GOMAXPROCS", "value": "1"},
            {"name": "LD_LIBRARY_PATH", "value": f"{CONTAINER_DRIVER_DIR}/lib"},
        ],
        # docs/privileges.md: privileged only because NVML opens /dev/nvidia* (the device cgroup refuses
        # an unprivileged container; GKE's own manifest runs it privileged too); it writes only its socket.
        "securityContext": dict(DEVICE_PLUGIN_SECURITY_CONTEXT),
        "resources": DEVICE_PLUGIN_RESOURCES,
        "volumeMounts": mounts,
    }
    object_labels = labels(DEVICE_PLUGIN_NAME, DEVICE_PLUGIN_NAME, "device-plugin")
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": DEVICE_PLUGIN_NAME, "namespace": namespace, "labels": object_labels},
        "spec": {
            "selector": {"matchLabels": selector_labels(DEVICE_PLUGIN_NAME, DEVICE_PLUGIN_NAME)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": object_labels},
                "spec": {
                    **_pod_basics(pull_secret_name),
                    "affinity": node_affinity(selections),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _access_name(namespace: str) -> str:
    """Cluster-scoped objects of the installer's identity carry the namespace: two stacks in one cluster
    (in different namespaces) must not own the same ClusterRole or policy."""
    return f"{INSTALLER_NAME}-{namespace}"


def installer_service_account(namespace: str) -> dict[str, Any]:
    """The installer pods' ServiceAccount (its token is mounted only into them)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": INSTALLER_SERVICE_ACCOUNT,
            "namespace": namespace,
            "labels": labels(INSTALLER_NAME, "identity", "driver-installer"),
        },
    }


# What the installer does with the API (docs/privileges.md): a merge patch of its node's labels and core
# v1 Events about it. No get, list or watch: it reads nothing from the API.
INSTALLER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
# With the drain opt-in only (rollout.drain.mode evict): read its node (is it cordoned, and by whom: the
# annotation CORDON_ANNOTATION; its resourceVersion makes the cordon patch conditional), list the pods of
# its node (`fieldSelector=spec.nodeName=<node>`; RBAC cannot narrow a list to a field), and evict them.
INSTALLER_DRAIN_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
]
# The annotation on a node the installer cordoned itself (value: the installer pod's name). Only a node
# that carries it is uncordoned by an installer; the admission policy holds the installer to that.
CORDON_ANNOTATION = f"{LABEL_PREFIX}cordoned"


def installer_cluster_role(namespace: str, drain: bool = False) -> dict[str, Any]:
    """The installer's ClusterRole. RBAC cannot say "its own node": installer_node_policy does."""
    rules = INSTALLER_RULES + (INSTALLER_DRAIN_RULES if drain else [])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": _access_name(namespace),
            "labels": labels(INSTALLER_NAME, "identity", "driver-installer"),
        },
        "rules": [dict(rule) for rule in rules],
    }


def installer_cluster_role_binding(namespace: str) -> dict[str, Any]:
    """Binds the ClusterRole to the installer's ServiceAccount."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": _access_name(namespace),
            "labels": labels(INSTALLER_NAME, "identity", "driver-installer"),
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": _access_name(namespace),
        },
        "subjects": [{"kind": "ServiceAccount", "name": INSTALLER_SERVICE_ACCOUNT, "namespace": namespace}],
    }


def service_account_user(namespace: str) -> str:
    """The user name the API server gives the installer's token."""
    return f"system:serviceaccount:{namespace}:{INSTALLER_SERVICE_ACCOUNT}"


# The policy's refusals (reason Forbidden: the API server answers 403 with `ValidatingAdmissionPolicy
# '<name>' with binding '<name>' denied request: <message>`).
POLICY_NO_NODE_NAME = (
    f"the nvidia-installer token carries no {NODE_NAME_EXTRA} (not bound to a pod on a node)"
)
POLICY_OTHER_NODE = "nvidia-installer may change only its own node (the node-name of its token)"
POLICY_FOREIGN_LABELS = f"nvidia-installer may change only labels under {LABEL_PREFIX} on its node"
POLICY_NODE_SPEC = "nvidia-installer may not change a node's spec or annotations"
POLICY_OTHER_EVENT = "nvidia-installer may create Events only about its own Node"
# With the drain opt-in.
POLICY_DRAIN_NODE_SPEC = (
    "nvidia-installer may change only spec.unschedulable of its node and only the annotation "
    f"{CORDON_ANNOTATION}"
)
POLICY_CORDON = (
    f"nvidia-installer may cordon only an uncordoned node, adding {CORDON_ANNOTATION}, and uncordon "
    "only a node carrying it, removing it"
)
POLICY_OTHER_NODES_POD = "nvidia-installer may evict only pods on its own node (the node-name of its token)"
# Node spec fields besides unschedulable (core/v1 NodeSpec): unchanged in every installer request.
_NODE_SPEC_FIELDS = ("podCIDR", "podCIDRs", "providerID", "taints", "configSource", "externalID")
_NODE_NAME_VARIABLE = {
    "name": "nodeName",
    "expression": f"'{NODE_NAME_EXTRA}' in request.userInfo.extra && "
    f"size(request.userInfo.extra['{NODE_NAME_EXTRA}']) > 0 ? "
    f"request.userInfo.extra['{NODE_NAME_EXTRA}'][0] : ''",
}


def _installer_match(namespace: str) -> list[dict[str, str]]:
    return [
        {
            "name": "installer-identity",
            "expression": f"request.userInfo.username == '{service_account_user(namespace)}'",
        }
    ]


def _same(field: str) -> str:
    """CEL: `field` of object.spec is set in both or neither, with the same value."""
    new, old = f"object.spec.{field}", f"oldObject.spec.{field}"
    return f"has({new}) == has({old}) && (!has({new}) || {new} == {old})"


def _node_spec_validations(drain: bool) -> list[dict[str, str]]:
    """Without drain: the node's spec and annotations unchanged. With it: only spec.unschedulable may
    change, only the annotation CORDON_ANNOTATION may, and only together: a cordon of an uncordoned node
    sets it, an uncordon removes it from a node that carries it (never an admin's cordon, which has none),
    and an uncordoned node may lose a stale one."""
    if not drain:
        return [
            {
                "expression": "!variables.isNode || (object.spec == oldObject.spec && "
                "variables.newAnnotations == variables.oldAnnotations)",
                "message": POLICY_NODE_SPEC,
                "reason": "Forbidden",
            }
        ]
    mark = f"'{CORDON_ANNOTATION}'"
    others = " && ".join(_same(field) for field in _NODE_SPEC_FIELDS)
    same_annotations = (
        f"variables.newAnnotations.all(k, k == {mark} || (k in variables.oldAnnotations && "
        "variables.oldAnnotations[k] == variables.newAnnotations[k])) && "
        f"variables.oldAnnotations.all(k, k == {mark} || k in variables.newAnnotations)"
    )
    new_mark, old_mark = f"{mark} in variables.newAnnotations", f"{mark} in variables.oldAnnotations"
    return [
        {
            "expression": f"!variables.isNode || ({others} && {same_annotations})",
            "message": POLICY_DRAIN_NODE_SPEC,
            "reason": "Forbidden",
        },
        {
            # Unchanged cordon: the mark unchanged, or removed from an uncordoned node (a stale mark left
            # by an uncordon by hand). A cordon adds the mark (a stale one may be there); an uncordon
            # removes it and needs it.
            "expression": "!variables.isNode || (variables.newCordoned == variables.oldCordoned ? "
            f"(({new_mark}) == ({old_mark}) || (!variables.newCordoned && !({new_mark}))) : "
            f"(variables.newCordoned ? {new_mark} : ({old_mark} && !({new_mark}))))",
            "message": POLICY_CORDON,
            "reason": "Forbidden",
        },
    ]


def installer_node_policy(namespace: str, drain: bool = False) -> dict[str, Any]:
    """A ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA in Kubernetes 1.30) that holds the
    installer's identity to its own node: what RBAC cannot say. For requests of the installer's service
    account only: a Node may be changed only when its name is the token's node-name extra, and then only
    in labels under LABEL_PREFIX (spec, annotations and every other label unchanged; with `drain`, also
    the cordon: _node_spec_validations); an Event may be created only about that Node. Events sent through
    events.k8s.io/v1 are converted to core v1 for the policy (matchPolicy Equivalent), so `involvedObject`
    covers both APIs."""
    prefix = LABEL_PREFIX
    ours = f"k.startsWith('{prefix}')"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {
            "name": f"{_access_name(namespace)}-own-node",
            "labels": labels(INSTALLER_NAME, "identity", "driver-installer"),
        },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "matchPolicy": "Equivalent",
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["UPDATE"],
                        "resources": ["nodes"],
                    },
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["events"],
                    },
                ],
            },
            "matchConditions": _installer_match(namespace),
            "variables": [
                _NODE_NAME_VARIABLE,
                {"name": "isNode", "expression": "request.resource.resource == 'nodes'"},
                {
                    "name": "newLabels",
                    "expression": "has(object.metadata.labels) ? object.metadata.labels : {}",
                },
                {
                    "name": "oldLabels",
                    "expression": "oldObject != null && has(oldObject.metadata.labels) ? "
                    "oldObject.metadata.labels : {}",
                },
                {
                    "name": "newAnnotations",
                    "expression": "variables.isNode && has(object.metadata.annotations) ? "
                    "object.metadata.annotations : {}",
                },
                {
                    "name": "oldAnnotations",
                    "expression": "variables.isNode && has(oldObject.metadata.annotations) ? "
                    "oldObject.metadata.annotations : {}",
                },
                {
                    "name": "newCordoned",
                    "expression": "variables.isNode && has(object.spec.unschedulable) && "
                    "object.spec.unschedulable",
                },
                {
                    "name": "oldCordoned",
                    "expression": "variables.isNode && has(oldObject.spec.unschedulable) && "
                    "oldObject.spec.unschedulable",
                },
            ],
            "validations": [
                {
                    "expression": "variables.nodeName != ''",
                    "message": POLICY_NO_NODE_NAME,
                    "reason": "Forbidden",
                },
                {
                    "expression": "!variables.isNode || object.metadata.name == variables.nodeName",
                    "message": POLICY_OTHER_NODE,
                    "reason": "Forbidden",
                },
                {
                    "expression": "!variables.isNode || ("
                    f"variables.newLabels.all(k, {ours} || (k in variables.oldLabels && "
                    "variables.oldLabels[k] == variables.newLabels[k])) && "
                    f"variables.oldLabels.all(k, {ours} || k in variables.newLabels))",
                    "message": POLICY_FOREIGN_LABELS,
                    "reason": "Forbidden",
                },
                *_node_spec_validations(drain),
                {
                    "expression": "variables.isNode || (object.involvedObject.kind == 'Node' && "
                    "object.involvedObject.name == variables.nodeName)",
                    "message": POLICY_OTHER_EVENT,
                    "reason": "Forbidden",
                },
            ],
        },
    }


def installer_node_policy_binding(namespace: str) -> dict[str, Any]:
    """Binds the policy cluster-wide with the Deny action (a refused request is a 403)."""
    name = f"{_access_name(namespace)}-own-node"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels(INSTALLER_NAME, "identity", "driver-installer")},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }


def installer_eviction_policy(namespace: str) -> dict[str, Any]:
    """With the drain opt-in: the installer may evict only pods on its own node. The admission object of
    an eviction is the Eviction (its name is the pod's), which does not name the pod's node; the policy
    gets the pods as parameters instead (`paramKind` Pod, bound with a selector matching every pod of the
    eviction's namespace, from the API server's informer): the eviction is refused unless the pod of that
    name runs on the token's node (docs/privileges.md, "Evictions")."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {
            "name": f"{_access_name(namespace)}-own-pods",
            "labels": labels(INSTALLER_NAME, "identity", "driver-installer"),
        },
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "v1", "kind": "Pod"},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods/eviction"],
                    }
                ]
            },
            "matchConditions": _installer_match(namespace),
            "variables": [_NODE_NAME_VARIABLE],
            "validations": [
                {
                    "expression": "variables.nodeName != ''",
                    "message": POLICY_NO_NODE_NAME,
                    "reason": "Forbidden",
                },
                {
                    # Evaluated once per pod of the namespace: only the evicted one is compared.
                    "expression": "params.metadata.name != request.name || "
                    "(has(params.spec.nodeName) && params.spec.nodeName == variables.nodeName)",
                    "message": POLICY_OTHER_NODES_POD,
                    "reason": "Forbidden",
                },
            ],
        },
    }


def installer_eviction_policy_binding(namespace: str) -> dict[str, Any]:
    """Binds the eviction policy with every pod of the request's namespace as its parameters (no
    paramRef namespace: the request's; an empty selector: all). A namespace without pods is allowed: the
    binding applies to everyone's evictions before the policy's matchConditions, and Deny made an
    administrator's eviction of a pod just gone from an emptied namespace a 422 instead of a 404 (which
    `kubectl drain` takes as done); there is no pod there for the installer to evict either."""
    name = f"{_access_name(namespace)}-own-pods"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels(INSTALLER_NAME, "identity", "driver-installer")},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
        },
    }


INSTALLER_IDENTITY_KINDS = (
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)


def installer_access_objects(namespace: str, drain: bool = False) -> list[dict[str, Any]]:
    """Every object of the installer's identity, in the order they are created; with `drain` (the stack's
    drain opt-in) the role's drain rules, the cordon rules of the node policy and the eviction policy."""
    objects = [
        installer_service_account(namespace),
        installer_cluster_role(namespace, drain),
        installer_cluster_role_binding(namespace),
        installer_node_policy(namespace, drain),
        installer_node_policy_binding(namespace),
    ]
    if drain:
        objects += [installer_eviction_policy(namespace), installer_eviction_policy_binding(namespace)]
    return objects
