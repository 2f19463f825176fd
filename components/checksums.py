"""Reads image/checksums/nvidia-driver.sha256: which driver versions the image build can verify."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

CHECKSUM_FILE = Path(__file__).resolve().parent.parent / "image" / "checksums" / "nvidia-driver.sha256"

# NVIDIA names its architectures x86_64 and aarch64 (in its download file names,
# NVIDIA-Linux-<arch>-<version>.run).
NVIDIA_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}

_LINE_RE = re.compile(r"[0-9a-f]{64}\s+\*?NVIDIA-Linux-(x86_64|aarch64)-([0-9.]+)\.run")


def parse_checksums(text: str) -> frozenset[tuple[str, str]]:
    """The (arch, driver version) pairs of a checksum file, with arch in Kubernetes' naming."""
    by_nvidia = {nvidia: ours for ours, nvidia in NVIDIA_ARCH.items()}
    pairs: set[tuple[str, str]] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE_RE.fullmatch(line)
        if match is not None:
            pairs.add((by_nvidia[match.group(1)], match.group(2)))
    return frozenset(pairs)


@cache
def available_checksums(path: Path = CHECKSUM_FILE) -> frozenset[tuple[str, str]]:
    """The (arch, driver version) pairs the build can verify; empty when the file does not exist."""
    if not path.is_file():
        return frozenset()
    return parse_checksums(path.read_text())
