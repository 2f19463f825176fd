"""GPU Operator mode (`devicePlugin.provider: gpu-operator`), run in-process under the tests' mocks: no GKE
plugin, the chart values the stack implies (driver left to this project, node selection of exactly the
targets), the time-slicing ConfigMap the values name, and the Helm release wiring. No chart is downloaded:
the tests that need one write a tiny chart directory themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from components import operator_values, render
from components.operator_config import GpuOperatorConfig
from components.selection import target_selection
from tests.pulumi import harness as h

RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
DS_TYPE = "kubernetes:apps/v1:DaemonSet"
CM_TYPE = "kubernetes:core/v1:ConfigMap"
NS_TYPE = "kubernetes:core/v1:Namespace"


def _operator_config(
    gpu_operator: dict[str, Any] | None = None, **plugin: Any
) -> tuple[dict[str, Any], list[str]]:
    drivers = h.checksummed()
    keys: dict[str, Any] = {"devicePlugin": {"provider": "gpu-operator", **plugin}}
    if gpu_operator is not None:
        keys["gpuOperator"] = gpu_operator
    return h.build_config(
        [
            h.target("vm", "1877.17", drivers[0]),
            h.target("metal", "2150.9.0", drivers[1], flavour="metal"),
        ],
        **keys,
    )


def _chart(directory: Path) -> Path:
    """A minimal chart: Chart.yaml only (the mocks never render it)."""
    directory.mkdir(parents=True)
    (directory / "Chart.yaml").write_text("apiVersion: v2\nname: gpu-operator\nversion: 0.0.1\n")
    return directory


def _values(outputs: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = h.plain(outputs["gpuOperatorValues"])
    return values


def test_operator_mode_declares_no_gke_plugin_and_no_release_without_a_chart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notes: list[str] = []
    monkeypatch.setattr(pulumi.log, "info", lambda message, *args, **kwargs: notes.append(message))
    config, secret = _operator_config()
    recorder, result = h.run(config, secret)
    daemonsets = [r.inputs["metadata"]["name"] for r in recorder.of_type(DS_TYPE)]
    assert sorted(daemonsets) == ["nvidia-installer-metal", "nvidia-installer-vm"]
    assert recorder.of_type(RELEASE_TYPE) == []
    assert "devicePluginDaemonSet" not in result.outputs
    assert "gpuOperatorRelease" not in result.outputs
    (namespace,) = recorder.of_type(NS_TYPE)
    assert namespace.inputs["metadata"]["name"] == "gpu-operator"
    assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    (note,) = [n for n in notes if "gpuOperator.chart" in n]
    assert "helm upgrade --install" in note and "--namespace gpu-operator" in note
    assert "gpuOperatorValues" in note


def test_gke_mode_is_unchanged_and_exports_no_operator_values() -> None:
    drivers = h.checksummed()
    config, secret = h.build_config([h.target("vm", "1877.17", drivers[0])])
    recorder, result = h.run(config, secret)
    assert "nvidia-device-plugin" in [r.inputs["metadata"]["name"] for r in recorder.of_type(DS_TYPE)]
    assert "gpuOperatorValues" not in result.outputs
    assert recorder.of_type(NS_TYPE) == [] and recorder.of_type(RELEASE_TYPE) == []


def test_values_leave_the_driver_to_this_project_and_follow_the_stack() -> None:
    config, secret = _operator_config(
        {"toolkit": True, "cdi": False, "dcgmExporter": False, "mig": {"strategy": "single", "manager": True}}
    )
    _, result = h.run(config, secret)
    values = _values(result.outputs)
    assert values["driver"] == {"enabled": False}
    # The node installer's contract (docs/node.md): the driver tree in use is bind-mounted here.
    assert values["hostPaths"] == {"driverInstallDir": "/run/nvidia/driver"}
    assert values["toolkit"]["enabled"] is True
    # /usr is read-only on Garden Linux: the toolkit must not install under it.
    assert not values["toolkit"]["installDir"].startswith("/usr/")
    assert values["cdi"] == {"enabled": False, "default": False}
    assert values["dcgmExporter"] == {"enabled": False}
    assert values["mig"] == {"strategy": "single"}
    assert values["migManager"] == {"enabled": True}
    assert values["devicePlugin"] == {"enabled": True}


def test_defaults_run_toolkit_cdi_and_dcgm_with_mig_off() -> None:
    config, secret = _operator_config()
    _, result = h.run(config, secret)
    values = _values(result.outputs)
    assert values["toolkit"]["enabled"] is True
    assert values["cdi"]["enabled"] is True
    assert values["dcgmExporter"]["enabled"] is True
    assert values["mig"]["strategy"] == "none" and values["migManager"]["enabled"] is False
    assert values["nfd"]["enabled"] is True


def test_the_bundled_nfd_runs_on_exactly_the_targets_nodes() -> None:
    pool = {"key": "pool", "operator": "In", "values": ["a100"]}
    pin = {"key": "os-version", "operator": "In", "values": ["2150.9.0"]}
    config, secret = _operator_config()
    config[f"{h.NS}:targets"][1]["nodeSelector"] = [pool, pin]
    _, result = h.run(config, secret)
    terms = _values(result.outputs)["node-feature-discovery"]["worker"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    arch = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
    # One term per target (a node matching any target): the default selection for "vm", the user's
    # expressions for "metal", the arch always added.
    assert terms == [
        {
            "matchExpressions": [
                {"key": "gpu", "operator": "Exists"},
                {"key": "os-version", "operator": "In", "values": ["1877.17"]},
                arch,
            ]
        },
        {"matchExpressions": [pool, pin, arch]},
    ]


def test_external_nfd_turns_the_bundled_one_off_and_sets_no_worker_placement() -> None:
    config, secret = _operator_config({"nfd": "external"})
    _, result = h.run(config, secret)
    values = _values(result.outputs)
    assert values["nfd"] == {"enabled": False}
    assert "node-feature-discovery" not in values


def test_time_slicing_config_map_is_the_one_the_values_name() -> None:
    config, secret = _operator_config({"namespace": "gpu-system", "timeSlicing": {"replicas": 4}, "mig": {}})
    recorder, result = h.run(config, secret)
    values = _values(result.outputs)
    (config_map,) = [
        r for r in recorder.of_type(CM_TYPE) if r.inputs["metadata"]["namespace"] == "gpu-system"
    ]
    name = config_map.inputs["metadata"]["name"]
    assert values["devicePlugin"]["config"]["name"] == name
    key = values["devicePlugin"]["config"]["default"]
    plugin_config = yaml.safe_load(config_map.inputs["data"][key])
    assert plugin_config["version"] == "v1"
    assert plugin_config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    assert plugin_config["flags"]["migStrategy"] == values["mig"]["strategy"]


def test_a_new_replica_count_is_a_new_config_map_name() -> None:
    names = []
    for replicas in (2, 3):
        config, secret = _operator_config({"timeSlicing": {"replicas": replicas}})
        _, result = h.run(config, secret)
        names.append(_values(result.outputs)["devicePlugin"]["config"]["name"])
    assert names[0] != names[1]


class _ReleaseOptions:
    """Records the options each Helm release is declared with (the mocks do not see dependencies)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.depends_on: list[list[pulumi.Resource]] = []
        original = k8s.helm.v3.Release
        recorder = self

        class Recording(original):  # type: ignore[misc, valid-type]
            def __init__(
                self, resource_name: str, *args: Any, opts: pulumi.ResourceOptions, **kwargs: Any
            ) -> None:
                recorder.depends_on.append(list(opts.depends_on or []))  # type: ignore[arg-type]
                super().__init__(resource_name, *args, opts=opts, **kwargs)

        monkeypatch.setattr(k8s.helm.v3, "Release", Recording)


def test_release_of_a_local_chart_gets_the_values_and_waits_for_the_installers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = _ReleaseOptions(monkeypatch)
    chart = _chart(tmp_path / "gpu-operator")
    config, secret = _operator_config({"chart": {"path": str(chart)}, "namespace": "gpu-system"})
    recorder, result = h.run(config, secret)
    (release,) = recorder.of_type(RELEASE_TYPE)
    inputs = h.plain(release.inputs)
    assert inputs["chart"] == str(chart)
    assert "version" not in inputs and "repositoryOpts" not in inputs
    assert inputs["namespace"] == "gpu-system"
    assert inputs["values"] == _values(result.outputs)
    assert result.outputs["gpuOperatorRelease"] == f"gpu-system/{inputs['name']}"
    (depends,) = options.depends_on
    installer_names = {d._name for d in depends if isinstance(d, pulumi.ComponentResource)}
    assert installer_names == {"installer-vm", "installer-metal"}
    assert any(isinstance(d, k8s.core.v1.Namespace) for d in depends)


def test_release_from_a_repository_pins_name_and_version() -> None:
    chart = {"repository": "https://helm.ngc.nvidia.com/nvidia", "version": "v24.6.2"}
    config, secret = _operator_config({"chart": chart})
    recorder, _ = h.run(config, secret)
    (release,) = recorder.of_type(RELEASE_TYPE)
    inputs = h.plain(release.inputs)
    assert inputs["chart"] == "gpu-operator"
    assert inputs["version"] == "v24.6.2"
    assert inputs["repositoryOpts"] == {"repo": "https://helm.ngc.nvidia.com/nvidia"}
    assert inputs["namespace"] == "gpu-operator"


