"""Benchmark of a driver change rolled over many simulated GPU nodes on the e2e tier's real control plane.

Usage (after tools/build.sh; the e2e tier's tools and the venv's etcd):
    nice -n 10 .venv/bin/python -m bench.rollout_bench [--nodes 20] [--widths 1 5 20] [--runs 3]
        [--load-seconds 2] [--output FILE]

One target selects --nodes simulated GPU nodes (tests/e2e/kubelet.py). Every run changes the target's
driver version and image with the real `pulumi up` (real CLI, program and Kubernetes provider) at one
width (`rollout.maxUnavailable`); the real DaemonSet controller rolls it, the real scheduler binds the new
pods, the fake kubelet reports each new installer pod running but not ready for --load-seconds (the
installer loading its driver), then ready. Widths are interleaved run by run, so the machine's noise
spreads over all of them.

Times (seconds, from `pulumi up`'s start; a watcher lists the target's pods every 0.2 s):
- all ready: every node runs a ready installer of the new image;
- up returned: the CLI exited (0);
- rollout: from the first old pod's deletion to all ready (the controller's part alone).

API requests: kube-apiserver's `apiserver_request_total` (/metrics) before and after each `up`, summed
over codes, by verb, resource and subresource; resource requests only (discovery, /openapi and the
bench's own /metrics scrapes are non-resource and left out). The metric has no client label, so the
simulated kubelet's requests (it lists all pods every 0.3 s, patches pod status, deletes pods whose
grace period started, renews leases) and the watcher's are counted on the client side by verb and
resource and subtracted: what is left is the real components' work: the DaemonSet controller, the
scheduler, the garbage collector and the other controllers, and the Pulumi provider.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import emit, machine_line
from tests.e2e.controlplane import ETCD, ControlPlane
from tests.e2e.kubeapi import KubeApi
from tests.e2e.kubelet import FakeKubelet, Readiness
from tests.e2e.pulumi_cli import ROOT, Project, install_provider

NAMESPACE = "gpu-rollout-bench"
GL_VERSION = "1444.1"  # a Garden Linux version only this bench's nodes carry
TARGET = "gl1444-cloud"
DAEMONSET = f"nvidia-installer-{TARGET}"
POLL = 0.2
COMMAND = "nice -n 10 .venv/bin/python -m bench.rollout_bench"
Key = tuple[str, str, str]  # verb, resource, subresource (as the apiserver's metric labels them)
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def classify(method: str, path: str) -> Key:
    """A client request as the apiserver's metric counts it: verb (LIST for a collection GET), resource,
    subresource; ("GET", "", "") for a non-resource path."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return (method, "", "")
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    verb = "LIST" if method == "GET" and not name else method
    return (verb, resource, sub)


@dataclass(frozen=True)
class CountingApi(KubeApi):
    """A KubeApi that counts its requests by verb and resource (the bench's view of one client)."""

    counts: Counter[Key] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _send(self, method: str, path: str, body: Any, content_type: str) -> bytes:
        with self.lock:
            self.counts[classify(method, path)] += 1
        return super()._send(method, path, body, content_type)

    def snapshot(self) -> Counter[Key]:
        """A copy of the counts so far."""
        with self.lock:
            return Counter(self.counts)


def scrape(api: KubeApi) -> Counter[Key]:
    """apiserver_request_total of resource requests, summed over codes and scopes."""
    counts: Counter[Key] = Counter()
    for line in api.text("/metrics").splitlines():
        match = METRIC.match(line)
        if not match:
            continue
        labels = dict(LABEL.findall(match["labels"]))
        if labels.get("resource"):
            counts[(labels["verb"], labels["resource"], labels.get("subresource", ""))] += int(
                float(match["value"])
            )
    return counts


def image(driver: str, serial: int) -> str:
    return (
        f"registry.example.com/gpu/nvidia-driver:{driver}-gl{GL_VERSION}-cloud-amd64-auto"
        f"@sha256:{serial:064x}"
    )


