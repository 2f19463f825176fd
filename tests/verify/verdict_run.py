"""Helpers shared by the load-check tests: run the verdict program and parse what it prints."""

from __future__ import annotations

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
    """KEY=VALUE lines (values raw to the end of the line) as a dict."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
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
