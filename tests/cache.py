"""Where slow-tier results (compiled modules, the stand-in base image) are kept between runs, and the lock
that keeps concurrent pytest processes (and the benchmarks) from building the same thing twice."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """Where slow-tier results live between runs (override with NVIDIA_INSTALLER_TEST_CACHE)."""
    return Path(os.environ.get("NVIDIA_INSTALLER_TEST_CACHE", "/var/tmp/nvidia-installer-test-cache"))


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`, so concurrent pytest processes never build the same thing twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