def test_every_value_is_a_key_of_the_chart_version_read() -> None:
    config, secret = _operator_config(
        {"timeSlicing": {"replicas": 2}, "mig": {"strategy": "single", "manager": True}}
    )
    _, result = h.run(config, secret)
    paths = set(operator_values.leaf_paths(_values(result.outputs)))
    assert paths <= operator_values.CHART_VALUE_PATHS
    # Every key listed is produced by some stack: the list holds no key nobody checks.
    config, secret = _operator_config({"timeSlicing": {"replicas": 2}})
    _, external = h.run(config, secret)
    assert (
        paths | set(operator_values.leaf_paths(_values(external.outputs)))
        == operator_values.CHART_VALUE_PATHS
    )


SELECTIONS = [target_selection("amd64", None, "1877.17")]


def _good_values() -> dict[str, Any]:
    return operator_values.values(GpuOperatorConfig(), SELECTIONS, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v["toolkit"].update(installPath="/opt/x"), "toolkit.installPath"),
        (lambda v: v["driver"].update(enabled=True), "driver.enabled"),
        (
            lambda v: v["hostPaths"].update(driverInstallDir="/opt/nvidia-installer/driver"),
            "driverInstallDir",
        ),
        (lambda v: v["migManager"].update(enabled=True), "migManager"),
        (
            lambda v: v["node-feature-discovery"]["worker"].update(affinity={}),
            "the targets' node selection",
        ),
    ],
)
def test_check_refuses_values_that_contradict_the_chart_or_the_targets(change: Any, message: str) -> None:
    values = _good_values()
    operator_values.check(values, SELECTIONS)
    change(values)
    with pytest.raises(operator_values.OperatorValuesError, match=message):
        operator_values.check(values, SELECTIONS)


def test_offline_render_writes_the_values_next_to_the_manifests(tmp_path: Path) -> None:
    document = yaml.safe_load((render.STACKS_DIR / "Pulumi.dev.yaml").read_text())
    document["config"][f"{h.NS}:devicePlugin"] = {"provider": "gpu-operator"}
    document["config"][f"{h.NS}:gpuOperator"] = {"timeSlicing": {"replicas": 3}}
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    (stacks / "Pulumi.operator.yaml").write_text(yaml.safe_dump(document))
    out = tmp_path / "out"
    assert render.main(["operator", "--stacks-dir", str(stacks), "--out", str(out)]) == 0
    written = yaml.safe_load((out / render.VALUES_FILE).read_text())
    expected = render.render_stack("operator", stacks).operator_values
    assert written == expected
    assert written["driver"] == {"enabled": False}
    manifests = {p.name for p in out.glob("*.yaml")} - {render.VALUES_FILE}
    assert not any("nvidia-device-plugin" in name for name in manifests)
    config_map = f"configmap-{written['devicePlugin']['config']['name']}.yaml"
    assert config_map in manifests
    assert "namespace-gpu-operator.yaml" in manifests
    # Back to GKE's plugin: the values file of the earlier render must not survive.
    del document["config"][f"{h.NS}:devicePlugin"], document["config"][f"{h.NS}:gpuOperator"]
    (stacks / "Pulumi.operator.yaml").write_text(yaml.safe_dump(document))
    assert render.main(["operator", "--stacks-dir", str(stacks), "--out", str(out)]) == 0
    assert not (out / render.VALUES_FILE).exists()
    assert (out / "daemonset-nvidia-device-plugin.yaml").exists()
