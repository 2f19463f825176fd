"""Version parsing, the known-incompatibility data and the checksum file reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.checksums import CHECKSUM_FILE, available_checksums, parse_checksums
from components.compatibility import incompatibility
from components.versions import gl_at_least, parse_driver_version, parse_gl_version


@pytest.mark.parametrize(
    ("text", "parts"), [("1877.17", (1877, 17)), ("1592.10", (1592, 10)), ("2150.9.0", (2150, 9, 0))]
)
def test_gl_versions_accepted(text: str, parts: tuple[int, ...]) -> None:
    assert parse_gl_version(text) == parts


@pytest.mark.parametrize("text", ["1877", "1877.17.0", "2150.9", "2150.9.0.1", "01877.1", "v1877.17", ""])
def test_gl_versions_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape("1877.17")):
        parse_gl_version(text)


def test_gl_ordering_pads_missing_parts() -> None:
    assert gl_at_least("2150.8.0", (2150, 8))
    assert gl_at_least("2150.10.0", (2150, 8))
    assert not gl_at_least("2150.7.3", (2150, 8))
    assert not gl_at_least("1877.17", (2150, 8))


def test_driver_versions() -> None:
    assert parse_driver_version("580.159.04") == (580, 159, 4)
    assert parse_driver_version("535.86.10") == (535, 86, 10)
    for bad in ("580", "580.159", "580.159.4", "58.1.02", "580.159.04.1"):
        with pytest.raises(ValueError, match=re.escape("MAJOR.MINOR.PATCH")):
            parse_driver_version(bad)


def test_570_breaks_from_gl_2150_8_only() -> None:
    assert incompatibility("570.172.08", "2150.8.0") is not None
    assert incompatibility("570.172.08", "2150.9.0") is not None
    assert incompatibility("570.172.08", "2150.7.0") is None
    assert incompatibility("580.159.04", "2150.9.0") is None


def test_checksum_parser_reads_the_sha256sum_format() -> None:
    text = (
        "# comment\n\n"
        f"{'a' * 64}  NVIDIA-Linux-x86_64-580.159.04.run\n"
        f"{'b' * 64}  NVIDIA-Linux-aarch64-590.48.01.run\n"
        "not a checksum line\n"
    )
    assert parse_checksums(text) == {("amd64", "580.159.04"), ("arm64", "590.48.01")}


def test_checksum_file_of_the_image_build_is_read(tmp_path: Path) -> None:
    assert CHECKSUM_FILE.is_file()
    lines = [ln for ln in CHECKSUM_FILE.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(available_checksums()) == len(lines)
    assert available_checksums(tmp_path / "missing") == frozenset()
