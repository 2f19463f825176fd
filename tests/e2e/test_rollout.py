"""Driver upgrades on the real control plane: a driver change rolls over the simulated GPU nodes at the
configured width (the real DaemonSet controller's rolling update, gated on pod readiness), `pulumi up`
follows it to the end (the real provider's DaemonSet await), and a node whose installer stays not ready
(a busy GPU: docs/node.md, step 5) holds the rollout until the configured timeout fails the update.

The stages share one stack and run in file order.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.controlplane import ControlPlane
from tests.e2e.kubeapi import KubeApi
from tests.e2e.kubelet import FakeKubelet, Readiness
from tests.e2e.pulumi_cli import Project

NAMESPACE = "gpu-rollout"
GL_VERSION = "1443.3"  # a Garden Linux version no other e2e stack selects
TARGET = "gl1443-cloud"
DAEMONSET = f"nvidia-installer-{TARGET}"
NODES = [f"rollout-{i}" for i in range(5)]
WIDTH = 2
TIMEOUT_MINUTES = 1
DRAIN_MINUTES = 2
# How long a new installer pod is running-but-not-ready (loading its driver) on the simulated nodes: long
# enough that every step of the rollout is seen by a watcher polling every POLL seconds.
LOAD_SECONDS = 2.0
POLL = 0.2


def image(driver: str, digit: str) -> str:
    return (
        f"registry.example.com/gpu/nvidia-driver:{driver}-gl{GL_VERSION}-cloud-amd64-auto@sha256:{digit * 64}"
    )


IMAGES = {"580.159.04": image("580.159.04", "a"), "580.159.05": image("580.159.05", "b"),
          "580.159.06": image("580.159.06", "c")}  # fmt: skip


@dataclass
class Snapshot:
    """The target's installer pods at one moment: node -> [(image, ready, being deleted)]."""

    at: float
    pods: dict[str, list[tuple[str, bool, bool]]]

    def unavailable(self) -> int:
        """Target nodes without a ready pod that is not being deleted."""
        return sum(
            1 for node in NODES if not any(ready and not gone for _, ready, gone in self.pods.get(node, []))
        )

    def ready_with(self, wanted: str) -> int:
        """Nodes whose pod runs `wanted` and is ready."""
        return sum(
            1
            for node in NODES
            if any(img == wanted and ready and not gone for img, ready, gone in self.pods.get(node, []))
        )


@dataclass
class Watcher:
    """Polls the target's pods in the background while a `pulumi up` runs."""

    api: KubeApi
    snapshots: list[Snapshot] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _take(self) -> Snapshot:
        pods: dict[str, list[tuple[str, bool, bool]]] = {}
        for pod in self.api.items(f"/api/v1/namespaces/{NAMESPACE}/pods"):
            if not pod["metadata"]["name"].startswith(f"{DAEMONSET}-"):
                continue
            conditions = pod.get("status", {}).get("conditions", [])
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            entry = (
                pod["spec"]["containers"][0]["image"],
                ready,
                bool(pod["metadata"].get("deletionTimestamp")),
            )
            pods.setdefault(pod["spec"].get("nodeName", "<unscheduled>"), []).append(entry)
        return Snapshot(time.monotonic(), pods)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.snapshots.append(self._take())
            self._stop.wait(POLL)

    def __enter__(self) -> Watcher:
        self._thread = threading.Thread(target=self._loop, name="rollout-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.snapshots.append(self._take())


@dataclass
class RolloutStack:
    project: Project
    api: KubeApi
    kubelet: FakeKubelet

    def set_driver(self, driver: str) -> None:
        self.project.run("config", "set", "--path", "targets[0].driverVersion", driver)
        self.project.run("config", "set", "--path", "targets[0].image", IMAGES[driver])

    def daemonset(self) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{DAEMONSET}")
        return found


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane,
    kubelet: FakeKubelet,
    tools_bin: Path,
    pulumi_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RolloutStack]:
    """Five GPU nodes of one target, applied with the first driver; torn down afterwards."""
    api = control_plane.api
    api.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    for node in NODES:
        kubelet.add_node(node, {"gpu": "true", "os-version": GL_VERSION})
    kubelet.set_readiness(Readiness(f"{DAEMONSET}-", delay=LOAD_SECONDS))
    project = Project.copy(tmp_path_factory.mktemp("rollout"), tools_bin, pulumi_home)
    project.init_one_target_stack(
        "rollout", control_plane.kubeconfig.read_text(), NAMESPACE, TARGET, GL_VERSION,
        f"pulumi config set --path rollout.maxUnavailable {WIDTH}",
        f"pulumi config set --path rollout.timeoutMinutes {TIMEOUT_MINUTES}",
        "pulumi config set --path rollout.drain.mode evict",
        f"pulumi config set --path rollout.drain.timeoutMinutes {DRAIN_MINUTES}",
    )  # fmt: skip
    rollout = RolloutStack(project, api, kubelet)
    rollout.set_driver("580.159.04")
    project.run("up", "--yes", "--skip-preview")
    try:
        yield rollout
    finally:
        kubelet.clear_readiness(f"{DAEMONSET}-")
        project.run("destroy", "--yes", "--skip-preview", check=False)
        for node in NODES:
            kubelet.remove_node(node)


def test_create_is_awaited_until_every_node_is_ready(stack: RolloutStack) -> None:
    status = stack.daemonset()["status"]
    assert status["desiredNumberScheduled"] == len(NODES)
    assert status["numberReady"] == status["numberAvailable"] == len(NODES)


def test_pulumi_up_applies_the_drain_opt_in(stack: RolloutStack) -> None:
    """The stack's rollout.drain reaches the cluster through the real CLI and provider: the installers'
    drain settings, the role's drain verbs, the eviction policy (admitted and type-checked by the real API
    server) and its binding (docs/privileges.md)."""
    container = stack.daemonset()["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["DRAIN_MODE"], env["DRAIN_TIMEOUT_SECONDS"]) == ("evict", str(DRAIN_MINUTES * 60))
    name = f"nvidia-installer-{NAMESPACE}"
    role = stack.api.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")
    assert {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]} in role["rules"]
    admission = "/apis/admissionregistration.k8s.io/v1"
    policy = stack.api.get(f"{admission}/validatingadmissionpolicies/{name}-own-pods")
    assert policy["spec"]["paramKind"] == {"apiVersion": "v1", "kind": "Pod"}
    assert not policy.get("status", {}).get("typeChecking", {}).get("expressionWarnings")
    binding = stack.api.get(f"{admission}/validatingadmissionpolicybindings/{name}-own-pods")
    assert binding["spec"]["paramRef"]["parameterNotFoundAction"] == "Allow"


def test_a_driver_change_rolls_node_by_node_at_the_configured_width(stack: RolloutStack) -> None:
    old, new = IMAGES["580.159.04"], IMAGES["580.159.05"]
    stack.set_driver("580.159.05")
    with Watcher(stack.api) as watcher:
        up = stack.project.run("up", "--yes", "--skip-preview")
        returned = time.monotonic()
    assert up.returncode == 0
    # When `up` returned, every node ran a ready pod of the new driver.
    (at_return,) = [s for s in watcher.snapshots if s.at >= returned][:1]
    assert at_return.ready_with(new) == len(NODES), at_return
    status = stack.daemonset()["status"]
    assert status["updatedNumberScheduled"] == status["numberAvailable"] == len(NODES)
    rolling = [s for s in watcher.snapshots if s.ready_with(old) < len(NODES)]
    assert rolling, "the watcher saw no rollout"
    # Never more than WIDTH nodes without a ready installer, and the width was used.
    assert max(s.unavailable() for s in watcher.snapshots) == WIDTH
    # Never two installer pods on one node (maxSurge 0): the old pod is gone before the new one exists.
    assert all(len(pods) <= 1 for s in watcher.snapshots for pods in s.pods.values())
    # Node by node: the new driver arrived in steps (never more than WIDTH new pods not yet ready), and
    # the rollout took at least ceil(N / WIDTH) load times.
    assert all(
        sum(1 for pods in s.pods.values() for img, ready, _ in pods if img == new and not ready) <= WIDTH
        for s in watcher.snapshots
    )
    partial = {s.ready_with(new) for s in watcher.snapshots} - {0, len(NODES)}
    assert partial, "no intermediate state was seen"
    first_gone = rolling[0].at
    done = next(s.at for s in watcher.snapshots if s.ready_with(new) == len(NODES))
    assert done - first_gone >= math.ceil(len(NODES) / WIDTH) * LOAD_SECONDS - 1.0


def test_a_busy_node_holds_the_rollout_until_the_timeout_fails_up(stack: RolloutStack) -> None:
    held = NODES[2]
    new = IMAGES["580.159.06"]
    stack.kubelet.hold(f"{DAEMONSET}-", held)
    stack.set_driver("580.159.06")
    started = time.monotonic()
    with Watcher(stack.api) as watcher:
        up = stack.project.run("up", "--yes", "--skip-preview", check=False)
    took = time.monotonic() - started
    output = up.stdout + up.stderr
    assert up.returncode != 0, output
    # It waited the configured timeout, not less, and failed naming the DaemonSet.
    assert took >= TIMEOUT_MINUTES * 60, took
    assert f"{NAMESPACE}/{DAEMONSET}" in output, output
    assert "failed to fully initialize or become live" in output, output
    assert "timed out waiting for the condition" in output, output
    # Nodes other than the held one got the new driver; the held node's new pod runs, not ready.
    last = watcher.snapshots[-1]
    assert last.ready_with(new) == len(NODES) - 1, last
    assert last.pods[held] == [(new, False, False)], last
    assert max(s.unavailable() for s in watcher.snapshots) <= WIDTH
    status = stack.daemonset()["status"]
    assert status["numberAvailable"] == len(NODES) - 1
    # The rollout state: the provider's last progress line before the error, and the pod holding it.
    assert f"Available: {len(NODES) - 1}/{len(NODES)}" in output, output
    (held_pod,) = [
        pod["metadata"]["name"]
        for pod in stack.api.items(f"/api/v1/namespaces/{NAMESPACE}/pods")
        if pod["metadata"]["name"].startswith(f"{DAEMONSET}-") and pod["spec"]["nodeName"] == held
    ]
    assert f"[Pod {NAMESPACE}/{held_pod}]: containers with unready status" in output, output
    # Never a success line.
    assert "update failed" in output and "errored" in output, output


def test_releasing_the_node_lets_the_next_up_finish(stack: RolloutStack) -> None:
    stack.kubelet.release(f"{DAEMONSET}-", NODES[2])
    up = stack.project.run("up", "--yes", "--skip-preview")
    assert up.returncode == 0
    status = stack.daemonset()["status"]
    assert status["updatedNumberScheduled"] == status["numberAvailable"] == len(NODES)
    images = {
        pod["spec"]["containers"][0]["image"]
        for pod in stack.api.items(f"/api/v1/namespaces/{NAMESPACE}/pods")
        if pod["metadata"]["name"].startswith(f"{DAEMONSET}-")
    }
    assert images == {IMAGES["580.159.06"]}
