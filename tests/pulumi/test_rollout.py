"""The rollout settings reach the installer DaemonSets: the width as the rolling update's maxUnavailable,
the timeout as the customTimeouts the Kubernetes provider awaits the rollout with (the mocks do not see
resource options, so the DaemonSet class is wrapped to record them)."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from tests.pulumi import harness as h

DAEMONSET = "kubernetes:apps/v1:DaemonSet"
POLICY = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"


def _config(**keys: Any) -> tuple[dict[str, Any], list[str]]:
    drivers = h.checksummed()
    return h.build_config(
        [h.target("vm", "1877.17", drivers[0]), h.target("metal", "2150.9.0", drivers[1], flavour="metal")],
        **keys,
    )


def _run(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], secret: list[str]
) -> tuple[h.Recorder, dict[str, pulumi.ResourceOptions | None]]:
    options: dict[str, pulumi.ResourceOptions | None] = {}
    original = k8s.apps.v1.DaemonSet

    class Recording(original):  # type: ignore[misc,valid-type]
        def __init__(self, resource_name: str, *args: Any, **kwargs: Any) -> None:
            options[resource_name] = kwargs.get("opts")
            super().__init__(resource_name, *args, **kwargs)

    monkeypatch.setattr(k8s.apps.v1, "DaemonSet", Recording)
    recorder, _ = h.run(config, secret)
    return recorder, options


def _installers(recorder: h.Recorder) -> dict[str, dict[str, Any]]:
    return {r.name: h.plain(r.inputs) for r in recorder.of_type(DAEMONSET) if r.name.startswith("installer-")}


def test_defaults_roll_one_node_at_a_time_and_wait_30_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, options = _run(monkeypatch, *_config())
    installers = _installers(recorder)
    assert set(installers) == {"installer-vm-daemonset", "installer-metal-daemonset"}
    for name, ds in installers.items():
        assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}, name
        timeouts = options[name].custom_timeouts  # type: ignore[union-attr]
        assert timeouts is not None, name
        assert (timeouts.create, timeouts.update, timeouts.delete) == ("30m", "30m", None)


@pytest.mark.parametrize("width", [3, "25%"])
def test_the_stack_settings_reach_every_installer(monkeypatch: pytest.MonkeyPatch, width: int | str) -> None:
    recorder, options = _run(monkeypatch, *_config(rollout={"maxUnavailable": width, "timeoutMinutes": 7}))
    installers = _installers(recorder)
    assert len(installers) == 2
    for name, ds in installers.items():
        assert ds["spec"]["updateStrategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": width, "maxSurge": 0},
        }, name
        assert "pulumi.com/skipAwait" not in ds["metadata"].get("annotations", {}), name
        timeouts = options[name].custom_timeouts  # type: ignore[union-attr]
        assert timeouts is not None and (timeouts.create, timeouts.update) == ("7m", "7m"), name


def test_the_device_plugin_keeps_its_own_rollout(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, options = _run(monkeypatch, *_config(rollout={"maxUnavailable": 4, "timeoutMinutes": 2}))
    (plugin,) = [h.plain(r.inputs) for r in recorder.of_type(DAEMONSET) if r.name.startswith("device-plugin")]
    assert plugin["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    (plugin_opts,) = [o for n, o in options.items() if n.startswith("device-plugin")]
    assert plugin_opts is None or plugin_opts.custom_timeouts is None


def test_the_drain_opt_in_reaches_every_installer_and_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    drain = {"drain": {"mode": "evict", "timeoutMinutes": 12}}
    recorder, _ = _run(monkeypatch, *_config(rollout=drain))
    for name, ds in _installers(recorder).items():
        env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (env["DRAIN_MODE"], env["DRAIN_TIMEOUT_SECONDS"]) == ("evict", "720"), name
    policies = {r.name: h.plain(r.inputs) for r in recorder.of_type(POLICY)}
    # The node policy keeps its resource name (no replacement when a stack opts in); the eviction policy
    # is a resource of its own.
    assert set(policies) == {
        "installer-identity-validating-admission-policy",
        "installer-identity-own-pods-validating-admission-policy",
    }
    (role,) = [
        h.plain(r.inputs) for r in recorder.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    ]
    assert {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]} in role["rules"]


def test_without_the_opt_in_nothing_drains(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, _ = _run(monkeypatch, *_config(rollout={"drain": {"mode": "none"}}))
    for name, ds in _installers(recorder).items():
        env = {e["name"] for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert not {"DRAIN_MODE", "DRAIN_TIMEOUT_SECONDS"} & env, name
    assert [r.name for r in recorder.of_type(POLICY)] == ["installer-identity-validating-admission-policy"]
    (role,) = [
        h.plain(r.inputs) for r in recorder.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    ]
    assert not any("pods" in str(rule["resources"]) for rule in role["rules"])
