"""GPU Operator mode through the real CLI, the real Kubernetes provider and its Helm code, against the
control plane: a stack typed with `pulumi config set --path` (`devicePlugin.provider gpu-operator`,
`gpuOperator.chart.path` naming a tiny chart this test writes) is previewed, brought up and destroyed.

The chart stands in for NVIDIA's: it renders a ConfigMap carrying the values the operator reads
(`driver.enabled`, `hostPaths.driverInstallDir`, `cdi.enabled`, the NFD worker's affinity as JSON, the
device plugin's config name, all of `.Values`) and a DaemonSet placed with the NFD worker's affinity, as
the chart's NFD worker is. What the cluster holds therefore came through the real Helm release, with the
chart's defaults under the program's values. No chart is downloaded: a local chart without dependencies
takes the provider's Helm code to no network (`dependencyUpdate` stays unset).

The stages share one stack and run in file order.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.controlplane import ControlPlane
from tests.e2e.kubeapi import KubeApi
from tests.e2e.kubelet import FakeKubelet
from tests.e2e.pulumi_cli import Project
from tests.e2e.test_cluster import wait_for

# The installers' namespace (the stack's `namespace`), created here as a cluster admin would.
INSTALLER_NAMESPACE = "gpu-op-e2e-system"
OPERATOR_NAMESPACE = "gpu-operator"
RELEASE = "gpu-operator"
RENDERED = "gpu-operator-rendered-values"
NFD_WORKER = "gpu-operator-nfd-worker"
REPLICAS = 4
INSTALLER_1877 = "nvidia-installer-op1877-cloud"
INSTALLER_2150 = "nvidia-installer-op2150-metal"
IMAGE_1877 = (
    "registry.example.com/gpu/nvidia-driver:580.159.04-gl1877.19-cloud-amd64-auto@sha256:" + "a1" * 32
)
IMAGE_2150 = (
    "registry.example.com/gpu/nvidia-driver:590.48.01-gl2150.11.0-metal-amd64-open@sha256:" + "b2" * 32
)

# Garden Linux versions no other e2e stack uses, so their nodes (still registered in the session) stay
# out of this stack's selections and this stack's nodes out of theirs.
NODES: dict[str, dict[str, str]] = {
    "op-gpu-1877": {"gpu": "true", "os-version": "1877.19"},
    "op-gpu-2150": {"gpu": "true", "os-version": "2150.11.0"},
    "op-cpu-1877": {"os-version": "1877.19"},
}
GPU_NODES = {"op-gpu-1877", "op-gpu-2150"}

CONFIG_LINES = [
    "pulumi config set --path 'pulumi:disable-default-providers[0]' kubernetes",
    f"pulumi config set --path namespace {INSTALLER_NAMESPACE}",
    "pulumi config set --path image.build false",
    "pulumi config set --path 'targets[0].name' op1877-cloud",
    "pulumi config set --path 'targets[0].glVersion' 1877.19",
    "pulumi config set --path 'targets[0].arch' amd64",
    "pulumi config set --path 'targets[0].flavour' cloud",
    "pulumi config set --path 'targets[0].driverVersion' 580.159.04",
    f"pulumi config set --path 'targets[0].image' {IMAGE_1877}",
    "pulumi config set --path 'targets[1].name' op2150-metal",
    "pulumi config set --path 'targets[1].glVersion' 2150.11.0",
    "pulumi config set --path 'targets[1].arch' amd64",
    "pulumi config set --path 'targets[1].flavour' metal",
    "pulumi config set --path 'targets[1].driverVersion' 590.48.01",
    "pulumi config set --path 'targets[1].moduleType' open",
    f"pulumi config set --path 'targets[1].image' {IMAGE_2150}",
    "pulumi config set --path devicePlugin.provider gpu-operator",
    f"pulumi config set --path gpuOperator.timeSlicing.replicas {REPLICAS}",
]

# The targets' node selections, written out here (not taken from the program): the bundled NFD worker
# must run on exactly these nodes.
EXPECTED_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "gpu", "operator": "Exists"},
                        {"key": "os-version", "operator": "In", "values": ["1877.19"]},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    ]
                },
                {
                    "matchExpressions": [
                        {"key": "gpu", "operator": "Exists"},
                        {"key": "os-version", "operator": "In", "values": ["2150.11.0"]},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    ]
                },
            ]
        }
    }
}

# The chart's defaults where they differ from what the program must set (as in NVIDIA's values.yaml),
# and one key the program leaves alone: the rendered values show which side won.
CHART_DEFAULTS = {
    "driver": {"enabled": True},
    "hostPaths": {"rootFS": "/", "driverInstallDir": "/run/nvidia/driver"},
    "cdi": {"enabled": False, "default": False},
    "toolkit": {"enabled": True, "installDir": "/usr/local/nvidia"},
    "devicePlugin": {"enabled": True, "config": {"name": "", "default": ""}},
    "mig": {"strategy": "single"},
    "migManager": {"enabled": True},
    "operator": {"defaultRuntime": "containerd"},
    "node-feature-discovery": {"worker": {"affinity": {}}},
}
CONFIG_MAP_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-rendered-values
  namespace: {{ .Release.Namespace }}
data:
  driverEnabled: {{ .Values.driver.enabled | quote }}
  driverInstallDir: {{ .Values.hostPaths.driverInstallDir | quote }}
  cdiEnabled: {{ .Values.cdi.enabled | quote }}
  devicePluginConfig: {{ .Values.devicePlugin.config.name | quote }}
  nfdWorkerAffinity: {{ (index .Values "node-feature-discovery" "worker" "affinity") | toJson | quote }}
  values: {{ .Values | toJson | quote }}
"""
# Placed as the chart's NFD worker is: by the affinity in the values, on every node it allows.
DAEMONSET_TEMPLATE = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ .Release.Name }}-nfd-worker
  namespace: {{ .Release.Namespace }}
