"""The installer's node state (labels, events) through the real API server, with a real bound token, and
the installer's identity held to its own node by the real admission chain (RBAC and the
ValidatingAdmissionPolicy of components/specs.py).

The identity's objects come from the offline render (`components.render`, the same code `pulumi up`
runs) and are applied with kubectl. A Pod of the installer's ServiceAccount bound to gpu-node-1 stands
for the installer pod there; `kubectl create token --bound-object-kind Pod` mints the token the kubelet
would mount into it. The real node installer (bash) runs on a fake host (tests/node/fakenode.py) with that
token, the control plane's CA and its address, as KUBERNETES_SERVICE_HOST/PORT give it in a pod.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import specs
from components.render import STACKS_DIR, render_objects
from tests.e2e.controlplane import ControlPlane
from tests.e2e.kubeapi import MERGE_PATCH, ApiError, KubeApi
from tests.e2e.kubelet import FakeKubelet
from tests.node.fakenode import READY_FILE, FakeNode, kill_session

NAMESPACE = "gpu-node-state"
NODE = "gpu-node-1"
OTHER_NODE = "gpu-node-2"
POD = "nvidia-installer-on-gpu-node-1"
IDENTITY_KINDS = set(specs.INSTALLER_IDENTITY_KINDS)
STATUS = f"{specs.LABEL_PREFIX}status"


@dataclass
class Cluster:
    """The control plane with the installer's identity applied, and a token of the installer on NODE."""

    plane: ControlPlane
    tools_bin: Path
    token: str
    workdir: Path

    @property
    def admin(self) -> KubeApi:
        return self.plane.api

    @property
    def installer(self) -> KubeApi:
        """A client with the installer's bound token."""
        return KubeApi(self.plane.server, self.plane.pki / "ca.crt", self.token)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(self.tools_bin / "kubectl"), f"--kubeconfig={self.plane.kubeconfig}", *args],
            input=stdin, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return result.stdout

    def node(self, tmp: Path) -> FakeNode:
        """A fake GPU host whose installer talks to this API server with the token, as in its pod."""
        account = tmp / "serviceaccount"
        account.mkdir(parents=True)
        (account / "token").write_text(self.token)
        (account / "ca.crt").write_bytes((self.plane.pki / "ca.crt").read_bytes())
        (account / "namespace").write_text(NAMESPACE)
        node = FakeNode(tmp / "node")
        node.env_extra.update(
            SERVICE_ACCOUNT_DIR=str(account), KUBERNETES_SERVICE_HOST="127.0.0.1",
            KUBERNETES_SERVICE_PORT=str(self.plane.api_port), POD_NAME=POD, NODE_NAME=NODE,
        )  # fmt: skip
        return node

    def labels(self, name: str = NODE) -> dict[str, str]:
        found: dict[str, str] = self.admin.get(f"/api/v1/nodes/{name}")["metadata"].get("labels", {})
        return found

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.admin.items("/api/v1/namespaces/default/events")
            if event["reason"] == reason and event["involvedObject"]["name"] == NODE
        ]


def _rendered_identity(tmp: Path) -> list[dict[str, Any]]:
    """The identity objects of the dev stack, rendered offline into NAMESPACE."""
    stacks = tmp / "stacks"
    stacks.mkdir()
    document = yaml.safe_load((STACKS_DIR / "Pulumi.dev.yaml").read_text())
    document["config"]["nvidia-installer:namespace"] = NAMESPACE
    (stacks / "Pulumi.node-state.yaml").write_text(yaml.safe_dump(document))
    objects, _ = render_objects("node-state", stacks)
    return [o for o in objects if o["kind"] in IDENTITY_KINDS]


