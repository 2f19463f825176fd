"""Slow-tier fixtures for real image builds; the helpers behind them are in tests/image/images.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.image.images import make_arm64_standin_base, make_standin_base, running_registry


@pytest.fixture(scope="session")
def standin_base() -> str:
    """A podman image standing in for kmodbuild and the Garden Linux base: Debian 12 with the toolchain
    and the 6.1 headers of PINS KERNEL_61 in the default and cloud flavours. Returns its reference."""
    return make_standin_base()


@pytest.fixture(scope="session")
def arm64_standin_base() -> str:
    """An arm64 podman image standing in for an arm64 kmodbuild and runtime base: Debian 12's arm64
    packages (the 6.1 headers of PINS KERNEL_61 in the default and cloud flavours, the runtime root's
    packages) unpacked with the dpkg database an installation leaves, nothing of it ever run. Returns its
    reference."""
    return make_arm64_standin_base()


@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    """A real Distribution registry on a free loopback port with throw-away storage: `127.0.0.1:PORT`."""
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is missing: run .ci/system-deps.sh")
    with running_registry() as address:
        yield address
