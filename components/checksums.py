"""Reads image/checksums/nvidia-driver.sha256: which driver versions the image build can verify."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

CHECKSUM_FILE = Path(__file__).resolve().parent.parent / "image" / "checksums" / "nvidia-driver.sha256"

# NVIDIA names its architectures x86_64 and aarch64 (in its download file names,
# NVIDIA-Linux-<arch>-<version>.run).
NVIDIA_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}

# One entry: `<sha256>  [*]NVIDIA-Linux-<arch>-<version>.run` (`sha256sum` output). Lines end at "\n" (a CR
# before it is dropped), surrounding blanks are ignored, `#` starts a comment; other lines are not
# entries, and the first line of a file name counts. image/build/fetch-driver.sh reads the file by the
# same rules (its `list` command; tests/test_contracts.py compares the two).
_NAME_RE = re.compile(r"NVIDIA-Linux-(x86_64|aarch64)-([0-9.]+)\.run")
_LINE_RE = re.compile(rf"([0-9a-f]{{64}})[ \t]+\*?({_NAME_RE.pattern})")


def checksum_entries(text: str) -> dict[str, str]:
    """NVIDIA's file name -> its SHA-256 (hex), for every entry of a checksum file."""
    entries: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.removesuffix("\r").strip(" \t")
        if not line or line.startswith("#"):
            continue
        match = _LINE_RE.fullmatch(line)
        if match is not None:
            entries.setdefault(match.group(2), match.group(1))
    return entries


def parse_checksums(text: str) -> frozenset[tuple[str, str]]:
    """The (arch, driver version) pairs of a checksum file, with arch in Kubernetes' naming."""
    by_nvidia = {nvidia: ours for ours, nvidia in NVIDIA_ARCH.items()}
    pairs: set[tuple[str, str]] = set()
    for name in checksum_entries(text):
        if match := _NAME_RE.fullmatch(name):
            pairs.add((by_nvidia[match.group(1)], match.group(2)))
    return frozenset(pairs)


@cache
def available_checksums(path: Path = CHECKSUM_FILE) -> frozenset[tuple[str, str]]:
    """The (arch, driver version) pairs the build can verify; empty when the file does not exist."""
    if not path.is_file():
        return frozenset()
    # Bytes, not read_text(): universal newlines would split a line at a lone CR, which the build does not.
    return parse_checksums(path.read_bytes().decode("utf-8", errors="replace"))
