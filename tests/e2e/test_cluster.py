"""The user's flow against a real control plane: `pulumi config set`, `preview --diff`, `up`, a driver
change, drift, `destroy`; checked through the Kubernetes API, with the real DaemonSet controller and
scheduler placing pods on simulated nodes.

The stages share one stack and run in file order (each test is one step of the flow).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.controlplane import ControlPlane
from tests.e2e.kubeapi import ApiError, KubeApi
from tests.e2e.kubelet import FakeKubelet
from tests.e2e.pulumi_cli import Project

NAMESPACE = "kube-system"
SENTINEL_PASSWORD = "e2e-sentinel-Pa55word-9f3c1b"
DIGEST_1877 = "sha256:" + "1877" * 16
DIGEST_2150 = "sha256:" + "2150" * 16
IMAGE_1877 = f"registry.example.com/gpu/nvidia-driver:580.159.04-gl1877.17-cloud-amd64-auto@{DIGEST_1877}"
IMAGE_2150 = f"registry.example.com/gpu/nvidia-driver:590.48.01-gl2150.9.0-metal-amd64-open@{DIGEST_2150}"
INSTALLER_1877 = "nvidia-installer-gl1877-cloud"
INSTALLER_2150 = "nvidia-installer-gl2150-metal"
DEVICE_PLUGIN = "nvidia-device-plugin"
GUARD_MESSAGE = "e2e admission: no DaemonSets in this namespace"
SYSTEM_NODE_CRITICAL = 2000001000  # the priority value of the built-in system-node-critical class

# Simulated nodes: two GPU populations of different Garden Linux versions, an arm64 GPU node of the
# first version (no amd64 image may run there), and CPU nodes of both versions.
NODES: dict[str, tuple[dict[str, str], str]] = {
    "gpu-1877-a": ({"gpu": "true", "os-version": "1877.17"}, "amd64"),
    "gpu-1877-b": ({"gpu": "true", "os-version": "1877.17"}, "amd64"),
    "gpu-2150-a": ({"gpu": "true", "os-version": "2150.9.0"}, "amd64"),
    "gpu-1877-arm": ({"gpu": "true", "os-version": "1877.17"}, "arm64"),
    "cpu-1877": ({"os-version": "1877.17"}, "amd64"),
    "cpu-2150": ({"os-version": "2150.9.0"}, "amd64"),
}
EXPECTED = {
    INSTALLER_1877: {"gpu-1877-a", "gpu-1877-b"},
    INSTALLER_2150: {"gpu-2150-a"},
    DEVICE_PLUGIN: {"gpu-1877-a", "gpu-1877-b", "gpu-2150-a"},
}

CONFIG_LINES = [
    "pulumi config set --path 'pulumi:disable-default-providers[0]' kubernetes",
    "pulumi config set --path registry.server registry.example.com",
    "pulumi config set --path registry.repository gpu/nvidia-driver",
    "pulumi config set --path registry.username robot-gpu",
    "pulumi config set --path image.build false",
    "pulumi config set --path 'targets[0].name' gl1877-cloud",
    "pulumi config set --path 'targets[0].glVersion' 1877.17",
    "pulumi config set --path 'targets[0].arch' amd64",
    "pulumi config set --path 'targets[0].flavour' cloud",
    "pulumi config set --path 'targets[0].driverVersion' 580.159.04",
    f"pulumi config set --path 'targets[0].image' {IMAGE_1877}",
    "pulumi config set --path 'targets[1].name' gl2150-metal",
    "pulumi config set --path 'targets[1].glVersion' 2150.9.0",
    "pulumi config set --path 'targets[1].arch' amd64",
    "pulumi config set --path 'targets[1].flavour' metal",
    "pulumi config set --path 'targets[1].driverVersion' 590.48.01",
    "pulumi config set --path 'targets[1].moduleType' open",
    f"pulumi config set --path 'targets[1].image' {IMAGE_2150}",
]


@dataclass
class ClusterStack:
    """The stack under test and what its first preview and up printed."""

    project: Project
    plane: ControlPlane
    kubelet: FakeKubelet
    preview: subprocess.CompletedProcess[str]
    up: subprocess.CompletedProcess[str]

    @property
    def api(self) -> KubeApi:
        """The admin API client."""
        return self.plane.api

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The built kubectl with the control plane's kubeconfig."""
        return subprocess.run(
            [str(self.project.tools_bin / "kubectl"), f"--kubeconfig={self.plane.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )


def configure(project: Project, plane: ControlPlane, stack: str, namespace: str = NAMESPACE) -> None:
    """`pulumi stack init` and the settings of a two-target stack, typed as a user would."""
    project.run("stack", "init", stack)
    project.run("config", "set", "--secret", "kubeconfig", stdin=plane.kubeconfig.read_text())
    project.run("config", "set", "--secret", "registryPassword", stdin=SENTINEL_PASSWORD)
    project.run("config", "set", "namespace", namespace)
    for line in CONFIG_LINES:
        project.run_line(line)


def wait_for(what: str, probe: Callable[[], Any], expected: Any, timeout: float = 60.0) -> None:
    """Polls until probe() == expected; fails with the last value seen."""
    deadline = time.monotonic() + timeout
    seen = probe()
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = probe()
    assert seen == expected, f"{what}: expected {expected!r}, last seen {seen!r}"


def pods_of(api: KubeApi, daemonset: str) -> list[dict[str, Any]]:
    """The live pods a DaemonSet owns."""
    return [
        pod
        for pod in api.items(f"/api/v1/namespaces/{NAMESPACE}/pods")
        if any(ref["name"] == daemonset for ref in pod["metadata"].get("ownerReferences", []))
        and not pod["metadata"].get("deletionTimestamp")
    ]


def nodes_of(api: KubeApi, daemonset: str) -> set[str]:
    """The nodes a DaemonSet's pods are bound to."""
    return {pod["spec"].get("nodeName", "<unscheduled>") for pod in pods_of(api, daemonset)}


def daemonset(api: KubeApi, name: str) -> dict[str, Any]:
    """A live DaemonSet."""
    found: dict[str, Any] = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{name}")
    return found


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane,
    kubelet: FakeKubelet,
    tools_bin: Path,
    pulumi_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> ClusterStack:
    """Nodes registered, the stack configured, previewed (a server-side dry run) and applied."""
    for name, (labels, arch) in NODES.items():
        kubelet.add_node(name, labels, arch)
    project = Project.copy(tmp_path_factory.mktemp("cluster"), tools_bin, pulumi_home)
    configure(project, control_plane, "e2e")
    # As the delivery workflows run them (scripts/stack.sh): with the policy pack.
    preview = project.script("preview", "e2e")
    up = project.script("up", "e2e", "--skip-preview")
    return ClusterStack(project, control_plane, kubelet, preview, up)


def test_preview_lists_every_object_to_create(stack: ClusterStack) -> None:
    for name in ("installer-gl1877-cloud-daemonset", "installer-gl2150-metal-daemonset",
                 "device-plugin-daemonset", "registry-secret", "module-parameters",
                 "installer-identity-service-account", "installer-identity-cluster-role-binding",
                 "installer-identity-validating-admission-policy-binding"):  # fmt: skip
        assert name in stack.preview.stdout, stack.preview.stdout
    # The stack, the provider, five components (two installers, the installers' identity, the device
    # plugin, the pull secret), the ten Kubernetes objects and the mark of the arm64 GPU node (no target
    # covers it: docs/operations.md, "A GPU node no target covers").
    assert "+ 18 to create" in stack.preview.stdout, stack.preview.stdout
    assert "kubernetes:core/v1:NodePatch: (create)" in stack.preview.stdout
    # The policy pack ran (the --diff display lists it) and passed: the preview succeeded.
    assert "Policy Packs run:" in stack.preview.stdout
    assert "nvidia-installer|local|" in stack.preview.stdout


def test_installers_run_on_exactly_their_targets_nodes(stack: ClusterStack) -> None:
    for name in (INSTALLER_1877, INSTALLER_2150):
        wait_for(f"nodes of {name}", partial(nodes_of, stack.api, name), EXPECTED[name])


def test_stack_output_says_which_driver_runs_where(stack: ClusterStack) -> None:
    targets = stack.project.outputs()["targets"]
    assert targets["gl1877-cloud"]["image"] == IMAGE_1877
    assert targets["gl1877-cloud"]["driverVersion"] == "580.159.04"
    # A prebuilt image without moduleType: the node is told auto; with it, the setting.
    assert (targets["gl1877-cloud"]["moduleTypes"], targets["gl2150-metal"]["moduleTypes"]) == (
        "auto",
        "open",
    )
    assert targets["gl2150-metal"]["nodeSelection"] == (
        "gpu Exists AND os-version In [2150.9.0] AND kubernetes.io/arch In [amd64]"
    )


def test_device_plugin_runs_on_the_union_and_was_awaited(stack: ClusterStack) -> None:
    # `pulumi up` waits for the device plugin's rollout: when it returned, every pod was ready.
    status = daemonset(stack.api, DEVICE_PLUGIN)["status"]
    assert status["desiredNumberScheduled"] == len(EXPECTED[DEVICE_PLUGIN])
    assert status["numberReady"] == status["desiredNumberScheduled"]
    assert nodes_of(stack.api, DEVICE_PLUGIN) == EXPECTED[DEVICE_PLUGIN]


def test_pull_secret_exists_and_every_daemonset_references_it(stack: ClusterStack) -> None:
    secrets = [
        s for s in stack.api.items(f"/api/v1/namespaces/{NAMESPACE}/secrets")
        if s["type"] == "kubernetes.io/dockerconfigjson"
    ]  # fmt: skip
    assert len(secrets) == 1
    (secret,) = secrets
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    auth = config["auths"]["registry.example.com"]
    assert base64.b64decode(auth["auth"]).decode() == f"robot-gpu:{SENTINEL_PASSWORD}"
    for name in EXPECTED:
        pod_spec = daemonset(stack.api, name)["spec"]["template"]["spec"]
        assert pod_spec["imagePullSecrets"] == [{"name": secret["metadata"]["name"]}], name


def test_everything_admitted_in_kube_system_as_system_node_critical(stack: ClusterStack) -> None:
    for name in EXPECTED:
        pods = pods_of(stack.api, name)
        assert pods, name
        for pod in pods:
            # Admission resolved the class name into its value: the class exists and applies here.
            assert pod["spec"]["priorityClassName"] == "system-node-critical"
            assert pod["spec"]["priority"] == SYSTEM_NODE_CRITICAL
            assert pod["metadata"]["namespace"] == NAMESPACE


def test_installer_pods_run_the_digest_pinned_images(stack: ClusterStack) -> None:
    for name, image in ((INSTALLER_1877, IMAGE_1877), (INSTALLER_2150, IMAGE_2150)):
        images = {c["image"] for pod in pods_of(stack.api, name) for c in pod["spec"]["containers"]}
        assert images == {image}


def test_sentinel_password_is_never_plain_text(stack: ClusterStack) -> None:
    exported = json.dumps(stack.project.stack_export())
    encoded = base64.b64encode(SENTINEL_PASSWORD.encode()).decode()
    auth = base64.b64encode(f"robot-gpu:{SENTINEL_PASSWORD}".encode()).decode()
    assert "ciphertext" in exported  # the secrets are there, encrypted
    for form in (SENTINEL_PASSWORD, encoded, auth, stack.plane.token):
        assert form not in exported
        for command, result in stack.project.results.items():
            assert form not in result.stdout + result.stderr, command
    stack_file = (stack.project.workdir / "stacks" / "Pulumi.e2e.yaml").read_text()
    assert SENTINEL_PASSWORD not in stack_file and stack.plane.token not in stack_file
    # Nor in any log: the control plane's, or anything the CLI and its plugins wrote under PULUMI_HOME
    # or into the backend (state files hold ciphertext only).
    logs = [*stack.plane.workdir.glob("*.log"), *_files(stack.project.pulumi_home),
            *_files(stack.project.workdir / "state")]  # fmt: skip
    assert logs
    for path in logs:
        data = path.read_bytes()
        for form in (SENTINEL_PASSWORD, encoded, auth):
            assert form.encode() not in data, path


def _files(root: Path) -> list[Path]:
    # Plugin binaries are large and hold no run-time data.
    return [p for p in root.rglob("*") if p.is_file() and "plugins" not in p.parts]


def _guard_namespace(api: KubeApi, namespace: str) -> None:
    """A namespace where a ValidatingAdmissionPolicy denies every DaemonSet (create and update)."""
    api.create("/api/v1/namespaces", {"metadata": {"name": namespace, "labels": {"e2e-guarded": "true"}}})
    vap = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    api.create(vap, {
        "metadata": {"name": "e2e-no-daemonsets"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                "resources": ["daemonsets"],
            }]},
            "validations": [{"expression": "false", "message": GUARD_MESSAGE}],
        },
    })  # fmt: skip
    api.create(vap.replace("policies", "policybindings"), {
        "metadata": {"name": "e2e-no-daemonsets"},
        "spec": {
            "policyName": "e2e-no-daemonsets",
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"e2e-guarded": "true"}}},
        },
    })  # fmt: skip
    pod = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    probe = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "probe"},
             "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": pod}}  # fmt: skip

    def denied() -> bool:
        try:
            api.create(f"/apis/apps/v1/namespaces/{namespace}/daemonsets?dryRun=All", probe)
        except ApiError as error:
            return GUARD_MESSAGE in str(error)
        return False

    wait_for("the admission policy to take effect", denied, True)


