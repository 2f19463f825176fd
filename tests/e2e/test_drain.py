"""The drain opt-in (`rollout.drain.mode evict`, docs/operations.md) on the real API server: the real node
installer on a fake host, with the bound token of an installer pod on gpu-drain-1, cordons its node,
evicts the GPU pods on it through the Eviction API (the real disruption controller keeps a
PodDisruptionBudget's count; the fake kubelet removes an evicted pod as a kubelet does once its grace
period starts), swaps the driver once the GPUs are idle and uncordons the node; a budget that allows no
disruption holds it until the drain timeout. The admission policies of the opt-in hold the same token to
its own node and its own node's pods (tests/e2e/installer_api.py sets up the identity and the token).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from components import specs
from tests.e2e.installer_api import (
    STATUS,
    Cluster,
    cluster_fixture,
    denied,
    job_ends,
    stand_in_pod,
    wait_for,
)
from tests.e2e.kubeapi import ApiError, KubeApi
from tests.node.fakenode import READY_FILE, FakeNode

NAMESPACE = "gpu-drain"
JOBS = "gpu-drain-jobs"
NODE = "gpu-drain-1"
OTHER_NODE = "gpu-drain-2"
OLD_DRIVER = "570.124.06"
MARK = specs.CORDON_ANNOTATION
DRAIN = {"nvidia-installer:rollout": {"drain": {"mode": "evict", "timeoutMinutes": 5}}}


cluster = cluster_fixture(NAMESPACE, (NODE, OTHER_NODE), DRAIN)


@pytest.fixture
def jobs(cluster: Cluster) -> Iterator[Callable[..., str]]:
    """Creates pods (and PodDisruptionBudgets) in JOBS; removes whatever is left, and gives the node back
    uncordoned and unmarked, at the end of the test."""

    if not cluster.admin.exists(f"/api/v1/namespaces/{JOBS}"):
        cluster.kubectl("create", "namespace", JOBS)

    def create(name: str, node: str = NODE, gpus: int = 1, **labels: str) -> str:
        resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
        pod = stand_in_pod(
            name, node, containers=[{"name": "main", "image": "cuda:12", "resources": resources}]
        )
        pod["metadata"]["labels"] = labels
        cluster.admin.create(f"/api/v1/namespaces/{JOBS}/pods", pod)
        return name

    yield create
    for kind in ("pods", "poddisruptionbudgets"):
        group = "/api/v1" if kind == "pods" else "/apis/policy/v1"
        for item in cluster.admin.items(f"{group}/namespaces/{JOBS}/{kind}"):
            cluster.admin.delete(
                f"{group}/namespaces/{JOBS}/{kind}/{item['metadata']['name']}", grace_seconds=0
            )
    cluster.admin.patch(f"/api/v1/nodes/{NODE}", {"spec": {"unschedulable": None},
                                                  "metadata": {"annotations": {MARK: None}}})  # fmt: skip


def _busy_node(cluster: Cluster, tmp_path: Path, **env: str) -> FakeNode:
    """A fake host on NODE with the old driver in use (pid 4242), drain on."""
    return cluster.busy_node(tmp_path, OLD_DRIVER, **{"DRAIN_MODE": "evict", "DRAIN_TIMEOUT_SECONDS": "60",
                                                      "IDLE_POLL_SECONDS": "0.3", **env})  # fmt: skip


def _pod_gone(cluster: Cluster, name: str) -> bool:
    return not cluster.admin.exists(f"/api/v1/namespaces/{JOBS}/pods/{name}")


def _cordoned(cluster: Cluster) -> tuple[bool, str | None]:
    node = cluster.node_object()
    return bool(node["spec"].get("unschedulable")), node["metadata"].get("annotations", {}).get(MARK)


def test_a_busy_node_is_cordoned_drained_swapped_and_uncordoned(
    cluster: Cluster, jobs: Callable[..., str], installer: Any, tmp_path: Path
) -> None:
    trainer = jobs("trainer")
    web = jobs("web", gpus=0)
    elsewhere = jobs("trainer-on-another-node", node=OTHER_NODE)
    node = _busy_node(cluster, tmp_path)
    proc = installer(node)
    wait_for("the cordon", lambda: _cordoned(cluster) == (True, cluster.pod))
    wait_for("the GPU pod evicted", lambda: _pod_gone(cluster, trainer))
    wait_for("the draining label", lambda: cluster.labels().get(STATUS) == "draining")
    event = wait_for("the DrainingNode event", lambda: cluster.events("DrainingNode"))[-1]
    assert f"{JOBS}/{trainer}" in event["message"] and "4242 (python3)" in event["message"]
    assert proc.poll() is None and not (node.host / READY_FILE).exists()  # not before the GPUs are idle
    job_ends(node)
    wait_for("ready", lambda: cluster.labels().get(STATUS) == "ready")
    wait_for("the uncordon", lambda: _cordoned(cluster) == (False, None))
    wait_for("the NodeUncordoned event", lambda: cluster.events("NodeUncordoned"))
    assert node.ready_values()["DRIVER_VERSION"] == node.driver
    # Only the GPU pod on its own node went.
    assert not _pod_gone(cluster, web) and not _pod_gone(cluster, elsewhere)
    log = (tmp_path / "installer.log").read_text()
    assert f"cordoned node {NODE}" in log and f"uncordoned node {NODE}" in log


def test_a_disruption_budget_holds_the_drain_until_its_timeout(
    cluster: Cluster, jobs: Callable[..., str], installer: Any, tmp_path: Path
) -> None:
    guarded = jobs("guarded", app="guarded")
    cluster.admin.create(f"/apis/policy/v1/namespaces/{JOBS}/poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "guarded"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
    })  # fmt: skip
    node = _busy_node(cluster, tmp_path, DRAIN_TIMEOUT_SECONDS="4")
    proc = installer(node)
    assert proc.wait(timeout=30) == 6
    log = (tmp_path / "installer.log").read_text()
    error = next(line for line in log.splitlines() if "error:" in line)
    assert f"node {NODE} could not be drained within 4 s for NVIDIA driver {node.driver}" in error
    assert f"{JOBS}/{guarded}" in error and "disruption budget" in error and "kubectl get pdb -A" in error
    assert f"kubectl uncordon {NODE}" in log  # how to give the node back, in the details
    assert cluster.labels()[STATUS] == "drain-timed-out"
    (event,) = cluster.events("DrainTimedOut")
    assert event["type"] == "Warning" and f"{JOBS}/{guarded}" in event["message"]
    # The budget was respected; the node stays cordoned (by the installer) for the next attempt.
    assert not _pod_gone(cluster, guarded)
    assert _cordoned(cluster) == (True, cluster.pod)
    assert node.calls("rmmod") == []
    # The budget goes: the restarted installer takes over its own cordon, drains, swaps and uncordons.
    cluster.admin.delete(f"/apis/policy/v1/namespaces/{JOBS}/poddisruptionbudgets/guarded")
    node.env_extra["DRAIN_TIMEOUT_SECONDS"] = "60"
    installer(node)
    wait_for("the guarded pod evicted", lambda: _pod_gone(cluster, guarded))
    job_ends(node)
    wait_for("ready", lambda: cluster.labels().get(STATUS) == "ready")
    wait_for("the uncordon", lambda: _cordoned(cluster) == (False, None))
    assert "cordoned by nvidia-installer already" in (tmp_path / "installer.log").read_text()


def test_a_node_an_administrator_cordoned_stays_cordoned(
    cluster: Cluster, jobs: Callable[..., str], installer: Any, tmp_path: Path
) -> None:
    cluster.kubectl("cordon", NODE)
    trainer = jobs("trainer")
    node = _busy_node(cluster, tmp_path)
    installer(node)
    wait_for("the GPU pod evicted", lambda: _pod_gone(cluster, trainer))
    job_ends(node)
    wait_for("ready", lambda: cluster.labels().get(STATUS) == "ready")
    assert _cordoned(cluster) == (True, None)
    assert "not by nvidia-installer: it stays cordoned" in (tmp_path / "installer.log").read_text()


def test_a_stale_mark_on_an_uncordoned_node_is_no_obstacle(
    cluster: Cluster, jobs: Callable[..., str], installer: Any, tmp_path: Path
) -> None:
    """`kubectl uncordon` by hand after a drain timeout leaves the annotation: the next drain cordons the
    node again (with its own mark) and gives it back after the swap."""
    cluster.admin.patch(f"/api/v1/nodes/{NODE}", {"metadata": {"annotations": {MARK: "an-earlier-pod"}}})
    trainer = jobs("trainer")
    node = _busy_node(cluster, tmp_path)
    installer(node)
    wait_for("the cordon", lambda: _cordoned(cluster) == (True, cluster.pod))
    wait_for("the GPU pod evicted", lambda: _pod_gone(cluster, trainer))
    job_ends(node)
    wait_for("ready", lambda: cluster.labels().get(STATUS) == "ready")
    wait_for("the uncordon", lambda: _cordoned(cluster) == (False, None))


def test_a_pod_stopped_while_draining_gives_the_node_back(
    cluster: Cluster, jobs: Callable[..., str], installer: Any, tmp_path: Path
) -> None:
    jobs("guarded", app="guarded")
    cluster.admin.create(f"/apis/policy/v1/namespaces/{JOBS}/poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "guarded"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "guarded"}}},
    })  # fmt: skip
    node = _busy_node(cluster, tmp_path)
    proc = installer(node)
    wait_for("the drain", lambda: cluster.labels().get(STATUS) == "draining")
    assert _cordoned(cluster) == (True, cluster.pod)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert _cordoned(cluster) == (False, None)
    assert cluster.labels()[STATUS] == "stopped"
    assert "was stopped while waiting for GPU jobs" in cluster.events("InstallerStopped")[-1]["message"]


def _node_patch(cluster: Cluster, node: str, body: dict[str, Any]) -> Any:
    return cluster.installer.patch(f"/api/v1/nodes/{node}?dryRun=All", body)


def _cordon(pod: str | None) -> dict[str, Any]:
    annotations = {MARK: pod} if pod else {}
    return {"spec": {"unschedulable": True}, "metadata": {"annotations": annotations}}


def test_the_installer_cordons_only_its_own_node_and_only_with_its_mark(cluster: Cluster) -> None:
    # Allowed (a dry run: admission runs, nothing is stored): its own node, with the mark.
    _node_patch(cluster, NODE, _cordon(cluster.pod))
    assert specs.POLICY_OTHER_NODE in denied(partial(_node_patch, cluster, OTHER_NODE, _cordon(cluster.pod)))
    assert specs.POLICY_CORDON in denied(partial(_node_patch, cluster, NODE, _cordon(None)))
    for body in ({"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}},
                 {"spec": {"providerID": "fake://x"}},
                 {"metadata": {"annotations": {"example.com/a": "b"}}}):  # fmt: skip
        assert specs.POLICY_DRAIN_NODE_SPEC in denied(partial(_node_patch, cluster, NODE, body))
    assert not cluster.node_object(OTHER_NODE)["spec"].get("unschedulable")


def test_an_administrators_cordon_cannot_be_lifted_by_the_installer(cluster: Cluster) -> None:
    cluster.kubectl("cordon", NODE)
    try:
        uncordon = {"spec": {"unschedulable": None}, "metadata": {"annotations": {MARK: None}}}
        assert specs.POLICY_CORDON in denied(partial(_node_patch, cluster, NODE, uncordon))
        # Nor can it claim the cordon by adding its mark afterwards.
        claim = {"metadata": {"annotations": {MARK: cluster.pod}}}
        assert specs.POLICY_CORDON in denied(partial(_node_patch, cluster, NODE, claim))
    finally:
        cluster.kubectl("uncordon", NODE)


def _evict(cluster: Cluster, pod: str, dry_run: bool = True) -> Any:
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": JOBS}}
    query = "?dryRun=All" if dry_run else ""
    return cluster.installer.create(f"/api/v1/namespaces/{JOBS}/pods/{pod}/eviction{query}", eviction)


def test_the_installer_evicts_only_pods_on_its_own_node(cluster: Cluster, jobs: Callable[..., str]) -> None:
    mine, theirs = jobs("mine"), jobs("theirs", node=OTHER_NODE)
    # The eviction policy reads the pods from the API server's informer: wait until it has both.
    wait_for("the eviction policy's pods", lambda: _evict(cluster, mine))
    message = denied(lambda: _evict(cluster, theirs, dry_run=False))
    assert specs.POLICY_OTHER_NODES_POD in message and "ValidatingAdmissionPolicy" in message
    assert not _pod_gone(cluster, theirs)
    # RBAC: evictions only, never a plain delete (which would skip the disruption budgets).
    refused = denied(lambda: cluster.installer.delete(f"/api/v1/namespaces/{JOBS}/pods/{theirs}"))
    assert "cannot delete resource" in refused
    # A token not bound to a pod on a node evicts nothing.
    unbound = cluster.kubectl("-n", NAMESPACE, "create", "token", specs.INSTALLER_SERVICE_ACCOUNT).strip()
    api = KubeApi(cluster.plane.server, cluster.plane.pki / "ca.crt", unbound)
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": mine, "namespace": JOBS}}
    with pytest.raises(ApiError) as caught:
        api.create(f"/api/v1/namespaces/{JOBS}/pods/{mine}/eviction?dryRun=All", eviction)
    assert caught.value.status == 403 and specs.POLICY_NO_NODE_NAME in str(caught.value)


def test_the_installer_lists_pods_only_with_the_opt_in(cluster: Cluster) -> None:
    # RBAC cannot narrow a list to a field: the installer asks for its node's pods; docs/privileges.md.
    listed = cluster.installer.get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE}")
    assert all(p["spec"]["nodeName"] == NODE for p in listed["items"])
    assert "cannot watch resource" in denied(lambda: cluster.installer.get("/api/v1/pods?watch=1"))


def test_the_eviction_policy_leaves_other_users_evictions_alone(
    cluster: Cluster, jobs: Callable[..., str]
) -> None:
    """The binding gives the policy every pod of the eviction's namespace before its matchConditions are
    looked at: an administrator's eviction of a pod that is gone from an empty namespace stays a 404
    (which `kubectl drain` takes as done), and one of a pod on any node passes."""
    theirs = jobs("theirs", node=OTHER_NODE)
    cluster.kubectl("create", "namespace", "gpu-drain-empty")

    def eviction(name: str) -> dict[str, Any]:
        return {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}

    with pytest.raises(ApiError) as caught:
        cluster.admin.create("/api/v1/namespaces/gpu-drain-empty/pods/gone/eviction", eviction("gone"))
    assert caught.value.status == 404, caught.value
    cluster.admin.create(f"/api/v1/namespaces/{JOBS}/pods/{theirs}/eviction", eviction(theirs))
    wait_for("the evicted pod gone", lambda: _pod_gone(cluster, theirs))
