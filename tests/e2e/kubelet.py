"""A fake kubelet for the end-to-end tier: simulated nodes that take part in the real control plane.

The control plane has no kubelets, so nothing would ever run a pod. `FakeKubelet` registers Node objects
with the labels a test gives (like a kubelet with --node-labels), keeps them alive (node leases, Ready
condition), and acts for every pod the real scheduler binds to one of them the way a kubelet reports
success: the pod becomes Running with every container ready; a pod being deleted is removed once its
grace period starts (nothing runs, so nothing needs to stop). The DaemonSet controller, the scheduler and
the garbage collector are the real ones: which pods exist and where is their decision, not this file's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.e2e.kubeapi import ApiError, KubeApi

KUBELET_VERSION = "v1.34.4"
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
POLL_EVERY = 0.3


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_object(name: str, labels: Mapping[str, str], arch: str = "amd64") -> dict[str, Any]:
    """A Node as a kubelet registers it: its own labels plus the well-known ones."""
    all_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        **labels,
    }
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": all_labels}}


def node_status(arch: str, os_image: str) -> dict[str, Any]:
    """The status a healthy kubelet reports."""
    resources = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    now = _now()
    return {
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "fake kubelet",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                },
            ],
            "nodeInfo": {
                "machineID": "e2e",
                "systemUUID": "e2e",
                "bootID": "e2e",
                "kernelVersion": "6.12.95",
                "osImage": os_image,
                "containerRuntimeVersion": "fake://1",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch,
            },
        }
    }


def running_status(pod: dict[str, Any], ready: bool = True) -> dict[str, Any]:
    """The status of a pod whose init containers finished and whose containers all run; ready, or (as
    when a readiness probe fails, e.g. an installer waiting for busy GPUs) running but not ready."""
    now = _now()
    spec = pod["spec"]

    def started(container: dict[str, Any]) -> dict[str, Any]:
        return {"name": container["name"], "image": container["image"], "imageID": container["image"],
                "ready": ready, "started": True, "restartCount": 0,
                "state": {"running": {"startedAt": now}}}  # fmt: skip

    def finished(container: dict[str, Any]) -> dict[str, Any]:
        return {"name": container["name"], "image": container["image"], "imageID": container["image"],
                "ready": True, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now,
                                         "finishedAt": now}}}  # fmt: skip

    conditions = [
        {"type": kind, "status": "True", "lastTransitionTime": now}
        for kind in ("PodScheduled", "Initialized")
    ]
    for kind in ("ContainersReady", "Ready"):
        condition = {"type": kind, "status": str(ready), "lastTransitionTime": now}
        if not ready:  # what a kubelet says when a readiness probe fails
            condition.update(reason="ContainersNotReady", message="containers with unready status")
        conditions.append(condition)
    return {
        "status": {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": now,
            "containerStatuses": [started(c) for c in spec.get("containers", [])],
            "initContainerStatuses": [finished(c) for c in spec.get("initContainers", [])],
        }
    }


def _is_running(pod: dict[str, Any]) -> bool:
    return bool(pod.get("status", {}).get("phase") == "Running")


@dataclass
class Readiness:
    """How the simulated kubelets report the pods whose names start with `prefix`: running but not ready
    for `delay` seconds after they are first seen (an installer loading its driver), and not ready at all
    on the nodes in `held` (an installer waiting for busy GPUs: docs/node.md, step 5). Pods that were
    already ready when a node is held stay ready, as a running installer does."""

    prefix: str
    delay: float = 0.0
    held: set[str] = field(default_factory=set)


def _is_running_and_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    return status.get("phase") == "Running" and ready


class FakeKubelet:
    """Simulated nodes: `add_node` registers one; a background thread plays their kubelets."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.nodes: dict[str, str] = {}  # name -> arch
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)
        self._last_renew = 0.0
        self._readiness: dict[str, Readiness] = {}
        self._first_seen: dict[str, float] = {}  # pod uid -> monotonic time, for Readiness.delay

    def start(self) -> FakeKubelet:
        """Starts acting for the registered nodes."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the background thread (the nodes stay registered)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def add_node(self, name: str, labels: Mapping[str, str], arch: str = "amd64", os_image: str = "") -> None:
        """Registers a node with these labels, Ready, with a lease."""
        self.api.create("/api/v1/nodes", node_object(name, labels, arch))
        self.api.patch(f"/api/v1/nodes/{name}/status", node_status(arch, os_image or "Garden Linux"))
        self.api.create(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": name},
             "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                      "renewTime": _micro_now()}},
        )  # fmt: skip
        with self._lock:
            self.nodes[name] = arch

    def remove_node(self, name: str) -> None:
        """Deletes a node (the pod garbage collector then removes its pods)."""
        with self._lock:
            self.nodes.pop(name, None)
        self.api.delete(f"/api/v1/nodes/{name}")

    def set_readiness(self, rule: Readiness) -> None:
        """Reports the pods of `rule.prefix` by that rule from now on (replaces an earlier rule)."""
        with self._lock:
            self._readiness[rule.prefix] = rule

    def hold(self, prefix: str, node: str) -> None:
        """New pods of `prefix` on `node` stay running and not ready until `release`."""
        with self._lock:
            self._readiness.setdefault(prefix, Readiness(prefix)).held.add(node)

    def release(self, prefix: str, node: str) -> None:
        """Pods of `prefix` on `node` become ready (after the rule's delay)."""
        with self._lock:
            rule = self._readiness.get(prefix)
            if rule is not None:
                rule.held.discard(node)

    def clear_readiness(self, prefix: str) -> None:
        """Pods of `prefix` become ready at once again."""
        with self._lock:
            self._readiness.pop(prefix, None)

    def _may_be_ready(self, pod: dict[str, Any]) -> bool:
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        first_seen = self._first_seen.setdefault(uid, time.monotonic())
        with self._lock:
            rules = [r for r in self._readiness.values() if name.startswith(r.prefix)]
            return all(
                pod["spec"]["nodeName"] not in r.held and time.monotonic() - first_seen >= r.delay
                for r in rules
            )

    def _renew_leases(self) -> None:
        with self._lock:
            names = list(self.nodes)
        for name in names:
            self.api.patch(
                f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}",
                {"spec": {"renewTime": _micro_now()}},
            )

    def _sync_pods(self) -> None:
        with self._lock:
            mine = set(self.nodes)
        for pod in self.api.items("/api/v1/pods"):
            if pod["spec"].get("nodeName") not in mine:
                continue
            meta = pod["metadata"]
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            if meta.get("deletionTimestamp"):
                self.api.delete(path, grace_seconds=0)
                self._first_seen.pop(meta["uid"], None)
            elif _is_running_and_ready(pod):
                continue
            elif self._may_be_ready(pod):
                self.api.patch(path + "/status", running_status(pod))
            elif not _is_running(pod):
                self.api.patch(path + "/status", running_status(pod, ready=False))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._last_renew > RENEW_EVERY:
                    self._renew_leases()
                    self._last_renew = time.monotonic()
                self._sync_pods()
            except ApiError as error:
                if error.status not in (404, 409):  # races with deletions and updates are normal
                    self.errors.append(str(error))
            except OSError as error:
                self.errors.append(str(error))
            self._stop.wait(POLL_EVERY)
