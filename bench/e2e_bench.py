"""End-to-end benchmark: the real `pulumi preview` and `pulumi up` for 1, 8 and 32 targets against the
local control plane (one simulated GPU node per target), beside the offline render of the same stacks,
and the tool build times (cold, from the cache entries; cached, measured here).

Usage: .venv/bin/python -m bench.e2e_bench [--runs 3] [--out bench/results/e2e.md]
Needs the tools (tools/build.sh). Prints a table and writes it with date and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from tests.e2e.controlplane import ETCD, ControlPlane
from tests.e2e.kubelet import FakeKubelet
from tests.e2e.pulumi_cli import ROOT, Project, install_provider

SIZES = (1, 8, 32)
DIGEST = "sha256:" + "ab" * 32


def _target(index: int) -> dict[str, str]:
    version = f"1877.{index}"
    return {
        "name": f"gl1877-{index}",
        "glVersion": version,
        "arch": "amd64",
        "flavour": "cloud",
        "driverVersion": "580.159.04",
        "image": f"registry.example.com/gpu/nvidia-driver:580.159.04-gl{version}-cloud-amd64-auto@{DIGEST}",
    }


def stack_config(targets: int, render_directory: str | None) -> dict[str, object]:
    """The non-secret config of a bench stack with `targets` targets."""
    cluster = {"renderDirectory": render_directory} if render_directory else {}
    config: dict[str, object] = {
        "pulumi:disable-default-providers": ["kubernetes"],
        "nvidia-installer:image": {"build": False},
        "nvidia-installer:targets": [_target(i) for i in range(1, targets + 1)],
    }
    if cluster:
        config["nvidia-installer:cluster"] = cluster
    return config


def timed(action: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_of(runs: int, action: Callable[[], object]) -> float:
    """Median wall seconds of `runs` calls."""
    return statistics.median(timed(action) for _ in range(runs))


def _write_stack(project: Project, stack: str, config: dict[str, object]) -> None:
    project.run("stack", "init", stack)
    path = project.workdir / "stacks" / f"Pulumi.{stack}.yaml"
    document = yaml.safe_load(path.read_text()) or {}
    document["config"] = {**(document.get("config") or {}), **config}
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _offline_render(stacks_dir: Path, stack: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "components.render", stack, "--stacks-dir", str(stacks_dir)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip


@dataclass(frozen=True)
class Bench:
    """What every row shares: the working directory, the tools, the control plane and its nodes."""

    work: Path
    tools: Path
    home: Path
    plane: ControlPlane
    kubelet: FakeKubelet
    runs: int


def bench_size(bench: Bench, size: int) -> dict[str, float]:
    """One row: render, preview (create), up (create), preview and up with nothing to change."""
    work, runs, plane = bench.work, bench.runs, bench.plane
    for index in range(1, size + 1):
        bench.kubelet.add_node(f"bench{size}-gpu-{index}", {"gpu": "true", "os-version": f"1877.{index}"})
    project = Project.copy(work / f"bench-{size}", bench.tools, bench.home)
    stack = f"bench-{size}"
    _write_stack(project, stack, stack_config(size, None))
    project.run("config", "set", "--secret", "kubeconfig", stdin=plane.kubeconfig.read_text())
    # The offline render reads a stack file without secrets: the same targets in render mode.
    render_dir = work / f"render-{size}"
    render_dir.mkdir()
    (render_dir / f"Pulumi.{stack}.yaml").write_text(
        yaml.safe_dump({"config": stack_config(size, "out/bench")}, sort_keys=False)
    )
    row = {
        "render": median_of(runs, lambda: _offline_render(render_dir, stack)),
        "preview (create)": median_of(runs, lambda: project.run("preview")),
        "up (create)": timed(lambda: project.run("up", "--yes", "--skip-preview")),
        "preview (no change)": median_of(runs, lambda: project.run("preview", "--expect-no-changes")),
        "up (no change)": median_of(runs, lambda: project.run("up", "--yes", "--skip-preview")),
    }
    project.run("destroy", "--yes", "--skip-preview")
    return row


def tool_build_times() -> list[tuple[str, str]]:
    """Cold build seconds recorded by tools/build.sh per tool set, and a cached run measured now."""
    cache = Path(os.environ.get("NVIDIA_INSTALLER_TOOLS_CACHE", "/var/tmp/nvidia-installer-tools"))
    rows = []
    for entry in sorted(cache.glob("*-*/BUILD_SECONDS")):
        rows.append((f"cold build: {entry.parent.name.rsplit('-', 1)[0]}", f"{int(entry.read_text())} s"))
    cached = median_of(3, lambda: subprocess.run([str(ROOT / "tools" / "build.sh")], check=True,
                                                 capture_output=True))  # fmt: skip
    rows.append(("tools/build.sh with everything cached (median of 3)", f"{cached:.2f} s"))
    return rows


def main() -> int:
    """Runs the benchmark and writes the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e2e.md")
    args = parser.parse_args()
    tools = Path(subprocess.run([str(ROOT / "tools" / "build.sh"), "--locate"], check=True,
                                capture_output=True, text=True).stdout.strip())  # fmt: skip
    rows: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "pulumi-home"
        home.mkdir()
        install_provider(tools, home)
        plane = ControlPlane(work / "control-plane", tools, ETCD).start()
        kubelet = FakeKubelet(plane.api).start()
        try:
            for size in SIZES:
                rows[size] = bench_size(Bench(work, tools, home, plane, kubelet, args.runs), size)
                print(f"{size} targets: {rows[size]}", file=sys.stderr)
        finally:
            kubelet.stop()
            plane.stop()
    columns = list(next(iter(rows.values())))
    lines = [
        f"# End-to-end benchmark ({datetime.now(UTC):%Y-%m-%d}, {platform.node()}, {os.cpu_count()} cores)",
        "",
        f"Real Pulumi CLI and Kubernetes provider against the local control plane; seconds, median of "
        f"{args.runs} (`up (create)`: one run). `render` is `python -m components.render` of the same "
        "targets in a fresh process.",
        "",
        "| targets | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for size, row in rows.items():
        lines.append(f"| {size} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    lines += ["", "| tools | time |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in tool_build_times()]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
