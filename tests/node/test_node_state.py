"""The installer's report of its node's state (labels, events: docs/node.md) where no API server answers.

What it reports through a real API server, with a real bound token and the admission policy, is tested
in the e2e tier (tests/e2e/test_node_state.py). Here: reporting is off cleanly without a token, an API
server that cannot be reached costs one warning and never the install, and label values are sanitised.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import specs
from tests.node.fakenode import INSTALLER, READY_FILE, FakeNode, kill_session, wait_until
from tests.ports import free_port

REPORT_WARNING = "warning: could not report the node state (ready) to the API server"


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path)


def give_api_access(node: FakeNode, port: int) -> None:
    """A mounted service account (token, CA, namespace) and the in-cluster address, as the kubelet gives."""
    account = node.root / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("not-a-real-token")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=unreachable-ca", "-days", "1", "-keyout", str(node.root / "ca.key"),
         "-out", str(account / "ca.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    (account / "namespace").write_text("kube-system")
    node.env_extra.update(
        SERVICE_ACCOUNT_DIR=str(account),
        KUBERNETES_SERVICE_HOST="127.0.0.1",
        KUBERNETES_SERVICE_PORT=str(port),
    )


def run_until(node: FakeNode, text: str) -> tuple[str, float]:
    """Runs `install` until its log shows `text` (then SIGTERM); returns the log and the seconds from the
    start until the readiness file appeared."""
    log = node.root / "installer.log"
    ready = node.host / READY_FILE
    with log.open("w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(node.installer_argv(), env=node.env(), stderr=err, start_new_session=True)
        try:
            wait_until(ready.exists, 15)
            ready_seconds = time.monotonic() - started
            wait_until(lambda: text in log.read_text(), 15)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            kill_session(proc.pid)
    return log.read_text(), ready_seconds


def test_without_a_token_reporting_is_off_in_one_line(node: FakeNode) -> None:
    run = node.run()
    assert run.rc == 0 and run.ready, run.stderr
    off = [line for line in run.stderr.splitlines() if "node state reporting off" in line]
    assert len(off) == 1, run.stderr
    assert "no service account token" in off[0]
    assert "warning" not in run.stderr


def test_token_without_the_service_address_is_off_too(node: FakeNode) -> None:
    give_api_access(node, free_port())
    del node.env_extra["KUBERNETES_SERVICE_HOST"]
    run = node.run()
    assert run.rc == 0 and run.ready
    assert run.stderr.count("node state reporting off") == 1


def test_unreachable_api_server_is_one_warning_and_the_install_gets_ready(node: FakeNode) -> None:
    give_api_access(node, free_port())  # nothing listens there: connection refused
    log, ready_seconds = run_until(node, REPORT_WARNING)
    warnings = [line for line in log.splitlines() if "warning:" in line and "API server" in line]
    assert len(warnings) == 1, log
    assert "127.0.0.1" in warnings[0]
    # Ready first, reported after: the readiness file never waits for the API server.
    assert log.index("nvidia-installer: ready:") < log.index(REPORT_WARNING)
    assert ready_seconds < 10
    assert node.ready_values()["NODE_NAME"] == "gpu-node-1"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung API server or a black-holed route)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_hung_api_server_is_bounded_by_the_report_timeout(node: FakeNode, silent_server: int) -> None:
    give_api_access(node, silent_server)
    node.env_extra["REPORT_TIMEOUT"] = "1"
    started = time.monotonic()
    log, ready_seconds = run_until(node, REPORT_WARNING)
    assert time.monotonic() - started < ready_seconds + 6  # one bounded request, not a hang
    line = next(line for line in log.splitlines() if REPORT_WARNING in line)
    assert "timed out" in line.lower() or "timeout" in line.lower(), line


def test_a_failed_install_reports_without_changing_its_exit_code(node: FakeNode) -> None:
    give_api_access(node, free_port())
    node.env_extra["FAKE_KERNEL"] = "6.12.47-cloud-amd64"
    run = node.run()
    assert run.rc == 4
    assert "could not report the node state (kernel-mismatch)" in run.stderr
    assert run.first_error.startswith("nvidia-installer: error: node gpu-node-1 runs kernel 6.12.47")


def _label_value(value: str) -> str:
    """The installer's own _label_value, cut out of the script and run by bash."""
    script = INSTALLER.read_text()
    match = re.search(r"^_label_value\(\) \{\n.*?^\}\n", script, re.M | re.S)
    assert match, "_label_value not found in the installer"
    result = subprocess.run(
        ["bash", "-c", f'set -euo pipefail\n{match.group(0)}_label_value "$1"', "_", value],
        capture_output=True, text=True, check=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return result.stdout


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("6.12.40-cloud-amd64", "6.12.40-cloud-amd64"),
        ("580.65.06", "580.65.06"),
        ("6.6.0+rt1", "6.6.0_rt1"),  # '+' is not allowed in a label value
        ("6.1.0-28+deb12~bpo", "6.1.0-28_deb12_bpo"),
        ("-6.12-", "6.12"),  # must start and end alphanumeric
        ("+++", ""),
        ("", ""),
        ("ä6.12", "6.12"),  # non-ASCII bytes become '_', then the leading ones go
        ("x" * 70 + "-y", "x" * 63),  # at most 63 characters
        ("a" * 62 + "-b", "a" * 62),  # cut to 63, then no trailing '-'
    ],
)
def test_label_values_are_sanitised(raw: str, label: str) -> None:
    value = _label_value(raw)
    assert value == label
    assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value) and len(value) <= 63


def test_the_installer_labels_under_the_projects_prefix() -> None:
    # The admission policy (components/specs.py) lets the installer change only labels under this prefix.
    assert f"readonly NODE_LABEL_PREFIX={specs.LABEL_PREFIX}\n" in INSTALLER.read_text()
