"""GPU nodes no target covers: label matching with Kubernetes semantics, which nodes are reported and what
the report says; the cluster read never fails a preview."""

from __future__ import annotations

import pytest

from components import coverage
from components.cluster_nodes import report_uncovered_gpu_nodes
from components.config_source import RawConfig, build_stack_config
from components.render import stack_config
from components.selection import Requirement, target_selection
from tests.pulumi import harness as h

LABELS = {"gpu": "true", "os-version": "1877.17", "kubernetes.io/arch": "amd64"}


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        (Requirement("gpu", "Exists"), True),
        (Requirement("nfd", "Exists"), False),
        (Requirement("nfd", "DoesNotExist"), True),
        (Requirement("gpu", "DoesNotExist"), False),
        (Requirement("os-version", "In", ("1877.17", "1877.18")), True),
        (Requirement("os-version", "In", ("1877.18",)), False),
        (Requirement("missing", "In", ("x",)), False),
        (Requirement("os-version", "NotIn", ("1877.17",)), False),
        (Requirement("os-version", "NotIn", ("2150.9.0",)), True),
        (Requirement("missing", "NotIn", ("x",)), True),  # NotIn matches nodes without the label
    ],
)
def test_requirement_matching_follows_kubernetes(requirement: Requirement, expected: bool) -> None:
    assert coverage.requirement_matches(requirement, LABELS) is expected


def test_only_gpu_nodes_that_no_target_selects_are_reported() -> None:
    selections = [target_selection("amd64", None, "1877.17"), target_selection("amd64", None, "2150.9.0")]
    nodes = {
        "covered": LABELS,
        "new-version": {**LABELS, "os-version": "1934.0"},
        "arm": {**LABELS, "kubernetes.io/arch": "arm64"},
        "cpu": {"os-version": "1934.0", "kubernetes.io/arch": "amd64"},
        "gpu-false": {**LABELS, "gpu": "false", "os-version": "1934.0"},
        "nfd": {"feature.node.kubernetes.io/pci-10de.present": "true", "kubernetes.io/arch": "amd64"},
    }
    found = coverage.uncovered_nodes(nodes, selections)
    assert [n.name for n in found] == ["arm", "new-version", "nfd"]
    message = found[1].message(2)
    assert message.startswith(
        "GPU node new-version (Garden Linux 1934.0, arch amd64) is selected by no target"
    )
    assert "pulumi config set --path 'targets[2].glVersion' 1934.0" in message
    assert "no os-version label" in found[2].message(2)


def test_a_custom_selection_covers_its_nodes() -> None:
    nfd = [Requirement("feature.node.kubernetes.io/pci-10de.present", "In", ("true",))]
    nodes = {"nfd": {"feature.node.kubernetes.io/pci-10de.present": "true", "kubernetes.io/arch": "amd64"}}
    assert coverage.uncovered_nodes(nodes, [target_selection("amd64", nfd, "1877.17")]) == []


def test_an_unreachable_cluster_only_skips_the_check() -> None:
    values, secret = stack_config("prod")
    stack = build_stack_config(RawConfig(values, frozenset(secret)))
    # prod names the kubeconfig context prod-gpu, which this machine does not have.
    report = report_uncovered_gpu_nodes(stack)
    warnings = report.warnings
    assert report.uncovered == {}  # nothing known: nothing marked
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "could not list the cluster's nodes to look for GPU nodes no target covers ("
    )
    assert warnings[0].endswith("the check was skipped")


def test_render_mode_reads_no_cluster() -> None:
    values, secret = stack_config("dev")
    report = report_uncovered_gpu_nodes(build_stack_config(RawConfig(values, frozenset(secret))))
    assert report.uncovered == {} and report.warnings == []


NODE_PATCH = "kubernetes:core/v1:NodePatch"


def test_each_uncovered_node_is_marked_on_the_node_through_the_clusters_provider() -> None:
    drivers = h.checksummed()
    config, secret = h.build_config([h.target("vm", "1877.17", drivers[0])])
    uncovered = {"gpu-new": "GPU node gpu-new (Garden Linux 1934.0, arch amd64) is selected by no target"}
    recorder, _ = h.run(config, secret, uncovered=uncovered)
    (patch,) = recorder.of_type(NODE_PATCH)
    metadata = h.plain(patch.inputs)["metadata"]
    assert metadata["name"] == "gpu-new"
    # The status label the installers use, with a value no installer sets; the message for `describe`.
    assert metadata["labels"] == {"nvidia-installer/status": "uncovered"}
    assert metadata["annotations"]["nvidia-installer/uncovered"] == uncovered["gpu-new"]
    # Forced: the label may belong to the installer that ran there before (server-side apply conflict).
    assert metadata["annotations"]["pulumi.com/patchForce"] == "true"
    # A fixed field manager: an update of the message must not leave the label owned by a former one.
    assert metadata["annotations"]["pulumi.com/patchFieldManager"] == "nvidia-installer-coverage"
    # The same provider as every other object of the stack (the cluster of the stack, not a default one).
    providers = {r.provider for r in recorder.of_type("kubernetes:apps/v1:DaemonSet")}
    assert providers == {patch.provider} and patch.provider.startswith("urn:pulumi:")


def test_no_uncovered_node_no_patch() -> None:
    config, secret = h.build_config([h.target("vm", "1877.17", h.checksummed()[0])])
    recorder, _ = h.run(config, secret)
    assert recorder.of_type(NODE_PATCH) == []
