"""A catalogue of invalid stack configurations. Each must fail before any resource is registered, with a
message naming the key path, the bad value and the expected form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from components.checksums import available_checksums
from tests.pulumi import harness as h

Config = dict[str, Any]
T = f"{h.NS}:targets"


def _base() -> tuple[Config, list[str]]:
    drivers = h.checksummed()
    assert len(drivers) >= 2, "the checksum file should list at least two amd64 drivers"
    return h.build_config(
        [
            h.target("vm", "1877.17", drivers[0]),
            h.target("metal", "2150.9.0", drivers[1], flavour="metal"),
        ]
    )


def _target(index: int, **changes: Any) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        config[T][index].update(changes)

    return mutate


def _set(key: str, value: Any) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        config[f"{h.NS}:{key}" if ":" not in key else key] = value

    return mutate


def _drop(key: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        del config[key if ":" in key else f"{h.NS}:{key}"]

    return mutate


def _both(*mutators: Callable[[Config], None]) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        for m in mutators:
            m(config)

    return mutate


def _no_checksum_arm64() -> str:
    """A well-formed driver version without an aarch64 checksum (read from the file, not assumed)."""
    listed = {v for a, v in available_checksums() if a == "arm64"}
    candidates = [v for v in h.checksummed("amd64") if v not in listed] + ["580.999.99"]
    return candidates[0]


def _prebuilt(config: Config) -> None:
    config[f"{h.NS}:image"] = {"build": False}
    for t in config[T]:
        t["image"] = "registry.test:5000/gpu/driver:x@sha256:" + "a" * 64


def _operator(settings: dict[str, Any]) -> Callable[[Config], None]:
    """GPU Operator mode with these gpuOperator settings."""

    def mutate(config: Config) -> None:
        config[f"{h.NS}:devicePlugin"] = {"provider": "gpu-operator"}
        config[f"{h.NS}:gpuOperator"] = settings

    return mutate


PIN_1877 = {"key": "os-version", "operator": "In", "values": ["1877.17"]}
SELECTOR_OVERLAP = [
    PIN_1877,
    {"key": "pool", "operator": "In", "values": ["a", "b"]},
]

# (mutation, key path, bad value as shown, expected form fragment, secret value that must NOT be shown)
CASES: list[Any] = [
    pytest.param(
        _target(0, glVersion="1877.17.1"),
        "targets[0].glVersion",
        "'1877.17.1'",
        "two parts below 2150",
        id="gl-three-part-too-early",
    ),
    pytest.param(
        _target(1, glVersion="2150.9"),
        "targets[1].glVersion",
        "'2150.9'",
        "three parts from 2150",
        id="gl-two-part-too-late",
    ),
    pytest.param(
        _target(0, glVersion="latest"),
        "targets[0].glVersion",
        "'latest'",
        "like 1877.17",
        id="gl-not-a-version",
    ),
    pytest.param(
        _target(0, glVersion=1877.1),
        "targets[0].glVersion",
        "1877.1",
        "quote it in YAML",
        id="gl-as-yaml-number",
    ),
    pytest.param(
        _target(0, driverVersion="580"),
        "targets[0].driverVersion",
        "'580'",
        "MAJOR.MINOR.PATCH",
        id="driver-one-part",
    ),
    pytest.param(
        _target(0, arch="x86_64"), "targets[0].arch", "'x86_64'", "'amd64' or 'arm64'", id="unknown-arch"
    ),
    pytest.param(
        _target(1, flavour="baremetal"),
        "targets[1].flavour",
        "'baremetal'",
        "'cloud' or 'metal'",
        id="unknown-flavour",
    ),
    pytest.param(
        _target(0, moduleType="closed"),
        "targets[0].moduleType",
        "'closed'",
        "'open' or 'proprietary'",
        id="unknown-module-type",
    ),
    pytest.param(_target(1, name="vm"), "targets[1].name", "'vm'", "unique", id="duplicate-target-name"),
    pytest.param(_target(0, name="GPU_pool"), "targets[0].name", "'GPU_pool'", "DNS-1123", id="name-not-dns"),
    pytest.param(
        _target(1, glVersion="1877.17", flavour="cloud"),
        "targets[1].nodeSelector",
        "('vm')",
        "disjoint",
        id="overlap-default-selection",
    ),
    pytest.param(
        _both(
            _target(0, nodeSelector=SELECTOR_OVERLAP),
            _target(
                1,
                glVersion="1877.17",
                nodeSelector=[PIN_1877, {"key": "pool", "operator": "In", "values": ["b"]}],
            ),
        ),
        "targets[1].nodeSelector",
        "('metal')",
        "disjoint",
        id="overlap-shared-in-value",
    ),
    pytest.param(
        _both(
            _target(0, nodeSelector=[PIN_1877, {"key": "pool", "operator": "NotIn", "values": ["b"]}]),
            _target(1, glVersion="1877.17", nodeSelector=[PIN_1877, {"key": "zone", "operator": "Exists"}]),
        ),
        "targets[1].nodeSelector",
        "('vm')",
        "disjoint",
        id="overlap-notin-vs-other-key",
    ),
    pytest.param(
        _set("registryPassword", "hunter2-plain"),
        "registryPassword",
        "value not shown",
        "--secret",
        id="plain-text-password",
    ),
    pytest.param(
        _set(
            "registry",
            {"server": "r.test", "repository": "gpu/d", "username": "u", "password": "hunter2-inline"},
        ),
        "registry.password",
        "value not shown",
        "--secret registryPassword",
        id="password-in-registry",
    ),
    pytest.param(
        _both(_drop("registry"), _drop("registryPassword")),
        "registry",
        "missing",
        "{server, repository, username}",
        id="missing-registry-when-building",
    ),
    pytest.param(
        _drop("registryPassword"),
        "registryPassword",
        "'robot'",
        "--secret registryPassword",
        id="username-without-password",
    ),
    pytest.param(
        _set("regsitry", {"server": "r.test"}),
        "regsitry",
        "unknown key",
        "registry,",
        id="unknown-top-level-key",
    ),
    pytest.param(
        _target(0, glversion="1877.17"),
        "targets[0].glversion",
        "unknown key",
        "glVersion",
        id="unknown-target-key",
    ),
    pytest.param(
        _target(1, driverVersion="570.172.08", glVersion="2150.8.0"),
        "targets[1].driverVersion",
        "'570.172.08'",
        "other than 570",
        id="branch-570-on-kernel-6.18.41",
    ),
    pytest.param(
        _target(0, driverVersion="580.999.99"),
        "targets[0].driverVersion",
        "'580.999.99'",
        "a version listed for x86_64",
        id="driver-without-checksum",
    ),
    pytest.param(
        _target(0, arch="arm64", driverVersion=_no_checksum_arm64()),
        "targets[0].driverVersion",
        f"'{_no_checksum_arm64()}'",
        "aarch64",
        id="arm64-driver-without-checksum",
    ),
    pytest.param(
        _both(_prebuilt, _target(1, image=None)),
        "targets[1].image",
        "missing",
        "image reference",
        id="prebuilt-image-missing",
    ),
    pytest.param(
        _target(0, image="registry.test/x:1"),
        "targets[0].image",
        "'registry.test/x:1'",
        "image.build=false",
        id="image-set-while-building",
    ),
    pytest.param(
        _both(_prebuilt, _target(0, image="Registry Test/x")),
        "targets[0].image",
        "'Registry Test/x'",
        "image reference",
        id="prebuilt-image-malformed",
    ),
    pytest.param(
        _set("namespace", "Kube_System"), "namespace", "'Kube_System'", "DNS-1123", id="bad-namespace"
    ),
    pytest.param(
        _set("cluster", {"context": "c", "renderDirectory": "out"}),
        "cluster.renderDirectory",
        "'out'",
        "either renderDirectory",
        id="render-and-context",
    ),
    pytest.param(_set("cluster", {}), "cluster", "no cluster given", "cluster.context", id="no-cluster"),
    pytest.param(
        _set("devicePlugin", {"timeSharing": {"maxSharedClientsPerGpu": 1}}),
        "devicePlugin.timeSharing.maxSharedClientsPerGpu",
        "1",
        "from 2 to 48",
        id="sharing-too-low",
    ),
    pytest.param(
        _target(0, nodeSelector=[{"key": "gpu", "operator": "Equals"}]),
        "targets[0].nodeSelector[0].operator",
        "'Equals'",
        "'Exists'",
        id="bad-operator",
    ),
    pytest.param(
        _target(0, nodeSelector=[{"key": "gpu", "operator": "In"}]),
        "targets[0].nodeSelector[0].values",
        "In needs values",
        "non-empty list",
        id="in-without-values",
    ),
    pytest.param(
        _target(0, nodeSelector=[{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]),
        "targets[0].nodeSelector",
        "kubernetes.io/arch In [arm64]",
        "some node can satisfy",
        id="selection-contradicts-arch",
    ),
    pytest.param(
        _target(0, nodeSelector=[{"key": "pool", "operator": "In", "values": ["a100"]}]),
        "targets[0].nodeSelector",
        "pool In [a100]",
        "os-version In [1877.17]",
        id="selection-without-version",
    ),
    pytest.param(
        _target(1, nodeSelector=[{"key": "os-version", "operator": "In", "values": ["1877.17"]}]),
        "targets[1].nodeSelector",
        "os-version In [1877.17]",
        "os-version In [2150.9.0]",
        id="selection-contradicts-gl-version",
    ),
    pytest.param(
        _target(0, nodeSelector=[{"key": "os-version", "operator": "In", "values": ["1877.17", "2150.9.0"]}]),
        "targets[0].nodeSelector",
        "os-version In [1877.17, 2150.9.0]",
        "os-version In [1877.17]",
        id="selection-admits-two-gl-versions",
    ),
    pytest.param(
        _set("moduleParameters", {"nvidia": ["NVreg Foo"]}),
        "moduleParameters.nvidia",
        "'NVreg Foo'",
        "NAME=VALUE",
        id="bad-module-parameter",
    ),
    pytest.param(
        _drop("pulumi:disable-default-providers"),
        "pulumi:disable-default-providers",
        "None",
        "kubernetes",
        id="default-provider-enabled",
    ),
    pytest.param(
        _set("registry", {"server": "https://r.test", "repository": "gpu/d", "username": "u"}),
        "registry.server",
        "'https://r.test'",
        "no scheme",
        id="registry-with-scheme",
    ),
    pytest.param(
        _set("devicePlugin", {"image": "gcr.io/x:1 latest"}),
        "devicePlugin.image",
        "'gcr.io/x:1 latest'",
        "image reference",
        id="bad-device-plugin-image",
    ),
    pytest.param(
        _set("devicePlugin", {"provider": "nvidia"}),
        "devicePlugin.provider",
        "'nvidia'",
        "'gpu-operator'",
        id="unknown-device-plugin-provider",
    ),
    pytest.param(
        _set("devicePlugin", {"provider": "gpu-operator", "image": "gcr.io/x/plugin:1"}),
        "devicePlugin.image",
        "'gcr.io/x/plugin:1'",
        "no devicePlugin.image in operator mode",
        id="operator-with-gke-plugin-image",
    ),
    pytest.param(
        _set("devicePlugin", {"provider": "gpu-operator", "timeSharing": {"maxSharedClientsPerGpu": 4}}),
        "devicePlugin.timeSharing",
        "'gpu-operator'",
        "gpuOperator.timeSlicing.replicas",
        id="operator-with-gke-time-sharing",
    ),
    pytest.param(
        _set("gpuOperator", {"namespace": "gpu-operator"}),
        "gpuOperator",
        "provider is 'gke'",
        "devicePlugin.provider gpu-operator",
        id="operator-block-with-gke-provider",
    ),
    pytest.param(
        _operator({"mig": {"strategy": "none", "manager": True}}),
        "gpuOperator.mig.manager",
        "strategy 'none'",
        "strategy single or mixed",
        id="mig-manager-without-strategy",
    ),
    pytest.param(
        _operator({"mig": {"strategy": "mixed"}, "timeSlicing": {"replicas": 2}}),
        "gpuOperator.timeSlicing",
        "'mixed'",
        "mig.strategy none or single",
        id="time-slicing-with-mixed-mig",
    ),
    pytest.param(
        _operator({"timeSlicing": {"replicas": 1}}),
        "gpuOperator.timeSlicing.replicas",
        "1",
        "at least 2",
        id="time-slicing-one-replica",
    ),
    pytest.param(
        _operator({"mig": {"strategy": "single", "manager": "yes"}}),
        "gpuOperator.mig.manager",
        "'yes'",
        "true or false",
        id="mig-manager-not-a-bool",
    ),
    pytest.param(
        _operator({"chart": {"path": "charts/none", "repository": "https://helm.ngc.nvidia.com/nvidia"}}),
        "gpuOperator.chart.path",
        "'charts/none'",
        "{path: <directory holding Chart.yaml>} or {repository",
        id="chart-path-and-repository",
    ),
    pytest.param(
        _operator({"chart": {"repository": "https://helm.ngc.nvidia.com/nvidia"}}),
        "gpuOperator.chart.version",
        "missing",
        "a chart version like v24.6.2",
        id="chart-repository-without-version",
    ),
    pytest.param(
        _operator({"chart": {"repository": "helm.ngc.nvidia.com/nvidia", "version": "v24.6.2"}}),
        "gpuOperator.chart.repository",
        "'helm.ngc.nvidia.com/nvidia'",
        "https://",
        id="chart-repository-without-scheme",
    ),
    pytest.param(
        _operator({"chart": {"repository": "https://helm.ngc.nvidia.com/nvidia", "version": "latest"}}),
        "gpuOperator.chart.version",
        "'latest'",
        "semantic version",
        id="chart-version-not-a-version",
    ),
    pytest.param(
        _operator({"chart": {"path": "charts/no-such-chart"}}),
        "gpuOperator.chart.path",
        "'charts/no-such-chart'",
        "a chart directory",
        id="chart-path-without-chart-yaml",
    ),
    pytest.param(
        _operator({"chart": {}}),
        "gpuOperator.chart",
        "neither path nor repository",
        "{path: <directory holding Chart.yaml>}",
        id="chart-without-source",
    ),
    pytest.param(
        _both(
            _operator({"chart": {"repository": "oci://registry.test/charts", "version": "v24.6.2"}}),
            _drop("registryPassword"),
            _set("registry", {"server": "r.test", "repository": "gpu/d"}),
            _set("cluster", {"renderDirectory": "out/manifests"}),
        ),
        "gpuOperator.chart",
        "'out/manifests'",
        "no chart in render mode",
        id="chart-in-render-mode",
    ),
    pytest.param(
        _both(
            _operator({}),
            _target(
                0,
                nodeSelector=[
                    {
                        "key": "feature.node.kubernetes.io/pci-10de.present",
                        "operator": "In",
                        "values": ["true"],
                    },
                    PIN_1877,
                ],
            ),
        ),
        "gpuOperator.nfd",
        "feature.node.kubernetes.io/pci-10de.present",
        "nfd: external",
        id="bundled-nfd-with-nfd-selected-target",
    ),
    pytest.param(
        _operator({"namespace": "GPU_Operator"}),
        "gpuOperator.namespace",
        "'GPU_Operator'",
        "DNS-1123",
        id="bad-operator-namespace",
    ),
    pytest.param(
        _operator({"dcgm": False}),
        "gpuOperator.dcgm",
        "unknown key",
        "dcgmExporter",
        id="unknown-operator-key",
    ),
    pytest.param(_drop("targets"), "targets", "missing", "non-empty list of targets", id="no-targets"),
    pytest.param(
        _set("cluster", {"renderDirectory": "out/manifests"}),
        "cluster.renderDirectory",
        "'out/manifests'",
        "without registry credentials",
        id="render-mode-with-credentials",
    ),
    pytest.param(
        _set("rollout", {"maxUnavailable": 0}),
        "rollout.maxUnavailable",
        "0",
        "an integer of 1 or more",
        id="rollout-width-zero",
    ),
    pytest.param(
        _set("rollout", {"maxUnavailable": -2}),
        "rollout.maxUnavailable",
        "-2",
        "0 or below would let no node change",
        id="rollout-width-negative",
    ),
    pytest.param(
        _set("rollout", {"maxUnavailable": "0%"}),
        "rollout.maxUnavailable",
        "'0%'",
        "'1%' to '100%'",
        id="rollout-width-zero-percent",
    ),
    pytest.param(
        _set("rollout", {"maxUnavailable": "150%"}),
        "rollout.maxUnavailable",
        "'150%'",
        "'1%' to '100%'",
        id="rollout-width-over-100-percent",
    ),
    pytest.param(
        _set("rollout", {"maxUnavailable": True}),
        "rollout.maxUnavailable",
        "True",
        "an integer of 1 or more",
        id="rollout-width-bool",
    ),
    pytest.param(
        _set("rollout", {"maxUnavailable": "two"}),
        "rollout.maxUnavailable",
        "'two'",
        "a percentage",
        id="rollout-width-word",
    ),
    pytest.param(
        _set("rollout", {"timeoutMinutes": 0}),
        "rollout.timeoutMinutes",
        "0",
        "an integer of 1 or more: minutes",
        id="rollout-timeout-zero",
    ),
    pytest.param(
        _set("rollout", {"timeoutMinutes": -5}),
        "rollout.timeoutMinutes",
        "-5",
        "greater than or equal to 1",
        id="rollout-timeout-negative",
    ),
    pytest.param(
        _set("rollout", {"timeoutMinutes": "30m"}),
        "rollout.timeoutMinutes",
        "'30m'",
        "an integer of 1 or more: minutes",
        id="rollout-timeout-duration-string",
    ),
    pytest.param(
        _set("rollout", {"timeoutMinutes": 2.5}),
        "rollout.timeoutMinutes",
        "2.5",
        "an integer",
        id="rollout-timeout-fraction",
    ),
    pytest.param(
        _set("rollout", {"width": 2}),
        "rollout.width",
        "unknown key",
        "maxUnavailable, timeoutMinutes",
        id="rollout-unknown-key",
    ),
    pytest.param(
        _set("rollout", 3),
        "rollout",
        "3",
        "{maxUnavailable?, timeoutMinutes?, drain?}",
        id="rollout-not-an-object",
    ),
    pytest.param(
        _set("rollout", {"drain": {"mode": "drain"}}),
        "rollout.drain.mode",
        "'drain'",
        "one of 'none' or 'evict'",
        id="drain-mode-unknown",
    ),
    pytest.param(
        _set("rollout", {"drain": {"mode": True}}),
        "rollout.drain.mode",
        "True",
        "one of 'none' or 'evict'",
        id="drain-mode-bool",
    ),
    pytest.param(
        _set("rollout", {"drain": {"mode": "evict", "timeoutMinutes": 0}}),
        "rollout.drain.timeoutMinutes",
        "0",
        "an integer of 1 or more: minutes an installer keeps evicting",
        id="drain-timeout-zero",
    ),
    pytest.param(
        _set("rollout", {"drain": {"mode": "evict", "timeoutMinutes": "10m"}}),
        "rollout.drain.timeoutMinutes",
        "'10m'",
        "an integer of 1 or more",
        id="drain-timeout-duration-string",
    ),
    pytest.param(
        _set("rollout", {"drain": {"timeoutMinutes": 10}}),
        "rollout.drain.timeoutMinutes",
        "10",
        "mode evict with it, or no timeoutMinutes",
        id="drain-timeout-without-eviction",
    ),
    pytest.param(
        _set("rollout", {"drain": {"mode": "evict", "force": True}}),
        "rollout.drain.force",
        "unknown key",
        "mode, timeoutMinutes",
        id="drain-unknown-key",
    ),
    pytest.param(
        _set("rollout", {"drain": "evict"}),
        "rollout.drain",
        "'evict'",
        "{mode?: none|evict, timeoutMinutes?}",
        id="drain-not-an-object",
    ),
]


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 20


def test_base_config_is_valid_and_registers_resources() -> None:
    config, secret = _base()
    recorder, _ = h.run(config, secret)
    assert len(recorder.k8s_objects()) >= 5


@pytest.mark.parametrize(("mutate", "path", "value", "expected"), CASES)
def test_invalid_config_is_rejected_before_any_resource(
    mutate: Callable[[Config], None], path: str, value: str, expected: str
) -> None:
    config, secret = _base()
    mutate(config)
    secret = [k for k in secret if k in config]
    if config.get(f"{h.NS}:registryPassword") == "hunter2-plain":
        secret = []
    recorder, error = h.run_failing(config, secret)
    assert recorder.regs == [], "nothing may be registered when the config is invalid"
    lines = [line for line in error.problems if line.startswith(f"{path}:")]
    assert lines, f"no problem reported at {path}: {error.problems}"
    line = lines[0]
    assert value in line, line
    assert expected in line, line
    text = str(error)
    assert "pydantic" not in text and "errors.pydantic.dev" not in text
    assert "hunter2" not in text and "s3cr3t" not in text, "a secret value was echoed"
