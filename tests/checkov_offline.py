"""Runs checkov (under .venv-checkov's Python, not the project's) with the network cut off at the socket
layer: every DNS lookup and every non-unix connect is written to $NET_ATTEMPTS_LOG and fails. checkov's
`--skip-download` should make none; tests/test_checkov.py asserts the log stays empty.

`checkov_offline.py --self-test` only tries one connection (no checkov), to show the guard records it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import sys
from typing import Any

_LOG = os.environ["NET_ATTEMPTS_LOG"]
_connect = socket.socket.connect


def _record(what: str) -> None:
    with open(_LOG, "a", encoding="utf-8") as log:
        log.write(what + "\n")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if self.family != socket.AF_UNIX:
        _record(f"connect {address!r}")
        raise OSError("network access is cut off in this test")
    _connect(self, address)


def _guarded_getaddrinfo(host: Any, *_args: Any, **_kwargs: Any) -> Any:
    _record(f"getaddrinfo {host!r}")
    raise socket.gaierror("network access is cut off in this test")


def _probe(address: tuple[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect(address)


def main() -> int:
    """Installs the guard, then runs checkov with the given arguments (or the self test)."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = _guarded_getaddrinfo
    if sys.argv[1:] == ["--self-test"]:
        # A name lookup, then a connect by address (loopback: nothing leaves the machine even unguarded).
        for attempt in (lambda: socket.getaddrinfo("pypi.org", 443), lambda: _probe(("127.0.0.1", 9))):
            with contextlib.suppress(OSError):
                attempt()
        return 0
    checkov = importlib.import_module("checkov.main")
    result: int = checkov.Checkov().run()
    return result


if __name__ == "__main__":
    sys.exit(main())