def test_preview_is_a_server_side_dry_run_through_admission(
    control_plane: ControlPlane, tools_bin: Path, pulumi_home: Path, tmp_path: Path
) -> None:
    # Only the API server knows this policy: a preview that stops on it sent the objects to the server's
    # admission chain as a dry run. Nothing may exist afterwards.
    _guard_namespace(control_plane.api, "gpu-guarded")
    project = Project.copy(tmp_path / "guarded", tools_bin, pulumi_home)
    configure(project, control_plane, "guarded", namespace="gpu-guarded")
    result = project.run("preview", check=False)
    assert result.returncode != 0
    assert GUARD_MESSAGE in result.stdout + result.stderr
    assert control_plane.api.items("/apis/apps/v1/namespaces/gpu-guarded/daemonsets") == []
    assert control_plane.api.items("/api/v1/namespaces/gpu-guarded/secrets") == []


def test_missing_namespace_passes_preview_and_fails_up_creating_nothing(
    control_plane: ControlPlane, tools_bin: Path, pulumi_home: Path, tmp_path: Path
) -> None:
    # The provider cannot dry-run into a namespace that does not exist yet (the same update might create
    # it), so the preview passes; the update fails naming the namespace and leaves nothing behind.
    project = Project.copy(tmp_path / "missing-ns", tools_bin, pulumi_home)
    configure(project, control_plane, "missing-ns", namespace="gpu-missing")
    assert project.run("preview", check=False).returncode == 0
    result = project.run("up", "--yes", "--skip-preview", check=False)
    assert result.returncode != 0
    assert 'namespaces "gpu-missing" not found' in result.stdout + result.stderr
    assert not control_plane.api.exists("/api/v1/namespaces/gpu-missing")


