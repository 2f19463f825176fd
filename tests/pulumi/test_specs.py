"""The pure builders of components/specs.py, called directly: the properties the cluster relies on, checked
on the objects themselves (not on a copied rendering). Paths are related to each other (a mount to its
volume, a flag to its mount) rather than spelled out, so the node-side contract can move without
rewriting these tests."""

from __future__ import annotations

import base64
import json
import posixpath
from typing import Any

import pytest

from components import specs
from components.selection import ARCH_LABEL, Requirement, target_selection

SELECTION = target_selection("amd64", None, "1877.17")
OTHER = target_selection("amd64", [Requirement("os-version", "In", ("2150.9.0",))], "2150.9.0")
VERSION_LABELS = {"nvidia-installer/driver-version": "580.159.04", "nvidia-installer/gl-version": "1877.17"}


def _installer(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "target": "gl1877",
        "namespace": "kube-system",
        "image": "r.test/gpu/driver@sha256:" + "c" * 64,
        "module_type": "open",
        "selection": SELECTION,
        "parameters_config_map": "nvidia-installer-modprobe-0123abcd",
        "pull_secret_name": "pull",
        "version_labels": VERSION_LABELS,
    }
    args.update(overrides)
    return specs.installer_daemonset(**args)


def _plugin(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "namespace": "kube-system",
        "image": "r.test/plugin@sha256:" + "d" * 64,
        "selections": [SELECTION, OTHER],
        "gpu_config_map": None,
        "pull_secret_name": None,
    }
    args.update(overrides)
    return specs.device_plugin_daemonset(**args)


