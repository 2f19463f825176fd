"""The header and output of every benchmark table: what ran, when, on which machine, under what load."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path


def machine_line() -> str:
    """`# <date> on <host> (<cores> cores, <arch>), load average at the end: <1 5 15>`."""
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"# {datetime.date.today().isoformat()} on {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.machine()}), load average at the end: {load}"
    )


def emit(lines: list[str], output: Path | None) -> None:
    """Prints the table and, with an output path, writes it there too."""
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if output:
        output.write_text(text)
