"""The command blocks of README.md that the e2e tier runs as they are written.

A block is tagged by an HTML comment on the line before its fence: `<!-- e2e: NAME -->`. What a user
copies from the README is then exactly what the tests ran.
"""

from __future__ import annotations

import re

from tests.e2e.pulumi_cli import ROOT

_BLOCK_RE = re.compile(r"<!-- e2e: (?P<name>[\w-]+) -->\n```sh\n(?P<body>.*?)\n```", re.DOTALL)


def readme_block(name: str) -> list[str]:
    """The command lines of the tagged block (comments and blank lines dropped)."""
    text = (ROOT / "README.md").read_text()
    blocks = {m["name"]: m["body"] for m in _BLOCK_RE.finditer(text)}
    if name not in blocks:
        raise LookupError(f"README.md has no block tagged <!-- e2e: {name} --> (has: {sorted(blocks)})")
    lines = []
    for raw in blocks[name].splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines
