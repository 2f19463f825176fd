"""Registers one Kubernetes object that breaks the policy rule named by the `rule` config key (or one
that breaks none with `rule: none`), written to a directory by the provider's render mode. The policy pack
tests (tests/e2e/test_policy.py) preview it with `--policy-pack policy`."""

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example.com/gpu/agent@{DIGEST}"


def _daemonset(pod: dict[str, Any], namespace: str = "kube-system") -> dict[str, Any]:
    labels = {"app": "agent"}
    container = {
        "name": "agent",
        "image": IMAGE,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        **pod.pop("container", {}),
    }
    spec = {"priorityClassName": "system-node-critical", "containers": [container], **pod}
    return {
        "metadata": {"name": "agent", "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


CASES: dict[str, dict[str, Any]] = {
    "none": _daemonset({}),
    "images-pinned-by-digest": _daemonset({"container": {"image": "registry.example.com/gpu/agent:1.0"}}),
    "privileged-only-where-allowed": _daemonset({"container": {"securityContext": {"privileged": True}}}),
    "daemonsets-node-critical-in-allowed-namespace": _daemonset({}, namespace="default"),
    "registry-credentials-only-in-secrets": _daemonset(
        {"container": {"env": [{"name": "REGISTRY_PASSWORD", "value": "hunter2"}]}}
    ),
    "requests-on-every-container": _daemonset({"container": {"resources": {}}}),
    "host-paths-allowed": _daemonset({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
}

rule = pulumi.Config().require("rule")
provider = k8s.Provider("render", render_yaml_to_directory="out")
case = CASES[rule]
k8s.apps.v1.DaemonSet(
    "agent", metadata=case["metadata"], spec=case["spec"], opts=pulumi.ResourceOptions(provider=provider)
)