spec:
  selector:
    matchLabels: {app: {{ .Release.Name }}-nfd-worker}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-nfd-worker}
    spec:
      affinity: {{ (index .Values "node-feature-discovery" "worker" "affinity") | toJson }}
      automountServiceAccountToken: false
      containers:
        - name: worker
          image: registry.example.com/e2e/nfd-worker:0.0.1
"""


def write_chart(directory: Path) -> Path:
    """The stand-in chart: Chart.yaml, values.yaml with the chart's defaults, two templates."""
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text(
        "apiVersion: v2\nname: gpu-operator\nversion: 0.0.1-e2e\nappVersion: e2e\n"
    )
    (directory / "values.yaml").write_text(yaml.safe_dump(CHART_DEFAULTS, sort_keys=False))
    (directory / "templates" / "rendered-values.yaml").write_text(CONFIG_MAP_TEMPLATE)
    (directory / "templates" / "nfd-worker.yaml").write_text(DAEMONSET_TEMPLATE)
    return directory


@dataclass
class OperatorStack:
    """The stack under test and what its preview and up printed."""

    project: Project
    plane: ControlPlane
    preview: subprocess.CompletedProcess[str]
    up: subprocess.CompletedProcess[str]

    @property
    def api(self) -> KubeApi:
        """The admin API client."""
        return self.plane.api


def pods_of(api: KubeApi, namespace: str, owner: str) -> list[dict[str, Any]]:
    """The live pods a DaemonSet owns."""
    return [
        pod
        for pod in api.items(f"/api/v1/namespaces/{namespace}/pods")
        if any(ref["name"] == owner for ref in pod["metadata"].get("ownerReferences", []))
        and not pod["metadata"].get("deletionTimestamp")
    ]


def nodes_of(api: KubeApi, namespace: str, owner: str) -> set[str]:
    """The nodes a DaemonSet's pods are bound to."""
    return {pod["spec"].get("nodeName", "<unscheduled>") for pod in pods_of(api, namespace, owner)}


def release_record(api: KubeApi) -> dict[str, Any]:
    """Helm's record of revision 1 of the release (a Secret: base64 of gzipped JSON)."""
    secret = api.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/sh.helm.release.v1.{RELEASE}.v1")
    packed = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    record: dict[str, Any] = json.loads(gzip.decompress(packed))
    return record


def rendered(api: KubeApi) -> dict[str, str]:
    """The data of the ConfigMap the chart rendered."""
    data: dict[str, str] = api.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps/{RENDERED}")["data"]
    return data


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane,
    kubelet: FakeKubelet,
    tools_bin: Path,
    pulumi_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorStack]:
    """Nodes registered, the chart written, the stack configured, previewed and applied."""
    api = control_plane.api
    api.create("/api/v1/namespaces", {"metadata": {"name": INSTALLER_NAMESPACE}})
    for name, labels in NODES.items():
        kubelet.add_node(name, labels)
    try:
        chart = write_chart(tmp_path_factory.mktemp("operator-chart") / "gpu-operator")
        project = Project.copy(tmp_path_factory.mktemp("gpu-operator"), tools_bin, pulumi_home)
        project.run("stack", "init", "operator")
        project.run("config", "set", "--secret", "kubeconfig", stdin=control_plane.kubeconfig.read_text())
        for line in CONFIG_LINES:
            project.run_line(line)
        project.run("config", "set", "--path", "gpuOperator.chart.path", str(chart))
        preview = project.run("preview", "--diff")
        up = project.run("up", "--yes", "--skip-preview")
        yield OperatorStack(project, control_plane, preview, up)
    finally:
        # The session's other stacks must not see these nodes.
        for name in NODES:
            kubelet.remove_node(name)


