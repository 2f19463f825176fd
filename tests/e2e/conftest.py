"""Session fixtures of the end-to-end tier: the built tools, a PULUMI_HOME with the Kubernetes provider,
one control plane with a fake kubelet, shared by every e2e test and stopped at the end."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.controlplane import ETCD, ControlPlane
from tests.e2e.kubelet import FakeKubelet
from tests.e2e.pulumi_cli import ROOT, install_provider
from tests.node.fakenode import FakeNode, kill_session


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e carries the e2e marker (select or deselect the tier with -m)."""
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def tools_bin() -> Path:
    """The directory of the tools for the current pins. tools/build.sh builds what is missing, or waits
    for the build scripts/test.sh started in the background (it holds the cache's lock)."""
    result = subprocess.run([str(ROOT / "tools" / "build.sh")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"tools/build.sh failed:\n{result.stderr[-3000:]}", pytrace=False)
    return Path(result.stdout.strip())


@pytest.fixture(scope="session")
def pulumi_home(tools_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PULUMI_HOME of the session with the built Kubernetes provider installed."""
    home = tmp_path_factory.mktemp("pulumi-home")
    install_provider(tools_bin, home)
    return home


@pytest.fixture(scope="session")
def control_plane(tools_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running control plane on loopback for the whole session."""
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"), tools_bin, ETCD).start()
    try:
        yield plane
    finally:
        plane.stop()
        running = [name for name, process in plane.processes.items() if process.poll() is None]
        assert not running, f"still running after stop: {running}"


@pytest.fixture(scope="session")
def kubelet(control_plane: ControlPlane) -> Iterator[FakeKubelet]:
    """The fake kubelet of the session's simulated nodes."""
    fake = FakeKubelet(control_plane.api).start()
    try:
        yield fake
    finally:
        fake.stop()
        assert not fake.errors, f"fake kubelet errors: {fake.errors[:5]}"


@pytest.fixture
def installer(tmp_path: Path) -> Iterator[Callable[[FakeNode], subprocess.Popen[str]]]:
    """Starts the real installer on a fake host (its log: tmp_path/installer.log); stops what it started
    at the end of the test."""
    started: list[subprocess.Popen[str]] = []

    def start(node: FakeNode) -> subprocess.Popen[str]:
        log = (tmp_path / "installer.log").open("w")
        proc = subprocess.Popen(node.installer_argv(), env=node.env(), stderr=log, text=True,
                                start_new_session=True)  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        kill_session(proc.pid)
