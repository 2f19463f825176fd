"""image/lib/keyvalue.sh, the one KEY=VALUE writer and reader in bash, against the Python reader the tests
use (tests/verify/verdict_run.parse_env): what one side writes, the other reads back unchanged."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.verify.verdict_run import parse_env

LIB = Path(__file__).resolve().parents[1] / "image" / "lib" / "keyvalue.sh"

# Values a build or a node really produces, and the awkward ones: spaces, '=', '$', quotes inside.
VALUES = {
    "DRIVER_VERSION": "580.65.06",
    "MODULE_TYPES": "open proprietary",
    "LOAD_CHECK_DETAIL": "nvidia.ko: No such device (ENODEV=19); drm ok",
    "ODD": "$(touch /x) `id` 'single' a\"b",
    "EMPTY": "",
}


def _bash(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'source "{LIB}"; {script}', "kv", *args], capture_output=True, text=True, check=False
    )


def test_bash_writes_python_reads(tmp_path: Path) -> None:
    target = tmp_path / "data.env"
    pairs = [part for item in VALUES.items() for part in item]
    result = _bash('kv_write "$1" "${@:2}"', str(target), *pairs)
    assert result.returncode == 0, result.stderr
    assert parse_env(target.read_text()) == VALUES
    assert not list(tmp_path.glob("*.tmp.*"))


def test_python_written_file_reads_the_same_in_bash(tmp_path: Path) -> None:
    target = tmp_path / "build.env"
    # Hand-written style: quoted values, a comment, a repeated key (the last wins), a lower-case name.
    target.write_text('# build\nMODULE_TYPES="open proprietary"\nARCH=arm64\nARCH=amd64\nlower=x\nNOEQUALS\n')
    expected = parse_env(target.read_text())
    assert expected == {"MODULE_TYPES": "open proprietary", "ARCH": "amd64"}
    for key, value in expected.items():
        result = _bash('kv_get "$1" "$2"', str(target), key)
        assert result.returncode == 0 and result.stdout == value + "\n"
    assert _bash('kv_get "$1" lower', str(target)).returncode == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lower", "x"),
        ("1ST", "x"),
        ("A-B", "x"),
        ("KEY", "two\nlines"),
        ("KEY", "cr\r"),
        ("KEY", '"wrapped"'),
    ],
)
def test_writer_refuses_what_would_not_read_back(tmp_path: Path, key: str, value: str) -> None:
    target = tmp_path / "data.env"
    result = _bash('kv_write "$1" "$2" "$3"', str(target), key, value)
    assert result.returncode == 2 and "refusing" in result.stderr
    assert not target.exists() and not list(tmp_path.iterdir())