def _wait(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = last = probe()
        except ApiError as error:
            value, last = None, error
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not seen within {timeout:.0f} s (last: {last})"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(
    control_plane: ControlPlane,
    kubelet: FakeKubelet,
    tools_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Cluster:
    workdir = tmp_path_factory.mktemp("node-state")
    for name in (NODE, OTHER_NODE):
        kubelet.add_node(name, {"node-role.example.com/gpu": "true"})
    plane = control_plane
    setup = Cluster(plane, tools_bin, "", workdir)
    setup.kubectl("create", "namespace", NAMESPACE)
    identity = _rendered_identity(workdir)
    assert {o["kind"] for o in identity} == IDENTITY_KINDS
    setup.kubectl("apply", "-f", "-", stdin="---\n".join(yaml.safe_dump(o) for o in identity))
    plane.api.create(
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": NAMESPACE},
         "spec": {"serviceAccountName": specs.INSTALLER_SERVICE_ACCOUNT, "nodeName": NODE,
                  "tolerations": [{"operator": "Exists"}],
                  "containers": [{"name": "nvidia-installer", "image": "registry.example.com/stand-in:1"}]}},
    )  # fmt: skip
    token = setup.kubectl(
        "-n", NAMESPACE, "create", "token", specs.INSTALLER_SERVICE_ACCOUNT,
        "--bound-object-kind", "Pod", "--bound-object-name", POD, "--duration", "1h",
    ).strip()  # fmt: skip
    setup.token = token
    # A policy takes effect once the API server's informers have it: wait until it refuses a foreign node.
    _wait("the admission policy in force", lambda: _refused(setup.installer, OTHER_NODE))
    return setup


def _refused(api: KubeApi, node: str) -> bool:
    """Whether the policy refuses a label on `node` (a server-side dry run: admission runs, nothing is
    stored, so a policy not yet loaded changes nothing)."""
    try:
        api.patch(f"/api/v1/nodes/{node}?dryRun=All", {"metadata": {"labels": {STATUS: "ready"}}})
    except ApiError as error:
        if error.status == 403 and specs.POLICY_OTHER_NODE in str(error):
            return True
        raise
    return False


@pytest.fixture
def installer(cluster: Cluster, tmp_path: Path) -> Iterator[Callable[[FakeNode], subprocess.Popen[str]]]:
    """Starts the real installer on a fake host; stops what it started at the end of the test."""
    started: list[subprocess.Popen[str]] = []

    def start(node: FakeNode) -> subprocess.Popen[str]:
        log = (tmp_path / "installer.log").open("w")
        proc = subprocess.Popen(node.installer_argv(), env=node.env(), stderr=log, text=True,
                                start_new_session=True)  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        kill_session(proc.pid)


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
    _wait("the ready label", lambda: cluster.labels().get(STATUS) == "ready")
    assert proc.poll() is None  # the install went on: it stays running
    assert (node.host / READY_FILE).exists()
    labels = cluster.labels()
    assert labels[f"{specs.LABEL_PREFIX}driver-version"] == node.driver
    assert labels[f"{specs.LABEL_PREFIX}kernel"] == node.kernel
    assert labels[f"{specs.LABEL_PREFIX}module-type"] == "open"
    (event,) = _wait("the DriverReady event", lambda: cluster.events("DriverReady"))
    assert event["type"] == "Normal"
    assert event["involvedObject"]["kind"] == "Node"
    assert node.driver in event["message"] and "ready" in event["message"]
    assert event["source"] == {"component": "nvidia-installer", "host": NODE}
    # `kubectl describe node` finds it (it matches events by the node's name as uid, as the kubelet's).
    assert "DriverReady" in cluster.kubectl("describe", "node", NODE)
    # Nothing but the installer's own labels changed.
    assert cluster.labels(OTHER_NODE).get(STATUS) is None
    assert labels["node-role.example.com/gpu"] == "true"


def _denied(call: Callable[[], Any]) -> str:
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.status == 403, caught.value
    return str(caught.value)


def test_another_nodes_labels_are_refused(cluster: Cluster) -> None:
    message = _denied(lambda: cluster.installer.patch(
        f"/api/v1/nodes/{OTHER_NODE}", {"metadata": {"labels": {STATUS: "ready"}}}))  # fmt: skip
    assert specs.POLICY_OTHER_NODE in message
    assert "ValidatingAdmissionPolicy" in message
    assert STATUS not in cluster.labels(OTHER_NODE)