def test_driver_change_updates_only_that_installer(stack: ClusterStack) -> None:
    project = stack.project
    old_uids = {name: daemonset(stack.api, name)["metadata"]["uid"] for name in EXPECTED}
    project.run_line("pulumi config set --path 'targets[1].driverVersion' 590.48.02")
    preview = project.run("preview", "--diff", "--json")
    steps = json.loads(preview.stdout)["steps"]
    changed = {s["urn"].rsplit("::", 1)[1]: s["op"] for s in steps if s["op"] not in ("same", "read")}
    assert changed == {"installer-gl2150-metal-daemonset": "update"}, changed
    text = project.script("preview", "e2e").stdout
    assert "590.48.02" in text
    project.script("up", "e2e", "--skip-preview")
    live = daemonset(stack.api, INSTALLER_2150)
    assert live["metadata"]["labels"]["nvidia-installer/driver-version"] == "590.48.02"
    # Updated in place: no DaemonSet was deleted and recreated (no gap in node coverage).
    assert {name: daemonset(stack.api, name)["metadata"]["uid"] for name in EXPECTED} == old_uids


def test_drift_is_reported_by_a_refreshing_preview(stack: ClusterStack) -> None:
    stack.kubectl("-n", NAMESPACE, "label", "daemonset", INSTALLER_1877,
                  "nvidia-installer/driver-version=0.0.0-edited", "--overwrite")  # fmt: skip
    result = stack.project.script("drift", "e2e", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "installer-gl1877-cloud-daemonset" in output
    assert "0.0.0-edited" in output
    # `up` puts the declared state back.
    stack.project.run("up", "--yes", "--refresh", "--skip-preview")
    live = daemonset(stack.api, INSTALLER_1877)
    assert live["metadata"]["labels"]["nvidia-installer/driver-version"] == "580.159.04"


def test_uncovered_gpu_nodes_are_reported_and_get_no_driver(stack: ClusterStack) -> None:
    # A Garden Linux update brings a GPU node no target covers (and the arm64 GPU node never had one):
    # neither gets a driver, and the preview says so, naming the node, its version and what to add.
    stack.kubelet.add_node("gpu-1934-new", {"gpu": "true", "os-version": "1934.0"})
    result = stack.project.script("preview", "e2e")
    output = result.stdout + result.stderr  # with --diff, diagnostics go to stderr
    assert (
        "GPU node gpu-1934-new (Garden Linux 1934.0, arch amd64) is selected by no target, so it gets no "
        "NVIDIA driver; add a target for it: pulumi config set --path 'targets[2].glVersion' 1934.0"
    ) in output, output
    assert "GPU node gpu-1877-arm (Garden Linux 1877.17, arch arm64) is selected by no target" in output
    for covered in ("gpu-1877-a", "gpu-1877-b", "gpu-2150-a", "cpu-1877", "cpu-2150"):
        assert f"GPU node {covered} " not in output
    for name, expected in EXPECTED.items():
        wait_for(f"nodes of {name}", partial(nodes_of, stack.api, name), expected)


UNCOVERED_STATUS = "nvidia-installer/status"
UNCOVERED_NOTE = "nvidia-installer/uncovered"


def node_marks(api: KubeApi, node: str) -> tuple[str | None, str | None]:
    """A node's status label and uncovered-annotation (None when absent)."""
    metadata = api.get(f"/api/v1/nodes/{node}")["metadata"]
    return metadata.get("labels", {}).get(UNCOVERED_STATUS), metadata.get("annotations", {}).get(
        UNCOVERED_NOTE
    )


def test_uncovered_gpu_nodes_are_marked_on_the_nodes_until_a_target_covers_them(stack: ClusterStack) -> None:
    # The installer that served gpu-1934-new before its Garden Linux update left its status (a plain
    # update by another field manager): the program's patch must take the label over, not conflict.
    stack.kubectl("label", "node", "gpu-1934-new", f"{UNCOVERED_STATUS}=ready")
    stack.project.script("up", "e2e", "--skip-preview")
    for node, version in (("gpu-1934-new", "1934.0"), ("gpu-1877-arm", "1877.17")):
        status, note = node_marks(stack.api, node)
        assert status == "uncovered", node
        assert note is not None and note.startswith(f"GPU node {node} (Garden Linux {version}, "), note
    assert set(stack.project.outputs()["uncoveredGpuNodes"]) == {"gpu-1934-new", "gpu-1877-arm"}
    # The marks are declared state like any other: a refreshing preview finds no drift in them.
    assert stack.project.script("drift", "e2e", check=False).returncode == 0
    # The user adds the target the message asked for: the mark goes, the node gets an installer.
    image = (
        f"registry.example.com/gpu/nvidia-driver:580.159.04-gl1934.0-cloud-amd64-auto@sha256:{'1934' * 16}"
    )
    for key, value in (("name", "gl1934-cloud"), ("glVersion", "1934.0"), ("arch", "amd64"),
                       ("flavour", "cloud"), ("driverVersion", "580.159.04"), ("image", image)):  # fmt: skip
        stack.project.run_line(f"pulumi config set --path 'targets[2].{key}' {value}")
    stack.project.script("up", "e2e", "--skip-preview")
    assert node_marks(stack.api, "gpu-1934-new") == (None, None)
    # The other node's message now names the next free index: its patch was updated in place, and the
    # destroy below must still remove the label it set before that update.
    status, note = node_marks(stack.api, "gpu-1877-arm")
    assert status == "uncovered" and note is not None and "'targets[3].glVersion' 1877.17" in note, note
    assert set(stack.project.outputs()["uncoveredGpuNodes"]) == {"gpu-1877-arm"}
    wait_for("nodes of the new target", partial(nodes_of, stack.api, "nvidia-installer-gl1934-cloud"),
             {"gpu-1934-new"})  # fmt: skip


def test_destroy_leaves_nothing_of_the_stack(stack: ClusterStack) -> None:
    resources = stack.project.stack_export()["deployment"]["resources"]
    objects = [
        (r["outputs"]["kind"], r["outputs"]["metadata"]["name"])
        for r in resources
        if r["type"].startswith("kubernetes:")
        and not r["type"].startswith("pulumi:")
        and r["type"] != "kubernetes:core/v1:NodePatch"
    ]
    # 3 installers, the device plugin, the ConfigMap, the pull Secret, and the installers' identity
    # (ServiceAccount, ClusterRole and binding, admission policy and binding).
    assert len(objects) == 11
    stack.project.run("destroy", "--yes", "--skip-preview")
    paths = {
        "DaemonSet": f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/",
        "ConfigMap": f"/api/v1/namespaces/{NAMESPACE}/configmaps/",
        "Secret": f"/api/v1/namespaces/{NAMESPACE}/secrets/",
        "ServiceAccount": f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/",
        "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles/",
        "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/",
        "ValidatingAdmissionPolicy": "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/",
        "ValidatingAdmissionPolicyBinding": (
            "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/"
        ),
    }
    for kind, name in objects:
        assert not stack.api.exists(paths[kind] + name), f"{kind} {name} survived destroy"
    for name in EXPECTED:
        wait_for(f"pods of {name} after destroy", partial(pods_of, stack.api, name), [])
    # The mark of the node that stayed uncovered goes with the stack; the node itself stays.
    assert node_marks(stack.api, "gpu-1877-arm") == (None, None)
