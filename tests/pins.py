"""The Debian package pins of the slow tier, read from tests/pins.env (the one place they live)."""

from __future__ import annotations

import re
from pathlib import Path

PINS_FILE = Path(__file__).with_name("pins.env")


def load_pins() -> dict[str, str]:
    """Returns the KEY=VALUE pairs of pins.env, comments and blank lines skipped."""
    pins: dict[str, str] = {}
    for raw in PINS_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        pins[key] = value
    return pins


PINS = load_pins()


def tool_pin(module_dir: str, module: str) -> str:
    """The version tools/<module_dir>/go.mod requires of `module` (the e2e tools' pins)."""
    go_mod = PINS_FILE.parents[1] / "tools" / module_dir / "go.mod"
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", go_mod.read_text(), re.MULTILINE)
    if match is None:
        raise LookupError(f"tools/{module_dir}/go.mod does not require {module}")
    return match.group(1)