def test_a_label_outside_the_prefix_is_refused_on_its_own_node(cluster: Cluster) -> None:
    for labels in ({"gpu": "true"}, {"node-role.example.com/gpu": None}, {"nvidia-installer.evil/x": "1"}):
        patch = {"metadata": {"labels": labels}}
        message = _denied(partial(cluster.installer.patch, f"/api/v1/nodes/{NODE}", patch))
        assert specs.POLICY_FOREIGN_LABELS in message
    assert "gpu" not in cluster.labels() and cluster.labels()["node-role.example.com/gpu"] == "true"


def test_its_own_nodes_spec_and_annotations_are_refused(cluster: Cluster) -> None:
    for patch in ({"spec": {"unschedulable": True}},
                  {"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}},
                  {"metadata": {"annotations": {"example.com/a": "b"}}}):  # fmt: skip
        message = _denied(partial(cluster.installer.patch, f"/api/v1/nodes/{NODE}", patch))
        assert specs.POLICY_NODE_SPEC in message
    assert not cluster.admin.get(f"/api/v1/nodes/{NODE}")["spec"].get("unschedulable")


def test_an_event_about_another_node_is_refused(cluster: Cluster) -> None:
    event = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "forged-"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": OTHER_NODE, "uid": OTHER_NODE},
        "reason": "DriverReady", "message": "forged", "type": "Normal",
    }  # fmt: skip
    # Events about a Node live in `default` (the API server refuses them elsewhere), as the kubelet's.
    message = _denied(lambda: cluster.installer.create("/api/v1/namespaces/default/events", event))
    assert specs.POLICY_OTHER_EVENT in message
    about_a_pod = {**event, "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": NODE,
                                               "namespace": NAMESPACE}}  # fmt: skip
    assert specs.POLICY_OTHER_EVENT in _denied(
        lambda: cluster.installer.create(f"/api/v1/namespaces/{NAMESPACE}/events", about_a_pod)
    )


def test_rbac_grants_no_more_than_the_table(cluster: Cluster) -> None:
    # No reads, no deletes, no other API group: RBAC refuses before admission.
    assert "cannot get resource" in _denied(lambda: cluster.installer.get(f"/api/v1/nodes/{NODE}"))
    assert "cannot delete resource" in _denied(
        lambda: cluster.installer.delete(f"/api/v1/nodes/{OTHER_NODE}")
    )
    assert "cannot list resource" in _denied(lambda: cluster.installer.get("/api/v1/pods"))
    assert "cannot patch resource" in _denied(lambda: cluster.installer.patch(
        f"/api/v1/nodes/{NODE}/status", {"status": {"phase": "Running"}}))  # fmt: skip


def test_a_token_without_a_node_is_refused_everywhere(cluster: Cluster) -> None:
    unbound = cluster.kubectl("-n", NAMESPACE, "create", "token", specs.INSTALLER_SERVICE_ACCOUNT).strip()
    api = KubeApi(cluster.plane.server, cluster.plane.pki / "ca.crt", unbound)
    message = _denied(lambda: api.patch(
        f"/api/v1/nodes/{NODE}", {"metadata": {"labels": {STATUS: "ready"}}}, MERGE_PATCH))  # fmt: skip
    assert specs.POLICY_NO_NODE_NAME in message


def test_busy_gpus_say_waiting_for_idle_gpus(cluster: Cluster, installer: Any, tmp_path: Path) -> None:
    node = cluster.node(tmp_path)
    node.load_module("nvidia", "570.124.06", refcnt=1)
    node.add_process(4242, "python3", ("/dev/nvidia0",))
    node.env_extra["IDLE_POLL_SECONDS"] = "0.2"
    proc = installer(node)
    _wait("the waiting label", lambda: cluster.labels().get(STATUS) == "waiting-for-idle-gpus")
    events = _wait("the WaitingForIdleGPUs event", lambda: cluster.events("WaitingForIdleGPUs"))
    assert "4242 (python3)" in events[-1]["message"] and "570.124.06" in events[-1]["message"]
    assert proc.poll() is None and not (node.host / READY_FILE).exists()
    # The job ends: the same installer replaces the driver and the node says ready.
    (node.proc / "4242/fd/0").unlink()
    (node.sys / "module/nvidia/refcnt").write_text("0\n")
    _wait("the ready label after the wait", lambda: cluster.labels().get(STATUS) == "ready")


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
