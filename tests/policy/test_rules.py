"""The policy pack's rules, called the way the pack calls them, with hand-built arguments: the project's
own objects (the offline render of both example stacks) pass every rule; one bad object per rule is
reported by that rule alone."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from components import specs
from components.render import PLACEHOLDER_DIGEST, render_objects
from policy import rules

TYPES = {
    "DaemonSet": "kubernetes:apps/v1:DaemonSet",
    "ConfigMap": "kubernetes:core/v1:ConfigMap",
    "Secret": "kubernetes:core/v1:Secret",
    "Deployment": "kubernetes:apps/v1:Deployment",
    "ServiceAccount": "kubernetes:core/v1:ServiceAccount",
    "ClusterRole": "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole",
    "ClusterRoleBinding": "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
    "ValidatingAdmissionPolicy": "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding": (
        "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding"
    ),
}
DIGEST = "sha256:" + "ab" * 32


def _args(obj: dict[str, Any], config: dict[str, Any] | None = None) -> ResourceValidationArgs:
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    name = obj["metadata"]["name"]
    urn = f"urn:pulumi:test::nvidia-installer::{TYPES[obj['kind']]}::{name}"
    return ResourceValidationArgs(TYPES[obj["kind"]], obj, urn, name, opts, None, config)


def violations(obj: dict[str, Any], config: dict[str, dict[str, Any]] | None = None) -> dict[str, list[str]]:
    """Rule name -> messages it reported for this object (each rule with its own config)."""
    found: dict[str, list[str]] = {}
    for policy in rules.POLICIES:
        messages: list[str] = []

        def report(message: str, _urn: str | None = None, out: list[str] = messages) -> None:
            out.append(message)

        assert isinstance(policy, ResourceValidationPolicy)
        validate = policy.validate
        assert callable(validate)
        validate(_args(obj, (config or {}).get(policy.name)), report)
        if messages:
            found[policy.name] = messages
    return found


def _pod(ds: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = ds["spec"]["template"]["spec"]
    return pod


def _project_objects() -> Iterator[dict[str, Any]]:
    """Both example stacks; an image prod builds is unknown to a preview, as the pack then sees it."""
    for stack in ("dev", "prod"):
        objects, _ = render_objects(stack)
        for obj in objects:
            for container in _pod(obj)["containers"] if obj["kind"] == "DaemonSet" else []:
                if container["image"].endswith(PLACEHOLDER_DIGEST):
                    container["image"] = rules.UNKNOWN
            yield obj


@pytest.fixture(scope="module")
def project_objects() -> list[dict[str, Any]]:
    """Rendered when a test asks, so a broken stack fails these tests rather than the collection."""
    return list(_project_objects())


@pytest.fixture
def installer(project_objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A copy of one installer DaemonSet of the project, its image pinned by digest."""
    ds = next(o for o in project_objects if o["kind"] == "DaemonSet" and "installer" in o["metadata"]["name"])
    ds = copy.deepcopy(ds)
    ds["spec"]["template"]["spec"]["containers"][0]["image"] = f"registry.example.com/driver@{DIGEST}"
    return ds


def test_the_project_objects_pass_every_rule(project_objects: list[dict[str, Any]]) -> None:
    assert {o["kind"] for o in project_objects} == {
        "DaemonSet",
        "ConfigMap",
        "Secret",
        *specs.INSTALLER_IDENTITY_KINDS,
    }
    for obj in project_objects:
        assert violations(obj) == {}, obj["metadata"]["name"]


def test_defaults_match_what_the_specs_use(project_objects: list[dict[str, Any]]) -> None:
    host_paths = {
        v["hostPath"]["path"]
        for o in project_objects if o["kind"] == "DaemonSet"
        for v in _pod(o)["volumes"] if "hostPath" in v
    }  # fmt: skip
    # Every path the project mounts is allowed, and every allowed root is used (no stale entry).
    for root in rules.DEFAULT_HOST_PATHS:
        assert any(p == root or p.startswith(root + "/") for p in host_paths), root
    privileged = {
        (o["metadata"]["name"], c["name"])
        for o in project_objects if o["kind"] == "DaemonSet"
        for c in _pod(o)["containers"] if c.get("securityContext", {}).get("privileged")
    }  # fmt: skip
    assert {c for _, c in privileged} == {e["container"] for e in rules.DEFAULT_PRIVILEGED}


