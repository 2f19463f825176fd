"""Reads the labels of the cluster's nodes for the coverage report (components/coverage.py), with the same
credentials the stack's provider uses: the secret kubeconfig, or the named context of your kubeconfig.

Read-only (`list nodes`), bounded by a timeout, and never fatal: whoever cannot list nodes gets a
warning, not a failed preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import yaml
from kubernetes import client, config
from pulumi.runtime import config as runtime_config

from components import coverage
from components.config import PROJECT, StackConfig

REQUEST_TIMEOUT_SECONDS = 10


def _api_client(kubeconfig: str | None, context: str | None) -> Any:
    if kubeconfig is not None:
        document = yaml.safe_load(kubeconfig)
        return config.new_client_from_config_dict(document, context=context)  # type: ignore[no-untyped-call]
    return config.new_client_from_config(context=context)  # type: ignore[no-untyped-call]


def node_labels(kubeconfig: str | None, context: str | None) -> dict[str, dict[str, str]]:
    """Node name -> labels of every node of the cluster."""
    with _api_client(kubeconfig, context) as api_client:
        nodes = client.CoreV1Api(api_client).list_node(_request_timeout=REQUEST_TIMEOUT_SECONDS)
    labels: dict[str, dict[str, str]] = {}
    for node in nodes.items:
        if node.metadata is not None and node.metadata.name:
            labels[node.metadata.name] = dict(node.metadata.labels or {})
    return labels


@dataclass(frozen=True)
class CoverageReport:
    """What the coverage check found: each uncovered GPU node with its message (what it is, the target to
    add; empty when the nodes could not be listed, or in render mode) and the warning lines it showed."""

    uncovered: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def report_uncovered_gpu_nodes(stack: StackConfig) -> CoverageReport:
    """Warns, in the preview and update output, about every GPU node no target selects, and returns what
    it found. Nothing to do in render mode (no cluster)."""
    if stack.cluster.render_directory is not None:
        return CoverageReport()
    kubeconfig = runtime_config.get_config(f"{PROJECT}:kubeconfig") if stack.kubeconfig is not None else None
    try:
        nodes = node_labels(kubeconfig, stack.cluster.context)
    except Exception as error:  # unreachable, forbidden, a bad kubeconfig: each only skips the check
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        report = CoverageReport(
            warnings=[
                f"could not list the cluster's nodes to look for GPU nodes no target covers "
                f"({type(error).__name__}: {reason}); the check was skipped"
            ]
        )
    else:
        found = coverage.uncovered_nodes(nodes, [t.selection() for t in stack.targets])
        messages = {node.name: node.message(len(stack.targets)) for node in found}
        report = CoverageReport(messages, list(messages.values()))
    for warning in report.warnings:
        pulumi.log.warn(warning)
    return report
