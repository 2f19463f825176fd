"""The installer's node state (labels, events) through the real API server, with a real bound token, and
the installer's identity held to its own node by the real admission chain (RBAC and the
ValidatingAdmissionPolicy of components/specs.py), without the drain opt-in (tests/e2e/installer_api.py
says how the identity, the token and the fake host are set up; test_drain.py covers the opt-in).
"""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path
from typing import Any

from components import specs
from tests.e2e.installer_api import STATUS, Cluster, cluster_fixture, denied, job_ends, wait_for
from tests.e2e.kubeapi import MERGE_PATCH, KubeApi
from tests.node.fakenode import READY_FILE

NAMESPACE = "gpu-node-state"
NODE = "gpu-node-1"
OTHER_NODE = "gpu-node-2"
POD = "nvidia-installer-on-gpu-node-1"


cluster = cluster_fixture(NAMESPACE, (NODE, OTHER_NODE), {})


def test_the_token_carries_the_node_name(cluster: Cluster) -> None:
    review = cluster.installer.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    user = review["status"]["userInfo"]
    assert user["username"] == specs.service_account_user(NAMESPACE)
    assert user["extra"][specs.NODE_NAME_EXTRA] == [NODE]
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == [POD]


def test_ready_node_gets_its_labels_and_event(cluster: Cluster, installer: Any, tmp_path: Path) -> None:
    node = cluster.node(tmp_path)
    proc = installer(node)
    wait_for("the ready label", lambda: cluster.labels().get(STATUS) == "ready")
    assert proc.poll() is None  # the install went on: it stays running
    assert (node.host / READY_FILE).exists()
    labels = cluster.labels()
    assert labels[f"{specs.LABEL_PREFIX}driver-version"] == node.driver
    assert labels[f"{specs.LABEL_PREFIX}kernel"] == node.kernel
    assert labels[f"{specs.LABEL_PREFIX}module-type"] == "open"
    (event,) = wait_for("the DriverReady event", lambda: cluster.events("DriverReady"))
    assert event["type"] == "Normal"
    assert event["involvedObject"]["kind"] == "Node"
    assert node.driver in event["message"] and "ready" in event["message"]
    assert event["source"] == {"component": "nvidia-installer", "host": NODE}
    # `kubectl describe node` finds it (it matches events by the node's name as uid, as the kubelet's).
    assert "DriverReady" in cluster.kubectl("describe", "node", NODE)
    # Nothing but the installer's own labels changed.
    assert cluster.labels(OTHER_NODE).get(STATUS) is None
    assert labels["node-role.example.com/gpu"] == "true"


def test_another_nodes_labels_are_refused(cluster: Cluster) -> None:
    message = denied(lambda: cluster.installer.patch(
        f"/api/v1/nodes/{OTHER_NODE}", {"metadata": {"labels": {STATUS: "ready"}}}))  # fmt: skip
    assert specs.POLICY_OTHER_NODE in message
    assert "ValidatingAdmissionPolicy" in message
    assert STATUS not in cluster.labels(OTHER_NODE)


def test_a_label_outside_the_prefix_is_refused_on_its_own_node(cluster: Cluster) -> None:
    for labels in ({"gpu": "true"}, {"node-role.example.com/gpu": None}, {"nvidia-installer.evil/x": "1"}):
        patch = {"metadata": {"labels": labels}}
        message = denied(partial(cluster.installer.patch, f"/api/v1/nodes/{NODE}", patch))
        assert specs.POLICY_FOREIGN_LABELS in message
    assert "gpu" not in cluster.labels() and cluster.labels()["node-role.example.com/gpu"] == "true"


def test_its_own_nodes_spec_and_annotations_are_refused(cluster: Cluster) -> None:
    for patch in ({"spec": {"unschedulable": True}},
                  {"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}},
                  {"metadata": {"annotations": {"example.com/a": "b"}}}):  # fmt: skip
        message = denied(partial(cluster.installer.patch, f"/api/v1/nodes/{NODE}", patch))
        assert specs.POLICY_NODE_SPEC in message
    assert not cluster.admin.get(f"/api/v1/nodes/{NODE}")["spec"].get("unschedulable")


def test_an_event_about_another_node_is_refused(cluster: Cluster) -> None:
    event = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "forged-"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": OTHER_NODE, "uid": OTHER_NODE},
        "reason": "DriverReady", "message": "forged", "type": "Normal",
    }  # fmt: skip
    # Events about a Node live in `default` (the API server refuses them elsewhere), as the kubelet's.
    message = denied(lambda: cluster.installer.create("/api/v1/namespaces/default/events", event))
    assert specs.POLICY_OTHER_EVENT in message
    about_a_pod = {**event, "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": NODE,
                                               "namespace": NAMESPACE}}  # fmt: skip
    assert specs.POLICY_OTHER_EVENT in denied(
        lambda: cluster.installer.create(f"/api/v1/namespaces/{NAMESPACE}/events", about_a_pod)
    )


