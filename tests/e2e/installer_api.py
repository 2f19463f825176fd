"""The installer's identity on the e2e tier's real API server, for the tests that run the real node
installer against it (test_node_state.py, test_drain.py).

The identity's objects come from the offline render (`components.render`, the same code `pulumi up`
runs) of the dev stack in a namespace of the test's own, and are applied with kubectl. A Pod of the
installer's ServiceAccount bound to a node stands for the installer pod there; `kubectl create token
--bound-object-kind Pod` mints the token the kubelet would mount into it. The real node installer (bash)
runs on a fake host (tests/node/fakenode.py) with that token, the control plane's CA and its address, as
KUBERNETES_SERVICE_HOST/PORT give it in a pod.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import specs
from components.render import STACKS_DIR, render_objects
from tests.e2e.controlplane import ControlPlane
from tests.e2e.kubeapi import ApiError, KubeApi
from tests.e2e.kubelet import FakeKubelet
from tests.node.fakenode import FakeNode

IDENTITY_KINDS = set(specs.INSTALLER_IDENTITY_KINDS)
STATUS = f"{specs.LABEL_PREFIX}status"
STAND_IN_IMAGE = "registry.example.com/stand-in:1"


@dataclass
class Cluster:
    """The control plane with the installer's identity applied in `namespace`, and the token of the
    installer pod `pod` on `node`."""

    plane: ControlPlane
    tools_bin: Path
    namespace: str
    node_name: str
    pod: str
    token: str = ""

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
        (account / "namespace").write_text(self.namespace)
        node = FakeNode(tmp / "node")
        node.env_extra.update(
            SERVICE_ACCOUNT_DIR=str(account), KUBERNETES_SERVICE_HOST="127.0.0.1",
            KUBERNETES_SERVICE_PORT=str(self.plane.api_port), POD_NAME=self.pod, NODE_NAME=self.node_name,
        )  # fmt: skip
        return node

    def busy_node(self, tmp: Path, old_driver: str, **env: str) -> FakeNode:
        """A fake host (node()) whose loaded driver `old_driver` one GPU process, 4242 (python3), uses."""
        node = self.node(tmp)
        node.load_module("nvidia", old_driver, refcnt=1)
        node.add_process(4242, "python3", ("/dev/nvidia0",))
        node.env_extra.update({"IDLE_POLL_SECONDS": "0.2", **env})
        return node

    def node_object(self, name: str = "") -> dict[str, Any]:
        found: dict[str, Any] = self.admin.get(f"/api/v1/nodes/{name or self.node_name}")
        return found

    def labels(self, name: str = "") -> dict[str, str]:
        found: dict[str, str] = self.node_object(name)["metadata"].get("labels", {})
        return found

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.admin.items("/api/v1/namespaces/default/events")
            if event["reason"] == reason and event["involvedObject"]["name"] == self.node_name
        ]


def rendered_identity(workdir: Path, namespace: str, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The identity objects of the dev stack with `config` (full keys) set, rendered offline into
    `namespace`."""
    stacks = workdir / "stacks"
    stacks.mkdir()
    document = yaml.safe_load((STACKS_DIR / "Pulumi.dev.yaml").read_text())
    document["config"].update({"nvidia-installer:namespace": namespace, **config})
    (stacks / "Pulumi.identity.yaml").write_text(yaml.safe_dump(document))
    objects, _ = render_objects("identity", stacks)
    return [o for o in objects if o["kind"] in IDENTITY_KINDS]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Polls `probe` every 0.2 s until it returns something true (an ApiError counts as not yet)."""
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


def denied(call: Callable[[], Any]) -> str:
    """The message of the 403 that `call` must get."""
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.status == 403, caught.value
    return str(caught.value)


def stand_in_pod(name: str, node: str, **spec: Any) -> dict[str, Any]:
    """A Pod bound to `node` (no scheduler involved), with `spec` added."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "main", "image": STAND_IN_IMAGE}], **spec},
    }  # fmt: skip


def install_identity(
    plane: ControlPlane,
    kubelet: FakeKubelet,
    tools_bin: Path,
    workdir: Path,
    *,
    namespace: str,
    nodes: tuple[str, str],
    config: Mapping[str, Any],
) -> Cluster:
    """Registers the two nodes (the installer's and another), applies the identity rendered with
    `config`, binds a stand-in installer pod to the first node and mints its token; returns once the
    admission policy is in force."""
    for name in nodes:
        kubelet.add_node(name, {"node-role.example.com/gpu": "true"})
    setup = Cluster(plane, tools_bin, namespace, nodes[0], f"nvidia-installer-on-{nodes[0]}")
    setup.kubectl("create", "namespace", namespace)
    identity = rendered_identity(workdir, namespace, config)
    assert {o["kind"] for o in identity} == IDENTITY_KINDS
    setup.kubectl("apply", "-f", "-", stdin="---\n".join(yaml.safe_dump(o) for o in identity))
    installer_pod = stand_in_pod(setup.pod, nodes[0], serviceAccountName=specs.INSTALLER_SERVICE_ACCOUNT)
    plane.api.create(f"/api/v1/namespaces/{namespace}/pods", installer_pod)
    setup.token = setup.kubectl(
        "-n", namespace, "create", "token", specs.INSTALLER_SERVICE_ACCOUNT,
        "--bound-object-kind", "Pod", "--bound-object-name", setup.pod, "--duration", "1h",
    ).strip()  # fmt: skip
    # A policy takes effect once the API server's informers have it: wait until it refuses a foreign node.
    wait_for("the admission policy in force", lambda: _refused(setup.installer, nodes[1]))
    return setup


def cluster_fixture(namespace: str, nodes: tuple[str, str], config: Mapping[str, Any]) -> Any:
    """A module-scoped fixture `cluster`: install_identity in `namespace` on the session's control plane."""

    @pytest.fixture(scope="module")
    def cluster(
        control_plane: ControlPlane,
        kubelet: FakeKubelet,
        tools_bin: Path,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Cluster:
        workdir = tmp_path_factory.mktemp(namespace)
        return install_identity(control_plane, kubelet, tools_bin, workdir, namespace=namespace,
                                nodes=nodes, config=config)  # fmt: skip

    return cluster


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


def job_ends(node: FakeNode) -> None:
    """The GPU process of busy_node is gone: the old driver is idle."""
    (node.proc / "4242/fd/0").unlink()
    (node.sys / "module/nvidia/refcnt").write_text("0\n")