def _pod(ds: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = ds["spec"]["template"]["spec"]
    return pod


def _container(ds: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(ds)["containers"]
    result: dict[str, Any] = container
    return result


def _volume_of_mount(ds: dict[str, Any], mount_path: str) -> dict[str, Any]:
    (mount,) = [m for m in _container(ds)["volumeMounts"] if m["mountPath"] == mount_path]
    (volume,) = [v for v in _pod(ds)["volumes"] if v["name"] == mount["name"]]
    return {**volume, "readOnly": mount.get("readOnly", False)}


def _flags(ds: dict[str, Any]) -> dict[str, str]:
    flags = {}
    for arg in _container(ds)["args"]:
        name, _, value = arg.partition("=")
        flags[name] = value
    return flags


def _terms(ds: dict[str, Any]) -> list[list[dict[str, Any]]]:
    affinity = _pod(ds)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return [term["matchExpressions"] for term in affinity["nodeSelectorTerms"]]


# --- both DaemonSets ------------------------------------------------------------------------------------

DAEMONSETS = [
    pytest.param(_installer(), id="installer"),
    pytest.param(_installer(pull_secret_name=None), id="installer-no-secret"),
    pytest.param(_plugin(), id="plugin"),
    pytest.param(
        _plugin(gpu_config_map="nvidia-device-plugin-89abcdef", pull_secret_name="pull"), id="plugin-shared"
    ),
]


@pytest.mark.parametrize("ds", DAEMONSETS)
def test_the_selector_matches_the_pod_template_and_holds_only_identity(ds: dict[str, Any]) -> None:
    selector = ds["spec"]["selector"]["matchLabels"]
    template = ds["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template.items()
    # The selector is immutable: anything that changes with a driver update must stay out of it.
    assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
    assert ds["metadata"]["labels"] == template


@pytest.mark.parametrize("ds", DAEMONSETS)
def test_every_mount_has_its_volume_and_nothing_is_mounted_twice(ds: dict[str, Any]) -> None:
    volumes = [v["name"] for v in _pod(ds)["volumes"]]
    mounts = _container(ds)["volumeMounts"]
    assert len(set(volumes)) == len(volumes)
    assert {m["name"] for m in mounts} == set(volumes), "a mount without volume, or an unused volume"
    paths = [m["mountPath"] for m in mounts]
    assert len(set(paths)) == len(paths)
    assert all(posixpath.isabs(p) for p in paths)


@pytest.mark.parametrize("ds", DAEMONSETS)
def test_pods_reach_every_gpu_node_at_node_critical_priority(ds: dict[str, Any]) -> None:
    pod = _pod(ds)
    # An empty key with operator Exists and no effect tolerates every taint (nvidia.com/gpu:NoSchedule...).
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["priorityClassName"] == "system-node-critical"
    # Only the installer holds a token (its own account: node state labels and events).
    assert pod["automountServiceAccountToken"] is (_kind(ds) == "installer")


@pytest.mark.parametrize("ds", DAEMONSETS)
def test_env_names_are_unique(ds: dict[str, Any]) -> None:
    names = [e["name"] for e in _container(ds)["env"]]
    assert len(set(names)) == len(names)


def test_the_pull_secret_is_named_only_when_there_is_one() -> None:
    assert _pod(_installer())["imagePullSecrets"] == [{"name": "pull"}]
    assert "imagePullSecrets" not in _pod(_installer(pull_secret_name=None))
    assert "imagePullSecrets" not in _pod(_plugin())


# --- installer ------------------------------------------------------------------------------------------


def test_the_installer_runs_exactly_on_its_targets_nodes() -> None:
    ds = _installer()
    (term,) = _terms(ds)  # one term: every requirement must hold (AND)
    assert term == [r.as_dict() for r in SELECTION]
    assert {"key": ARCH_LABEL, "operator": "In", "values": ["amd64"]} in term


def test_the_installer_is_named_by_its_target_and_carries_the_version_labels() -> None:
    ds = _installer()
    assert ds["metadata"]["name"] == "nvidia-installer-gl1877"
    assert ds["metadata"]["namespace"] == "kube-system"
    assert VERSION_LABELS.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "gl1877"


def test_two_targets_never_share_a_selector() -> None:
    first = _installer(target="a")["spec"]["selector"]["matchLabels"]
    second = _installer(target="b")["spec"]["selector"]["matchLabels"]
    assert first != second


def test_a_driver_update_rolls_node_by_node_and_is_awaited() -> None:
    ds = _installer()
    # One node at a time by default; maxSurge 0: the old pod goes before the new one starts, never two
    # installers on one node.
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    # `pulumi up` follows the rollout: the provider's await must not be skipped.
    assert "pulumi.com/skipAwait" not in ds["metadata"].get("annotations", {})
    # Ready means the new driver is loaded: no extra wait per node.
    assert ds["spec"].get("minReadySeconds", 0) == 0


@pytest.mark.parametrize("width", [1, 5, "10%", "100%"])
def test_the_rollout_width_is_the_daemonsets_max_unavailable(width: int | str) -> None:
    strategy = _installer(max_unavailable=width)["spec"]["updateStrategy"]
    assert strategy["rollingUpdate"] == {"maxUnavailable": width, "maxSurge": 0}


def test_the_rollout_is_gated_on_the_installers_readiness_probe() -> None:
    # The DaemonSet controller counts a new pod available only once it is ready; the probe is the
    # installer's own check that this image's driver is loaded (docs/node.md).
    probe = _container(_installer())["readinessProbe"]
    assert probe["exec"]["command"][-1] == "probe"
    assert probe["exec"]["command"][0] == _container(_installer())["command"][0]


def test_the_installer_container_runs_the_given_image_privileged_in_the_host_pid_namespace() -> None:
    ds = _installer()
    container = _container(ds)
    assert container["image"] == "r.test/gpu/driver@sha256:" + "c" * 64
    assert container["securityContext"]["privileged"] is True
    assert _pod(ds)["hostPID"] is True
    # The readiness probe asks the same program that installs.
    assert container["readinessProbe"]["exec"]["command"][0] == container["command"][0]


def test_the_installer_gets_its_module_type_and_node_name() -> None:
    env = {e["name"]: e for e in _container(_installer(module_type="proprietary"))["env"]}
    assert env["MODULE_TYPE"]["value"] == "proprietary"
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_the_module_parameters_file_lies_in_the_mounted_config_map() -> None:
    ds = _installer(parameters_config_map="params-cm")
    env = {e["name"]: e.get("value") for e in _container(ds)["env"]}
    directory = posixpath.dirname(env["MODULE_PARAMETERS_FILE"])
    volume = _volume_of_mount(ds, directory)
    assert volume["configMap"] == {"name": "params-cm"}
    assert volume["readOnly"] is True
    assert posixpath.basename(env["MODULE_PARAMETERS_FILE"]) == specs.MODULE_PARAMETERS_FILE


def test_host_paths_have_a_valid_type_and_writes_go_only_below_the_host_root() -> None:
    ds = _installer()
    env = {e["name"]: e.get("value") for e in _container(ds)["env"]}
    host_root = env["HOST_ROOT"]
    volumes = {v["name"]: v for v in _pod(ds)["volumes"]}
    for mount in _container(ds)["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "hostPath" not in volume:
            continue
        assert volume["hostPath"]["type"] in {"Directory", "DirectoryOrCreate", "File", "FileOrCreate"}
        if mount["mountPath"] == "/dev":
            continue  # device nodes appear where the kernel's tools expect them
        # A host directory is mounted at the same path below HOST_ROOT, as the node-side installer expects.
        assert mount["mountPath"] == host_root + volume["hostPath"]["path"]


# --- device plugin --------------------------------------------------------------------------------------


def test_the_plugin_runs_on_the_union_of_the_targets_nodes() -> None:
    terms = _terms(_plugin())
    # One term per target: a node matching any target (OR) gets the plugin.
    assert terms == [[r.as_dict() for r in SELECTION], [r.as_dict() for r in OTHER]]


def test_the_plugin_shows_the_installed_driver_where_its_flags_say() -> None:
    ds = _plugin()
    flags = _flags(ds)
    volume = _volume_of_mount(ds, flags["-container-path"])
    assert volume["hostPath"]["path"] == flags["-host-path"]
    assert volume["readOnly"] is True
    assert flags["-host-vulkan-icd-path"].startswith(flags["-host-path"] + "/")
    env = {e["name"]: e["value"] for e in _container(ds)["env"]}
    assert env["LD_LIBRARY_PATH"].startswith(flags["-container-path"] + "/")
    assert _volume_of_mount(ds, flags["-plugin-directory"])["hostPath"]["path"] == (
        "/var/lib/kubelet/device-plugins"
    )


def test_the_plugin_starts_only_after_the_driver_ready_file_exists() -> None:
    ds = _plugin()
    gates = [v for v in _pod(ds)["volumes"] if v.get("hostPath", {}).get("type") == "File"]
    assert len(gates) == 1, "the readiness file: a hostPath of type File the kubelet waits for"
    (mount,) = [m for m in _container(ds)["volumeMounts"] if m["name"] == gates[0]["name"]]
    assert mount.get("readOnly") is True


def test_time_sharing_mounts_the_config_its_flag_names() -> None:
    without = _plugin()
    assert not any(a.startswith("-gpu-config") for a in _container(without)["args"])
    assert not any("configMap" in v for v in _pod(without)["volumes"])
    ds = _plugin(gpu_config_map="plugin-cm")
    path = _flags(ds)["-gpu-config"]
    volume = _volume_of_mount(ds, posixpath.dirname(path))
    assert volume["configMap"] == {"name": "plugin-cm"}
    assert posixpath.basename(path) == specs.GPU_CONFIG_FILE


def test_the_plugin_rolls_one_node_at_a_time() -> None:
    assert _plugin()["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }


@pytest.mark.parametrize("with_config", [False, True])
def test_plugin_flags_are_unique(with_config: bool) -> None:
    names = [a.partition("=")[0] for a in specs.device_plugin_args(with_config)]
    assert len(set(names)) == len(names)
    assert ("-gpu-config" in names) is with_config


# --- least privilege (docs/privileges.md) ---------------------------------------------------------------

# Host paths each pod may write (a read-write hostPath mount); every other hostPath is mounted read-only.
WRITABLE_HOST_PATHS = {
    "installer": {"/opt/nvidia-installer", "/run/nvidia", "/run/nvidia-installer", "/dev"},
    "plugin": {"/var/lib/kubelet/device-plugins"},
}


def _host_mounts(ds: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """hostPath -> its mount (with the volume's type), for every hostPath volume of the pod."""
    volumes = {v["name"]: v for v in _pod(ds)["volumes"]}
    return {
        volumes[m["name"]]["hostPath"]["path"]: m
        for m in _container(ds)["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }


def _kind(ds: dict[str, Any]) -> str:
    return "installer" if ds["metadata"]["name"].startswith(specs.INSTALLER_NAME + "-") else "plugin"


@pytest.mark.parametrize("ds", DAEMONSETS)
def test_only_the_listed_host_paths_are_writable(ds: dict[str, Any]) -> None:
    writable = {path for path, mount in _host_mounts(ds).items() if not mount.get("readOnly")}
    assert writable == WRITABLE_HOST_PATHS[_kind(ds)]
    # Every ConfigMap is read-only too.
    volumes = {v["name"]: v for v in _pod(ds)["volumes"]}
    for mount in _container(ds)["volumeMounts"]:
        if "configMap" in volumes[mount["name"]]:
            assert mount["readOnly"] is True, mount


@pytest.mark.parametrize("ds", DAEMONSETS)
def test_no_pod_shares_the_hosts_network_or_ipc_and_only_the_installer_its_pids(ds: dict[str, Any]) -> None:
    pod = _pod(ds)
    assert not pod.get("hostNetwork") and not pod.get("hostIPC") and not pod.get("shareProcessNamespace")
    # hostPID: the installer's busy-GPU and cache-in-use checks read every process's fds and mountinfo.
    assert bool(pod.get("hostPID")) is (_kind(ds) == "installer")
    assert "ports" not in _container(ds), "neither pod serves anything on the network"


@pytest.mark.parametrize("ds", DAEMONSETS)
def test_api_access_only_for_the_installer_with_its_own_account(ds: dict[str, Any]) -> None:
    pod = _pod(ds)
    assert not any("projected" in v or "secret" in v for v in pod["volumes"])
    assert "serviceAccount" not in pod
    if _kind(ds) == "plugin":
        # The namespace's default account, without a token: no RBAC binding can reach the pod.
        assert pod["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pod
    else:
        assert pod["automountServiceAccountToken"] is True
        assert pod["serviceAccountName"] == specs.INSTALLER_SERVICE_ACCOUNT


def test_the_installers_identity_holds_exactly_the_tabled_verbs() -> None:
    objects = {o["kind"]: o for o in specs.installer_access_objects("gpu")}
    account = objects["ServiceAccount"]["metadata"]
    assert (account["name"], account["namespace"]) == ("nvidia-installer", "gpu")
    # docs/privileges.md: patch its node's labels, create Events; nothing to read, nothing else to write.
    assert objects["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    binding = objects["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == objects["ClusterRole"]["metadata"]["name"] == "nvidia-installer-gpu"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nvidia-installer", "namespace": "gpu"}]
    policy = objects["ValidatingAdmissionPolicy"]
    assert objects["ValidatingAdmissionPolicyBinding"]["spec"] == {
        "policyName": policy["metadata"]["name"], "validationActions": ["Deny"],
    }  # fmt: skip
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConditions"][0]["expression"].endswith(
        "== 'system:serviceaccount:gpu:nvidia-installer'"
    )
    # Every refusal is a 403, and each verb RBAC grants is matched by the policy.
    assert {v["reason"] for v in spec["validations"]} == {"Forbidden"}
    matched = {
        (r["resources"][0], op) for r in spec["matchConstraints"]["resourceRules"] for op in r["operations"]
    }
    assert matched == {("nodes", "UPDATE"), ("events", "CREATE")}


def test_the_drain_opt_in_adds_exactly_its_verbs_and_the_eviction_policy() -> None:
    without = specs.installer_access_objects("gpu")
    with_drain = specs.installer_access_objects("gpu", drain=True)
    role = next(o for o in with_drain if o["kind"] == "ClusterRole")
    # docs/privileges.md, drain rows: read its node, list pods (RBAC cannot narrow to a node), evict.
    assert role["rules"][2:] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    ]
    assert not any("pods" in str(o) for o in without if o["kind"] == "ClusterRole")
    policies = {o["metadata"]["name"]: o for o in with_drain if o["kind"] == "ValidatingAdmissionPolicy"}
    assert set(policies) == {"nvidia-installer-gpu-own-node", "nvidia-installer-gpu-own-pods"}
    eviction = policies["nvidia-installer-gpu-own-pods"]["spec"]
    assert eviction["paramKind"] == {"apiVersion": "v1", "kind": "Pod"}
    assert eviction["matchConstraints"]["resourceRules"][0]["resources"] == ["pods/eviction"]
    binding = next(o for o in with_drain if o["metadata"]["name"] == "nvidia-installer-gpu-own-pods"
                   and o["kind"] == "ValidatingAdmissionPolicyBinding")  # fmt: skip
    assert binding["spec"]["paramRef"] == {"selector": {}, "parameterNotFoundAction": "Allow"}
    # Without the opt-in the node policy keeps its one spec rule; with it the cordon rules replace it.
    messages = [v["message"] for v in policies["nvidia-installer-gpu-own-node"]["spec"]["validations"]]
    assert specs.POLICY_CORDON in messages and specs.POLICY_NODE_SPEC not in messages
    plain = next(o for o in without if o["kind"] == "ValidatingAdmissionPolicy")
    assert specs.POLICY_NODE_SPEC in [v["message"] for v in plain["spec"]["validations"]]


def test_drain_settings_reach_the_installer_only_when_opted_in() -> None:
    def env(ds: dict[str, Any]) -> dict[str, str]:
        return {e["name"]: e.get("value", "") for e in _container(ds)["env"]}

    assert not {"DRAIN_MODE", "DRAIN_TIMEOUT_SECONDS"} & set(env(_installer()))
    drained = env(_installer(drain_timeout_minutes=7))
    assert (drained["DRAIN_MODE"], drained["DRAIN_TIMEOUT_SECONDS"]) == ("evict", "420")


def test_cluster_scoped_identity_objects_are_named_after_the_namespace() -> None:
    # Two stacks in one cluster (different namespaces) must not own the same ClusterRole or policy.
    names = {ns: {o["metadata"]["name"] for o in specs.installer_access_objects(ns)} for ns in ("a", "b")}
    assert names["a"] - {"nvidia-installer"} and not (names["a"] - {"nvidia-installer"}) & names["b"]


@pytest.mark.parametrize("ds", DAEMONSETS)
def test_security_context_holds_exactly_the_tabled_fields(ds: dict[str, Any]) -> None:
    context = _container(ds)["securityContext"]
    expected = {"installer": specs.INSTALLER_SECURITY_CONTEXT, "plugin": specs.DEVICE_PLUGIN_SECURITY_CONTEXT}
    assert context == expected[_kind(ds)]
    # Nothing that is void beside privileged (capabilities, seccomp) or that adds to it.
    assert not {"capabilities", "seccompProfile", "runAsUser", "procMount"} & set(context)
    assert "securityContext" not in _pod(ds)


def test_the_plugin_writes_nothing_but_its_socket() -> None:
    ds = _plugin(gpu_config_map="plugin-cm")
    assert _container(ds)["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = _host_mounts(ds)
    # It lists /dev and opens the device nodes the installer made; it never creates one.
    assert mounts["/dev"]["readOnly"] is True
    writable = [m["mountPath"] for m in _container(ds)["volumeMounts"] if not m.get("readOnly")]
    assert writable == [_flags(ds)["-plugin-directory"]]


@pytest.mark.parametrize("ds", DAEMONSETS)
def test_mount_propagation_only_for_the_installers_driver_root(ds: dict[str, Any]) -> None:
    for path, mount in _host_mounts(ds).items():
        propagation = mount.get("mountPropagation")
        if _kind(ds) == "installer" and path == "/run/nvidia":
            # The driver root bind mount must reach the host (docs/privileges.md); nothing else may.
            assert propagation in (None, "Bidirectional")
        else:
            assert propagation is None, path


# --- small builders -------------------------------------------------------------------------------------


def test_labels_extend_the_selector_labels() -> None:
    labels = specs.labels("app", "inst", "comp")
    assert specs.selector_labels("app", "inst").items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == "comp"
    assert labels["app.kubernetes.io/part-of"] == "nvidia-installer"


def test_node_affinity_keeps_terms_and_their_order() -> None:
    affinity = specs.node_affinity([OTHER, SELECTION])
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchExpressions"] for t in terms] == [
        [r.as_dict() for r in OTHER],
        [r.as_dict() for r in SELECTION],
    ]


def test_content_names_follow_the_content_only() -> None:
    first = specs.content_name("base", {"a": "1", "b": "2"})
    assert first == specs.content_name("base", {"b": "2", "a": "1"})  # key order does not matter
    assert first != specs.content_name("base", {"a": "1", "b": "3"})
    assert first.startswith("base-") and len(first) <= 63


def test_a_config_map_is_named_by_its_content_and_owns_its_data() -> None:
    data = {"f": "x"}
    cm = specs.config_map("base", "ns", {"l": "v"}, data)
    assert cm["metadata"]["name"] == specs.content_name("base", data)
    assert cm["data"] == data and cm["data"] is not data
    assert (cm["apiVersion"], cm["kind"], cm["metadata"]["namespace"]) == ("v1", "ConfigMap", "ns")
    # Its name stands for its content: the API server must refuse any change under a running pod.
    assert cm["immutable"] is True


def test_modprobe_conf_has_one_options_line_per_module_with_parameters() -> None:
    text = specs.modprobe_conf({"nvidia": ["A=1", "B=2"], "nvidia-uvm": [], "nvidia-drm": ["modeset=1"]})
    assert text.splitlines() == ["options nvidia A=1 B=2", "options nvidia-drm modeset=1"]
    assert text.endswith("\n")
    assert specs.modprobe_conf({"nvidia": []}) == ""


def test_gpu_config_is_the_time_sharing_json() -> None:
    config = json.loads(specs.gpu_config_json(4))
    assert config == {"GPUSharingConfig": {"GPUSharingStrategy": "time-sharing", "MaxSharedClientsPerGPU": 4}}


def test_dockerconfigjson_carries_user_and_password_for_the_server() -> None:
    decoded = json.loads(base64.b64decode(specs.dockerconfigjson("r.test:5000", "robot", "pw:with:colons")))
    entry = decoded["auths"]["r.test:5000"]
    assert (entry["username"], entry["password"]) == ("robot", "pw:with:colons")
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    assert (user, password) == ("robot", "pw:with:colons")  # split at the first ':', as the kubelet does


def test_the_pull_secret_has_the_dockerconfigjson_type_and_key() -> None:
    secret = specs.pull_secret("pull", "ns", "ZW5jb2RlZA==")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["data"] == {".dockerconfigjson": "ZW5jb2RlZA=="}
    assert secret["metadata"]["name"] == "pull" and secret["metadata"]["namespace"] == "ns"