def test_rbac_grants_no_more_than_the_table(cluster: Cluster) -> None:
    # No reads, no deletes, no other API group: RBAC refuses before admission.
    assert "cannot get resource" in denied(lambda: cluster.installer.get(f"/api/v1/nodes/{NODE}"))
    assert "cannot delete resource" in denied(lambda: cluster.installer.delete(f"/api/v1/nodes/{OTHER_NODE}"))
    assert "cannot list resource" in denied(lambda: cluster.installer.get("/api/v1/pods"))
    assert "cannot patch resource" in denied(lambda: cluster.installer.patch(
        f"/api/v1/nodes/{NODE}/status", {"status": {"phase": "Running"}}))  # fmt: skip
    # Without the drain opt-in: no evictions, and no read of a node or of pods.
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": POD, "namespace": NAMESPACE},
    }
    refused = denied(lambda: cluster.installer.create(
        f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}/eviction", eviction))  # fmt: skip
    assert "cannot create resource" in refused and "pods/eviction" in refused
    assert "cannot list resource" in denied(
        lambda: cluster.installer.get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE}")
    )


def test_a_token_without_a_node_is_refused_everywhere(cluster: Cluster) -> None:
    unbound = cluster.kubectl("-n", NAMESPACE, "create", "token", specs.INSTALLER_SERVICE_ACCOUNT).strip()
    api = KubeApi(cluster.plane.server, cluster.plane.pki / "ca.crt", unbound)
    message = denied(lambda: api.patch(
        f"/api/v1/nodes/{NODE}", {"metadata": {"labels": {STATUS: "ready"}}}, MERGE_PATCH))  # fmt: skip
    assert specs.POLICY_NO_NODE_NAME in message


def test_busy_gpus_say_waiting_for_idle_gpus(cluster: Cluster, installer: Any, tmp_path: Path) -> None:
    node = cluster.busy_node(tmp_path, "570.124.06")
    proc = installer(node)
    wait_for("the waiting label", lambda: cluster.labels().get(STATUS) == "waiting-for-idle-gpus")
    events = wait_for("the WaitingForIdleGPUs event", lambda: cluster.events("WaitingForIdleGPUs"))
    assert "4242 (python3)" in events[-1]["message"] and "570.124.06" in events[-1]["message"]
    assert proc.poll() is None and not (node.host / READY_FILE).exists()
    # The job ends: the same installer replaces the driver and the node says ready.
    job_ends(node)
    wait_for("the ready label after the wait", lambda: cluster.labels().get(STATUS) == "ready")


def test_a_pod_stopped_while_it_waits_says_so(cluster: Cluster, installer: Any, tmp_path: Path) -> None:
    """Not the stale `waiting-for-idle-gpus`: nobody waits any more once the pod is stopped."""
    node = cluster.busy_node(tmp_path, "570.124.06")
    proc = installer(node)
    wait_for("the waiting label", lambda: cluster.labels().get(STATUS) == "waiting-for-idle-gpus")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert cluster.labels()[STATUS] == "stopped"
    event = cluster.events("InstallerStopped")[-1]
    assert "stopped while waiting for GPU jobs" in event["message"]
    assert (
        "570.124.06 stays loaded" in event["message"]
        and f"{node.driver} was not installed" in event["message"]
    )
    assert not cluster.node_object()["spec"].get("unschedulable")  # without the opt-in nothing is cordoned


def test_kernel_mismatch_is_labelled_and_told(cluster: Cluster, tmp_path: Path) -> None:
    node = cluster.node(tmp_path)
    node.env_extra["FAKE_KERNEL"] = "6.12.47+deb13-cloud-amd64"
    run = node.run()
    assert run.rc == 4, run.stderr
    assert "warning" not in run.stderr, run.stderr
    labels = cluster.labels()
    assert labels[STATUS] == "kernel-mismatch"
    assert labels[f"{specs.LABEL_PREFIX}kernel"] == "6.12.47_deb13-cloud-amd64"  # '+' is no label character
    assert f"{specs.LABEL_PREFIX}module-type" not in labels  # not decided before the kernel check
    (event,) = cluster.events("KernelMismatch")
    assert event["type"] == "Warning"
    assert "runs kernel 6.12.47+deb13-cloud-amd64" in event["message"] and "add a target" in event["message"]