def test_tag_image_is_reported_unless_allowed(installer: dict[str, Any]) -> None:
    ds = installer
    _pod(ds)["containers"][0]["image"] = "registry.example.com/driver:580"
    assert list(violations(ds)) == ["images-pinned-by-digest"]
    allowed = {"images-pinned-by-digest": {"tagImagesAllowed": [
        {"repository": "registry.example.com/driver", "reason": "test"}]}}  # fmt: skip
    assert violations(ds, allowed) == {}


def test_unknown_image_during_preview_is_not_reported(installer: dict[str, Any]) -> None:
    ds = installer
    _pod(ds)["containers"][0]["image"] = rules.UNKNOWN
    assert violations(ds) == {}


def test_privileged_container_needs_an_entry_with_a_reason(installer: dict[str, Any]) -> None:
    ds = installer
    ds["metadata"]["name"] = "other-agent"
    assert list(violations(ds)) == ["privileged-only-where-allowed"]
    no_reason = {"privileged-only-where-allowed": {"privilegedAllowed": [
        {"workload": "other-*", "container": "nvidia-installer", "reason": ""}]}}  # fmt: skip
    assert list(violations(ds, no_reason)) == ["privileged-only-where-allowed"]
    with_reason = copy.deepcopy(no_reason)
    with_reason["privileged-only-where-allowed"]["privilegedAllowed"][0]["reason"] = "test"
    assert violations(ds, with_reason) == {}


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [("priorityClassName", "system-cluster-critical", "priorityClassName"), (None, "gpu", "namespace 'gpu'")],
)
def test_daemonset_must_be_node_critical_in_an_allowed_namespace(
    field: str | None, value: str, fragment: str, installer: dict[str, Any]
) -> None:
    ds = installer
    if field:
        _pod(ds)[field] = value
    else:
        ds["metadata"]["namespace"] = value
    found = violations(ds)
    assert list(found) == ["daemonsets-node-critical-in-allowed-namespace"]
    assert fragment in found["daemonsets-node-critical-in-allowed-namespace"][0]


def test_registry_credentials_outside_a_secret_are_reported(installer: dict[str, Any]) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "leak"},
                  "data": {"config.json": '{"auths": {"r.example.com": {"auth": "eDp5"}}}'}}  # fmt: skip
    assert list(violations(config_map)) == ["registry-credentials-only-in-secrets"]
    ds = installer
    _pod(ds)["containers"][0]["env"].append({"name": "REGISTRY_PASSWORD", "value": "hunter2"})
    assert list(violations(ds)) == ["registry-credentials-only-in-secrets"]
    _pod(ds)["containers"][0]["env"][-1] = {
        "name": "REGISTRY_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}  # fmt: skip
    assert violations(ds) == {}


def test_container_without_requests_is_reported(installer: dict[str, Any]) -> None:
    ds = installer
    del _pod(ds)["containers"][0]["resources"]["requests"]["memory"]
    found = violations(ds)
    assert list(found) == ["requests-on-every-container"]
    assert "no memory request" in found["requests-on-every-container"][0]


def test_host_path_outside_the_list_is_reported(installer: dict[str, Any]) -> None:
    ds = installer
    _pod(ds)["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    found = violations(ds)
    assert list(found) == ["host-paths-allowed"]
    assert "hostPath '/'" in found["host-paths-allowed"][0]


def test_rules_read_deployments_too(installer: dict[str, Any]) -> None:
    ds = installer
    deployment = {**ds, "kind": "Deployment", "spec": {**ds["spec"], "replicas": 1}}
    _pod(deployment)["containers"][0]["image"] = "busybox"
    assert "images-pinned-by-digest" in violations(deployment)
