"""How these machines run a throw-away container: podman with runc and explicit ulimits, because the
default runtime (crun) fails on their hybrid cgroups."""

from __future__ import annotations

PODMAN_RUN: tuple[str, ...] = (
    "podman",
    "run",
    "--rm",
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
)