def test_preview_plans_the_release_and_no_gke_plugin(stack: OperatorStack) -> None:
    text = stack.preview.stdout
    assert "kubernetes:helm.sh/v3:Release" in text, text
    assert "gpu-operator-release" in text and "gpu-operator-namespace" in text
    assert "installer-op1877-cloud-daemonset" in text and "installer-op2150-metal-daemonset" in text
    assert "device-plugin-daemonset" not in text
    # Nothing about GKE's plugin either (its image used to draw a digest-pinning warning here), and no
    # note about installing the chart by hand: the release does.
    for result in (stack.preview, stack.up):
        output = result.stdout + result.stderr
        assert "devicePlugin.image" not in output, output
        assert "without gpuOperator.chart" not in output


def test_installers_run_and_no_gke_device_plugin_exists(stack: OperatorStack) -> None:
    daemonsets = {
        ds["metadata"]["name"]
        for ds in stack.api.items(f"/apis/apps/v1/namespaces/{INSTALLER_NAMESPACE}/daemonsets")
    }
    assert daemonsets == {INSTALLER_1877, INSTALLER_2150}
    wait_for("installer 1877", partial(nodes_of, stack.api, INSTALLER_NAMESPACE, INSTALLER_1877),
             {"op-gpu-1877"})  # fmt: skip
    wait_for("installer 2150", partial(nodes_of, stack.api, INSTALLER_NAMESPACE, INSTALLER_2150),
             {"op-gpu-2150"})  # fmt: skip
    # Nor anywhere else in the stack: only the installers are DaemonSets of the stack itself.
    resources = stack.project.stack_export()["deployment"]["resources"]
    kinds = [r["outputs"]["metadata"]["name"] for r in resources
             if r["type"] == "kubernetes:apps/v1:DaemonSet"]  # fmt: skip
    assert sorted(kinds) == [INSTALLER_1877, INSTALLER_2150]
    for namespace in (INSTALLER_NAMESPACE, OPERATOR_NAMESPACE):
        assert not stack.api.exists(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/nvidia-device-plugin")


def test_the_release_objects_exist_in_the_privileged_operator_namespace(stack: OperatorStack) -> None:
    namespace = stack.api.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    record = release_record(stack.api)
    assert (record["name"], record["namespace"], record["version"]) == (RELEASE, OPERATOR_NAMESPACE, 1)
    assert record["info"]["status"] == "deployed"
    assert record["chart"]["metadata"]["version"] == "0.0.1-e2e"
    for path in (f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps/{RENDERED}",
                 f"/apis/apps/v1/namespaces/{OPERATOR_NAMESPACE}/daemonsets/{NFD_WORKER}"):  # fmt: skip
        live = stack.api.get(path)
        assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", path
        assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE, path
    assert stack.project.outputs()["gpuOperatorRelease"] == f"{OPERATOR_NAMESPACE}/{RELEASE}"


def test_the_chart_rendered_the_programs_values(stack: OperatorStack) -> None:
    data = rendered(stack.api)
    assert data["driverEnabled"] == "false"  # the chart's default (true) overridden
    assert data["driverInstallDir"] == "/run/nvidia/driver"
    assert data["cdiEnabled"] == "true"
    assert json.loads(data["nfdWorkerAffinity"]) == EXPECTED_AFFINITY
    # The device plugin's config names the time-slicing ConfigMap the stack declared in that namespace.
    config_map = stack.api.get(
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps/{data['devicePluginConfig']}"
    )
    config = yaml.safe_load(config_map["data"]["nvidia-installer"])
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": REPLICAS}]
    values = json.loads(data["values"])
    assert values["toolkit"]["installDir"] == "/opt/nvidia"
    assert (values["mig"]["strategy"], values["migManager"]["enabled"]) == ("none", False)
    assert values["operator"] == {"defaultRuntime": "containerd"}  # a default the program leaves alone


def test_stack_output_equals_what_reached_the_release(stack: OperatorStack) -> None:
    output = stack.project.outputs()["gpuOperatorValues"]
    # Helm keeps the values it was given apart from the chart's defaults: exactly the output.
    assert release_record(stack.api)["config"] == output
    # And every value the program set is the one the chart rendered (over its defaults).
    values = json.loads(rendered(stack.api)["values"])

    def leaves(document: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
        for key, value in document.items():
            if isinstance(value, dict) and key != "affinity":
                yield from leaves(value, (*prefix, key))
            else:
                yield (*prefix, key)

    def at(document: dict[str, Any], path: tuple[str, ...]) -> Any:
        for key in path:
            document = document[key]
        return document

    paths = list(leaves(output))
    assert len(paths) >= 15
    for path in paths:
        assert at(values, path) == at(output, path), path


def test_the_nfd_worker_runs_on_exactly_the_targets_gpu_nodes(stack: OperatorStack) -> None:
    # The real scheduler placed the chart's DaemonSet with the affinity from the values: the GPU nodes of
    # both targets, not the CPU node, not the GPU nodes of other Garden Linux versions in the cluster.
    wait_for("nodes of the NFD worker", partial(nodes_of, stack.api, OPERATOR_NAMESPACE, NFD_WORKER),
             GPU_NODES)  # fmt: skip


def test_a_sharing_change_reaches_the_release_under_a_new_config_name(stack: OperatorStack) -> None:
    # The operator does not watch the ConfigMap: a new content must come with a new name in the values.
    old_name = rendered(stack.api)["devicePluginConfig"]
    stack.project.run("config", "set", "--path", "gpuOperator.timeSlicing.replicas", "2")
    stack.project.run("up", "--yes", "--skip-preview")
    new_name = rendered(stack.api)["devicePluginConfig"]
    assert new_name != old_name
    config_maps = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps/"
    config = yaml.safe_load(stack.api.get(config_maps + new_name)["data"]["nvidia-installer"])
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 2}]
    assert not stack.api.exists(config_maps + old_name)
    # An upgrade of the same release (revision 2), with the output's values.
    secrets = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/sh.helm.release.v1.{RELEASE}.v"
    assert stack.api.exists(secrets + "2")
    assert stack.project.outputs()["gpuOperatorValues"]["devicePlugin"]["config"]["name"] == new_name
    stack.project.run("preview", "--expect-no-changes")