@dataclass
class Watcher:
    """Lists the target's pods every POLL seconds; remembers when the rollout started and ended."""

    api: KubeApi
    nodes: int
    new_image: str
    old_image: str
    first_gone: float | None = None
    all_ready: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def _take(self) -> None:
        ready_new: set[str] = set()
        old_ready = 0
        for pod in self.api.items(f"/api/v1/namespaces/{NAMESPACE}/pods"):
            if not pod["metadata"]["name"].startswith(f"{DAEMONSET}-"):
                continue
            conditions = pod.get("status", {}).get("conditions", [])
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            live = ready and not pod["metadata"].get("deletionTimestamp")
            img = pod["spec"]["containers"][0]["image"]
            if live and img == self.new_image:
                ready_new.add(pod["spec"]["nodeName"])
            elif live and img == self.old_image:
                old_ready += 1
        now = time.monotonic()
        if self.first_gone is None and old_ready < self.nodes:
            self.first_gone = now
        if self.all_ready is None and len(ready_new) == self.nodes:
            self.all_ready = now

    def _loop(self) -> None:
        while not self._stop.is_set() and self.all_ready is None:
            self._take()
            self._stop.wait(POLL)

    def __enter__(self) -> Watcher:
        self._thread = threading.Thread(target=self._loop, name="rollout-watcher", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float) -> None:
        """Waits until every node runs a ready new installer (or the timeout)."""
        self._thread.join(timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Result:
    width: int
    all_ready: float
    up_returned: float
    rollout: float
    others: Counter[Key]
    kubelet: int


@dataclass
class Bench:
    plane: ControlPlane
    kubelet: FakeKubelet
    kubelet_api: CountingApi
    watcher_api: CountingApi
    project: Project
    nodes: int
    driver_serial: int = 0
    current_image: str = ""

    def set_driver(self) -> str:
        self.driver_serial += 1
        driver = f"580.159.{self.driver_serial:02d}"
        self.current_image = image(driver, self.driver_serial)
        self.project.run("config", "set", "--path", "targets[0].driverVersion", driver)
        self.project.run("config", "set", "--path", "targets[0].image", self.current_image)
        return self.current_image

    def run(self, width: int) -> Result:
        old = self.current_image
        self.project.run("config", "set", "--path", "rollout.maxUnavailable", str(width))
        new = self.set_driver()
        time.sleep(1.0)  # the previous run's last requests (the provider's watches ending) land before
        before, kubelet_before, watcher_before = (
            scrape(self.plane.api), self.kubelet_api.snapshot(), self.watcher_api.snapshot()
        )  # fmt: skip
        with Watcher(self.watcher_api, self.nodes, new, old) as watcher:
            started = time.monotonic()
            self.project.run("up", "--yes", "--skip-preview")
            returned = time.monotonic()
            watcher.wait(timeout=60)
        after, kubelet_after, watcher_after = (
            scrape(self.plane.api), self.kubelet_api.snapshot(), self.watcher_api.snapshot()
        )  # fmt: skip
        if watcher.all_ready is None or watcher.first_gone is None:
            raise SystemExit(f"width {width}: the rollout did not finish after up returned")
        kubelet = kubelet_after - kubelet_before
        others = after - before - kubelet - (watcher_after - watcher_before)
        return Result(
            width, watcher.all_ready - started, returned - started, watcher.all_ready - watcher.first_gone,
            others, sum(kubelet.values()),
        )  # fmt: skip


def _stack(work: Path, tools: Path, home: Path, plane: ControlPlane) -> Project:
    project = Project.copy(work / "project", tools, home)
    project.init_one_target_stack(
        "rollout-bench", plane.kubeconfig.read_text(), NAMESPACE, TARGET, GL_VERSION,
        "pulumi config set --path rollout.timeoutMinutes 30",
    )  # fmt: skip
    return project


def _name(key: Key) -> str:
    return f"{key[0]} {key[1]}" + (f"/{key[2]}" if key[2] else "")


def _range(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def table(
    results: list[Result], args: argparse.Namespace, idle: Counter[Key], idle_seconds: float
) -> list[str]:
    widths = sorted({r.width for r in results})
    n = args.nodes
    lines = [
        f"# driver rollout over {n} simulated GPU nodes, real control plane and `pulumi up`; "
        f"{args.runs} runs per width; installer load time {args.load_seconds:g} s",
        machine_line(),
        f"# command: {COMMAND} {shlex.join(sys.argv[1:])}",
        "",
        "Seconds from `pulumi up`'s start, median (min-max); API requests of the real components "
        "(controllers, scheduler, Pulumi provider) per node, the simulated kubelet's and the watcher's "
        "subtracted. "
        f"Lower bound of the rollout: ceil({n} / width) x {args.load_seconds:g} s.",
        "",
        "| width | all nodes ready | up returned | rollout (first old pod gone to all ready) | lower bound "
        "| API requests / node | simulated kubelet's requests / node (not counted) |",
        "|---|---|---|---|---|---|---|",
    ]
    for width in widths:
        rows = [r for r in results if r.width == width]
        bound = -(-n // width) * args.load_seconds
        lines.append(
            f"| {width} | {_range([r.all_ready for r in rows], '.1f')} "
            f"| {_range([r.up_returned for r in rows], '.1f')} "
            f"| {_range([r.rollout for r in rows], '.1f')} | {bound:.0f} "
            f"| {_range([sum(r.others.values()) / n for r in rows], '.1f')} "
            f"| {_range([r.kubelet / n for r in rows], '.0f')} |"
        )
    keys = sorted({k for r in results for k, v in r.others.items() if v > 0})
    lines += [
        "",
        "Requests per node by verb and resource (mean over the runs of a width); rows under 0.1 per node at "
        "every width left out.",
        "",
        "| verb resource[/subresource] | " + " | ".join(f"width {w}" for w in widths) + " |",
        "|---|" + "---|" * len(widths),
    ]
    for key in keys:
        means = [statistics.mean(r.others[key] for r in results if r.width == w) / n for w in widths]
        if max(means) < 0.1:
            continue
        lines.append(f"| {_name(key)} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    lines += [
        "",
        f"Background with nothing changing, over {idle_seconds:.0f} s, same subtraction: "
        f"{sum(idle.values())} requests ("
        + ", ".join(f"{_name(k)}: {v}" for k, v in idle.most_common(4) if v > 0)
        + ").",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--load-seconds", type=float, default=2.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    tools = Path(subprocess.run([str(ROOT / "tools" / "build.sh"), "--locate"], check=True,
                                capture_output=True, text=True).stdout.strip())  # fmt: skip
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        work = Path(tmp)
        home = work / "pulumi-home"
        home.mkdir()
        install_provider(tools, home)
        plane = ControlPlane(work / "control-plane", tools, ETCD).start()
        admin = plane.api
        kubelet_api = CountingApi(admin.server, admin.ca_file, admin.token)
        watcher_api = CountingApi(admin.server, admin.ca_file, admin.token)
        kubelet = FakeKubelet(kubelet_api).start()
        try:
            admin.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
            for index in range(args.nodes):
                kubelet.add_node(f"rollout-bench-{index}", {"gpu": "true", "os-version": GL_VERSION})
            kubelet.set_readiness(Readiness(f"{DAEMONSET}-", delay=args.load_seconds))
            project = _stack(work, tools, home, plane)
            bench = Bench(plane, kubelet, kubelet_api, watcher_api, project, args.nodes)
            bench.project.run("config", "set", "--path", "rollout.maxUnavailable", str(max(args.widths)))
            bench.set_driver()
            bench.project.run("up", "--yes", "--skip-preview")
            idle_seconds = 20.0
            time.sleep(2.0)
            before, kubelet_before = scrape(admin), kubelet_api.snapshot()
            time.sleep(idle_seconds)
            idle = scrape(admin) - before - (kubelet_api.snapshot() - kubelet_before)
            try:
                for run in range(args.runs):
                    for width in args.widths:
                        result = bench.run(width)
                        results.append(result)
                        print(
                            f"run {run + 1} width {width}: ready {result.all_ready:.1f} s, "
                            f"up {result.up_returned:.1f} s, rollout {result.rollout:.1f} s, "
                            f"{sum(result.others.values())} requests",
                            file=sys.stderr,
                        )
            except KeyboardInterrupt:  # SIGINT: the table of the runs done so far
                args.runs = min(sum(1 for r in results if r.width == w) for w in args.widths)
                print(f"interrupted: {len(results)} rollouts measured", file=sys.stderr)
            if kubelet.errors:
                print(f"fake kubelet errors: {kubelet.errors[:5]}", file=sys.stderr)
        finally:
            kubelet.stop()
            plane.stop()
    emit(table(results, args, idle, idle_seconds), args.output)


if __name__ == "__main__":
    main()
