"""Parsing and ordering of Garden Linux and NVIDIA driver version strings (pure, no resources)."""

from __future__ import annotations

import re

# Garden Linux switched from two-part (`1877.17`) to three-part (`2150.9.0`) versions with release 2150
# (Garden Linux release notes; docs/configuration.md). A version's form must match its major release.
THREE_PART_FROM_MAJOR = 2150

GL_VERSION_FORM = (
    "a Garden Linux version: two parts below 2150 (like 1877.17), three parts from 2150 (like 2150.9.0)"
)
DRIVER_VERSION_FORM = "an NVIDIA driver version MAJOR.MINOR.PATCH (like 580.159.04 or 535.154.05)"

_GL_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?")
_DRIVER_RE = re.compile(r"([1-9][0-9]{2})\.([0-9]{1,3})\.([0-9]{2})")


def parse_gl_version(text: str) -> tuple[int, ...]:
    """Returns the numeric parts of a Garden Linux version, or raises ValueError naming the expected form."""
    match = _GL_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected {GL_VERSION_FORM}")
    parts = tuple(int(p) for p in match.groups() if p is not None)
    wants_three = parts[0] >= THREE_PART_FROM_MAJOR
    if wants_three != (len(parts) == 3):
        raise ValueError(f"expected {GL_VERSION_FORM}")
    return parts


def gl_at_least(version: str, minimum: tuple[int, ...]) -> bool:
    """True when `version` is `minimum` or newer; missing trailing parts count as zero."""
    parts = parse_gl_version(version)
    width = max(len(parts), len(minimum))
    padded = parts + (0,) * (width - len(parts))
    return padded >= minimum + (0,) * (width - len(minimum))


def parse_driver_version(text: str) -> tuple[int, int, int]:
    """Returns (branch, minor, patch) of an NVIDIA driver version, or raises ValueError."""
    match = _DRIVER_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected {DRIVER_VERSION_FORM}")
    branch, minor, patch = (int(p) for p in match.groups())
    return branch, minor, patch


def driver_branch(version: str) -> int:
    """The driver branch (the first number: 570, 580, ...) of a valid driver version."""
    return parse_driver_version(version)[0]
