"""Known driver/Garden Linux combinations that cannot work, as data (one place to extend)."""

from __future__ import annotations

from dataclasses import dataclass

from components.versions import driver_branch, gl_at_least


@dataclass(frozen=True)
class Incompatibility:
    """A driver branch that does not build for Garden Linux releases from `gl_from` on."""

    branch: int
    gl_from: tuple[int, ...]
    reason: str


# Garden Linux 2150.8 moved to kernel 6.18.41, whose changed kernel function signature breaks the build of
# the 570 driver branch's modules (reported in the issue tracker of gardenlinux/gardenlinux-nvidia-installer).
KNOWN_INCOMPATIBILITIES: tuple[Incompatibility, ...] = (
    Incompatibility(
        branch=570,
        gl_from=(2150, 8),
        reason="driver branch 570 does not compile against kernel 6.18.41+ (Garden Linux 2150.8 and later)",
    ),
)

# NVIDIA published its open kernel modules with the R515 driver (github.com/NVIDIA/open-gpu-kernel-modules).
FIRST_OPEN_MODULE_BRANCH = 515
# NVIDIA's default module type is open from branch 560 (its driver installation guide, "Kernel Modules"):
# the newest GPUs need them; the proprietary ones are needed only for GPUs older than Turing.
OPEN_BY_DEFAULT_BRANCH = 560


def incompatibility(driver_version: str, gl_version: str) -> Incompatibility | None:
    """The known incompatibility that rules out this combination, if any."""
    branch = driver_branch(driver_version)
    for item in KNOWN_INCOMPATIBILITIES:
        if item.branch == branch and gl_at_least(gl_version, item.gl_from):
            return item
    return None
