"""The drain opt-in on the node side where no API server answers: its settings are checked before anything
changes, it needs API access, and the walker that picks the GPU pods out of the API server's pod list.

The drain itself (cordon, evictions, a PodDisruptionBudget's 429, the timeout, uncordon, the admission
policy) runs against the real API server in the e2e tier (tests/e2e/test_drain.py).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import specs
from tests.node.fakenode import INSTALLER, FakeNode
from tests.node.test_node_state import give_api_access
from tests.ports import free_port

OLD_DRIVER = "570.124.06"


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path)


@pytest.mark.parametrize(
    ("env", "named"),
    [({"DRAIN_MODE": "drain"}, "DRAIN_MODE is 'drain'"),
     ({"DRAIN_MODE": "evict", "DRAIN_TIMEOUT_SECONDS": "10m"}, "DRAIN_TIMEOUT_SECONDS is '10m'"),
     ({"DRAIN_MODE": "evict", "DRAIN_TIMEOUT_SECONDS": "0"}, "DRAIN_TIMEOUT_SECONDS is '0'")],
)  # fmt: skip
def test_a_wrong_drain_setting_stops_before_anything_changes(
    node: FakeNode, env: dict[str, str], named: str
) -> None:
    node.env_extra.update(env)
    before = node.snapshot()
    run = node.run()
    assert run.rc == 2, run.stderr
    assert named in run.first_error
    assert node.snapshot() == before


def _drain_env(minutes: int) -> dict[str, str]:
    """The drain settings of an installer DaemonSet rendered with the opt-in (components/specs.py)."""
    ds = specs.installer_daemonset(
        target="t", namespace="kube-system", image="r.test/d:1", module_type="auto", selection=[],
        parameters_config_map="cm", pull_secret_name=None, version_labels={}, drain_timeout_minutes=minutes,
    )  # fmt: skip
    env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["value"] for e in env if e["name"].startswith("DRAIN_")}


def test_drain_without_api_access_only_waits(node: FakeNode) -> None:
    """The DaemonSet's drain settings are the ones the installer reads; without API access it can only
    wait, and says so."""
    node.load_module("nvidia", OLD_DRIVER, refcnt=1)
    node.add_process(4242, "python3", ("/dev/nvidia0",))
    node.env_extra.update(_drain_env(1), IDLE_WAIT_SECONDS="1", IDLE_POLL_SECONDS="0.2")
    assert node.env_extra["DRAIN_MODE"] == "evict"
    run = node.run()
    assert run.rc == 6, run.stderr
    assert "DRAIN_MODE is evict but the installer has no API access" in run.stderr
    assert "waiting for GPU jobs to finish" in run.stderr and "draining" not in run.stderr


def test_an_unreachable_api_server_does_not_stop_the_wait(node: FakeNode) -> None:
    """Cordon and pod list fail (connection refused): one warning each kind, the installer keeps waiting
    for the GPUs and stops only at its drain timeout, with the drain's message."""
    give_api_access(node, free_port())
    node.load_module("nvidia", OLD_DRIVER, refcnt=1)
    node.add_process(4242, "python3", ("/dev/nvidia0",))
    node.env_extra.update(DRAIN_MODE="evict", DRAIN_TIMEOUT_SECONDS="1", IDLE_POLL_SECONDS="0.3")
    run = node.run()
    assert run.rc == 6, run.stderr
    assert "warning: could not cordon node gpu-node-1" in run.stderr
    assert "cannot list the node's pods" in run.first_error
    assert "could not be drained within 1 s" in run.first_error and "4242 (python3)" in run.first_error
    assert node.calls("rmmod") == []


def _gpu_pods_in(pod_list: str) -> list[str]:
    """The installer's own _gpu_pods_in, cut out of the script and run by bash on `pod_list`."""
    match = re.search(r"^_gpu_pods_in\(\) \{\n.*?^\}\n", INSTALLER.read_text(), re.M | re.S)
    assert match, "_gpu_pods_in not found in the installer"
    result = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{match.group(0)}_gpu_pods_in"],
        input=pod_list, capture_output=True, text=True, check=True,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return result.stdout.splitlines()


def _pod(
    name: str, resources: dict[str, Any] | None = None, *, owner: str | None = None, phase: str = "Running",
    init: bool = False, annotations: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A pod as the API server lists it, managedFields included (they name nvidia.com/gpu too)."""
    worker = {"name": "worker", "image": "cuda:12", "resources": resources or {}}
    side = {"name": "side", "image": "busybox", "resources": {"requests": {"cpu": "10m"}}}
    spec: dict[str, Any] = {"nodeName": "gpu-node-1", "containers": [side] if init else [side, worker]}
    if init:
        spec["initContainers"] = [worker]
    meta: dict[str, Any] = {
        "name": name, "namespace": "jobs", "uid": f"uid-{name}",
        "managedFields": [{"manager": "kubectl", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {
            "f:containers": {'k:{"name":"worker"}': {
                "f:resources": {"f:limits": {"f:nvidia.com/gpu": {}}}}}}}}],
    }  # fmt: skip
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": "owner", "uid": "o"}]
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec, "status": {"phase": phase, "conditions": [{"type": "Ready"}]}}


def _compact(items: list[dict[str, Any]]) -> str:
    """A PodList as the API server writes it: compact JSON."""
    return json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
                       "items": items}, separators=(",", ":"))  # fmt: skip


def test_the_pod_walker_picks_exactly_the_pods_holding_gpus() -> None:
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    last_applied = json.dumps({"metadata": {"name": "ghost", "namespace": "jobs"}, "spec": {"containers": [
        {"resources": {"requests": {"nvidia.com/gpu": "1"}}}]}})  # fmt: skip
    items = [
        _pod("trainer", gpu),
        _pod("requests-only", {"requests": {"nvidia.com/gpu": "2", "cpu": "1"}}),
        _pod("init-gpu", gpu, init=True),
        _pod("replica", gpu, owner="ReplicaSet"),
        _pod("cpu-only"),
        _pod("zero-gpus", {"limits": {"nvidia.com/gpu": "0"}}),
        _pod("daemon", gpu, owner="DaemonSet"),  # its controller would put it right back
        _pod("static", gpu, owner="Node"),  # a mirror pod cannot be evicted
        _pod("finished", gpu, phase="Succeeded"),
        _pod("failed", gpu, phase="Failed"),
        # A request only inside an annotation's text (escaped quotes, braces in strings) is no request.
        _pod(
            "annotated",
            annotations={
                "kubectl.kubernetes.io/last-applied-configuration": last_applied,
                "x": 'a"}]{[,:b\\',
            },
        ),
    ]
    assert _gpu_pods_in(_compact(items)) == [
        "jobs trainer", "jobs requests-only", "jobs init-gpu", "jobs replica",
    ]  # fmt: skip
    assert _gpu_pods_in(_compact([])) == []
