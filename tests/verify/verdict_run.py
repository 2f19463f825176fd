"""Helpers shared by the load-check tests: run the verdict program and parse what it prints."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERIFY_DIR = ROOT / "image" / "verify"
VERDICT = VERIFY_DIR / "verdict.sh"
LOAD_CHECK = VERIFY_DIR / "load-check.sh"
LOGS = Path(__file__).with_name("logs")


@dataclass(frozen=True)
class Verdict:
    """What verdict.sh printed and returned for one serial log."""

    returncode: int
    values: dict[str, str]
    stderr: str

    @property
    def category(self) -> str:
        """The detail's leading word (`wrong-abi`, `loads`, ...)."""
        return self.values.get("LOAD_CHECK_DETAIL", "").partition(":")[0]


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE data as image/lib/keyvalue.sh reads it (tests/test_keyvalue.py holds the two together):
    KEY-shaped names only, values raw to the end of the line, one pair of surrounding double quotes
    removed, the last of a repeated key wins."""
    values: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            values[key] = value
    return values


def run_verdict(
    log: Path, exports: Path, release: str, vermagic: str | None = None, qemu_exit: int | None = None
) -> Verdict:
    """Runs image/verify/verdict.sh on one serial log."""
    args = [str(VERDICT), "--log", str(log), "--exports", str(exports), "--release", release]
    if vermagic is not None:
        args += ["--vermagic", vermagic]
    if qemu_exit is not None:
        args += ["--qemu-exit", str(qemu_exit)]
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    return Verdict(result.returncode, parse_env(result.stdout), result.stderr)


LoadCheckRun = tuple[subprocess.CompletedProcess[str], dict[str, str], str]


def run_load_check(
    modules: Path,
    release: str,
    out: Path,
    arch: str,
    kernel_cache: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> LoadCheckRun:
    """`load-check.sh run` for real (QEMU boot): its result, the verdict file's values, the serial log."""
    verdict_file = out / "verdict.env"
    serial = out / "serial.log"
    argv = [str(LOAD_CHECK), "run", str(modules), release, str(verdict_file), "--arch", arch]
    argv += ["--kernel-cache", str(kernel_cache), "--serial-log", str(serial), *extra]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=900)
    values = parse_env(verdict_file.read_text()) if verdict_file.exists() else {}
    log = serial.read_text(errors="replace") if serial.exists() else ""
    return result, values, log
