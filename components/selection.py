"""Node selection of a target: the label requirements it schedules on, and whether two selections
can match the same node (pure, no resources)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

ARCH_LABEL = "kubernetes.io/arch"
# The original Garden Linux chart selected GPU nodes by these two labels, set by the cluster operator
# (Gardener nodes carry no OS-version label by default).
GPU_LABEL = "gpu"
OS_VERSION_LABEL = "os-version"
# The prefix of the labels Node Feature Discovery sets itself.
NFD_LABEL_PREFIX = "feature.node.kubernetes.io/"
# Node Feature Discovery's label for VERSION_ID of /etc/os-release (Garden Linux: `1877.17`, `2150.9.0`).
NFD_VERSION_LABEL = f"{NFD_LABEL_PREFIX}system-os_release.VERSION_ID"
# The labels that carry a node's Garden Linux version: a target's selection must pin one of them.
VERSION_LABELS = (OS_VERSION_LABEL, NFD_VERSION_LABEL)


@dataclass(frozen=True)
class Requirement:
    """One nodeSelectorRequirement: `key` `operator` `values` (values empty for Exists/DoesNotExist)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The Kubernetes form (a matchExpressions item)."""
        out: dict[str, object] = {"key": self.key, "operator": self.operator}
        if self.operator in ("In", "NotIn"):
            out["values"] = list(self.values)
        return out

    def describe(self) -> str:
        """A short human form, like `gpu Exists` or `os-version In [1877.17]`."""
        if self.operator in ("In", "NotIn"):
            return f"{self.key} {self.operator} [{', '.join(self.values)}]"
        return f"{self.key} {self.operator}"


def default_selection(gl_version: str) -> tuple[Requirement, ...]:
    """The original chart's selection: label `gpu` present and `os-version` equal to the GL version."""
    return (Requirement(GPU_LABEL, "Exists"), Requirement(OS_VERSION_LABEL, "In", (gl_version,)))


def target_selection(
    arch: str, user: Sequence[Requirement] | None, gl_version: str
) -> tuple[Requirement, ...]:
    """The target's full selection: the user's expressions (or the default) plus the arch, always,
    because a driver image is built for one architecture."""
    base = tuple(user) if user else default_selection(gl_version)
    return (*base, Requirement(ARCH_LABEL, "In", (arch,)))


def _key_satisfiable(reqs: Iterable[Requirement]) -> bool:
    """Whether some node label state (absent, or one value) satisfies all requirements on one key.
    NotIn and DoesNotExist are satisfied by an absent label (Kubernetes node affinity semantics)."""
    reqs = list(reqs)
    must_exist = any(r.operator in ("In", "Exists") for r in reqs)
    if any(r.operator == "DoesNotExist" for r in reqs):
        return not must_exist
    if not must_exist:
        return True
    allowed: set[str] | None = None
    for r in reqs:
        if r.operator == "In":
            allowed = set(r.values) if allowed is None else allowed & set(r.values)
    if allowed is None:
        return True  # Exists plus NotIn: some value outside a finite set always remains
    forbidden = {v for r in reqs if r.operator == "NotIn" for v in r.values}
    return bool(allowed - forbidden)


def satisfiable(reqs: Iterable[Requirement]) -> bool:
    """Whether any node can satisfy all requirements (keys are independent of each other)."""
    by_key: dict[str, list[Requirement]] = {}
    for r in reqs:
        by_key.setdefault(r.key, []).append(r)
    return all(_key_satisfiable(group) for group in by_key.values())


def can_overlap(a: Sequence[Requirement], b: Sequence[Requirement]) -> bool:
    """Whether one node could match both selections: true unless some key makes them provably disjoint."""
    return satisfiable([*a, *b])


def pins(reqs: Sequence[Requirement], key: str, value: str) -> bool:
    """Whether every node the requirements match has label `key` equal to `value`."""
    return not satisfiable([*reqs, Requirement(key, "NotIn", (value,))])


def version_problem(reqs: Sequence[Requirement], gl_version: str) -> str | None:
    """Why a target's selection could match nodes of another Garden Linux version than its own (whose
    kernel its image was not built for), or None. A version label must hold exactly `gl_version`, and no
    version label may exclude it (a node's labels agree on its version)."""
    for key in VERSION_LABELS:
        if not satisfiable([*reqs, Requirement(key, "In", (gl_version,))]):
            return f"it rejects every node labelled {key}={gl_version}, the target's own Garden Linux version"
    if not any(pins(reqs, key, gl_version) for key in VERSION_LABELS):
        return (
            f"no expression pins {' or '.join(VERSION_LABELS)} to {gl_version}, so nodes of any Garden "
            "Linux version can match"
        )
    return None
