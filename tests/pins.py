"""The Debian package pins of the slow tier, read from tests/pins.env (the one place they live)."""

from __future__ import annotations

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