def test_a_contradicting_mig_setting_fails_the_preview_with_one_line(stack: OperatorStack) -> None:
    project = stack.project
    project.run("config", "set", "--path", "gpuOperator.mig.manager", "true")
    try:
        result = project.run("preview", "--diff", check=False)
    finally:
        project.run("config", "rm", "--path", "gpuOperator.mig.manager")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        "gpuOperator.mig.manager: true with strategy 'none': the MIG manager would split GPUs the device "
        "plugin never advertises; expected strategy single or mixed with manager true, or manager false"
    ) in output, output
    assert "Traceback" not in output and "unhandled error" not in output
    # Back to the applied settings: nothing to change.
    project.run("preview", "--expect-no-changes")


def test_destroy_removes_the_release_and_its_objects(stack: OperatorStack) -> None:
    stack.project.run("destroy", "--yes", "--skip-preview")
    api = stack.api
    for path in (f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps/{RENDERED}",
                 f"/apis/apps/v1/namespaces/{OPERATOR_NAMESPACE}/daemonsets/{NFD_WORKER}",
                 f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/sh.helm.release.v1.{RELEASE}.v1",
                 f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/sh.helm.release.v1.{RELEASE}.v2",
                 f"/apis/apps/v1/namespaces/{INSTALLER_NAMESPACE}/daemonsets/{INSTALLER_1877}",
                 f"/apis/apps/v1/namespaces/{INSTALLER_NAMESPACE}/daemonsets/{INSTALLER_2150}"):  # fmt: skip
        assert not api.exists(path), f"{path} survived destroy"
    wait_for("pods of the NFD worker after destroy",
             partial(pods_of, api, OPERATOR_NAMESPACE, NFD_WORKER), [])  # fmt: skip
    # The namespace the stack declared is gone too (the namespace controller finalized it).
    wait_for("the operator namespace after destroy",
             partial(api.exists, f"/api/v1/namespaces/{OPERATOR_NAMESPACE}"), False)  # fmt: skip
