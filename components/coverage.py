"""GPU nodes that no target covers: a Garden Linux update the stack does not know yet leaves such a node
without a driver, and nothing in the cluster would say so. Pure: node labels in, findings out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from components.selection import ARCH_LABEL, GPU_LABEL, OS_VERSION_LABEL, Requirement

# A node counts as a GPU node when it carries one of these labels (set by the operator as in the original
# Garden Linux chart, by NVIDIA's GPU feature discovery, or by Node Feature Discovery for PCI vendor 10de).
GPU_NODE_LABELS = (GPU_LABEL, "nvidia.com/gpu.present", "feature.node.kubernetes.io/pci-10de.present")


def requirement_matches(requirement: Requirement, labels: Mapping[str, str]) -> bool:
    """Whether a node with these labels satisfies one nodeSelectorRequirement (Kubernetes semantics)."""
    present = requirement.key in labels
    match requirement.operator:
        case "Exists":
            return present
        case "DoesNotExist":
            return not present
        case "In":
            return present and labels[requirement.key] in requirement.values
        case "NotIn":
            return not present or labels[requirement.key] not in requirement.values
    raise ValueError(f"unknown operator {requirement.operator!r}")


def selects(selection: Sequence[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether a target's selection (all requirements) matches a node."""
    return all(requirement_matches(r, labels) for r in selection)


def is_gpu_node(labels: Mapping[str, str]) -> bool:
    """Whether the node is labelled as having NVIDIA GPUs."""
    return any(key in labels and labels[key] != "false" for key in GPU_NODE_LABELS)


@dataclass(frozen=True)
class UncoveredNode:
    """A GPU node no target selects, with what a target for it needs."""

    name: str
    gl_version: str | None
    arch: str | None

    def message(self, next_index: int) -> str:
        """One line for `pulumi preview`/`up`: which node, why it matters, what to add."""
        version = self.gl_version or "unknown (no os-version label)"
        add = (
            f"pulumi config set --path 'targets[{next_index}].glVersion' {self.gl_version} "
            f"(with its name, arch {self.arch or '?'}, flavour and driverVersion)"
            if self.gl_version
            else "an os-version label on the node, then a target for that version"
        )
        return (
            f"GPU node {self.name} (Garden Linux {version}, arch {self.arch or 'unknown'}) is selected by "
            f"no target, so it gets no NVIDIA driver; add a target for it: {add}"
        )


def uncovered_nodes(
    nodes: Mapping[str, Mapping[str, str]], selections: Sequence[Sequence[Requirement]]
) -> list[UncoveredNode]:
    """The GPU nodes (by name, with their labels) that no selection matches, sorted by name."""
    return [
        UncoveredNode(name, labels.get(OS_VERSION_LABEL), labels.get(ARCH_LABEL))
        for name, labels in sorted(nodes.items())
        if is_gpu_node(labels) and not any(selects(s, labels) for s in selections)
    ]
