"""checkov over what the project ships: the offline render of both example stacks (components/render.py)
and image/Dockerfile. Every finding is fixed, or accepted with its reason in tests/checkov-suppressions.yaml;
a new finding fails, and so does an entry that no longer matches a finding.

checkov (pinned in requirements-checkov.txt) lives in .venv-checkov (scripts/setup-venv.sh, which
scripts/test.sh runs): its dependency pins conflict with the project's venv. It runs with
`--skip-download` and `CKV_SKIP_PACKAGE_UPDATE_CHECK` under tests/checkov_offline.py, which cuts the
network off at the socket layer and records any attempt: the test fails on one. One checkov run (about
6 s) covers the project's files and a deliberately bad manifest and Dockerfile, which must be reported.
"""

from __future__ import annotations

import copy
import fnmatch
import io
import json
import os
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import render

ROOT = Path(__file__).resolve().parents[1]
CHECKOV_PYTHON = ROOT / ".venv-checkov/bin/python"
GUARD = ROOT / "tests/checkov_offline.py"
SUPPRESSIONS = ROOT / "tests/checkov-suppressions.yaml"
DOCKERFILE = "image/Dockerfile"
STACKS = ("dev", "prod")
BAD_DAEMONSET = "nvidia-installer-regressed"
BAD_DOCKERFILE = "FROM debian:latest\nADD https://example.invalid/tool /usr/bin/tool\n"


@dataclass(frozen=True)
class Finding:
    """One failed check on one resource."""

    check: str
    resource: str
    path: Path


@dataclass(frozen=True)
class Suppression:
    """One accepted check, on the resources matching its globs, with its reason."""

    check: str
    resources: tuple[str, ...]
    reason: str

    def covers(self, finding: Finding) -> bool:
        """Whether this entry accepts the finding."""
        return finding.check == self.check and any(
            fnmatch.fnmatchcase(finding.resource, pattern) for pattern in self.resources
        )


@dataclass(frozen=True)
class Scan:
    """One checkov run: its findings, per-framework summaries and the network attempts it made."""

    findings: list[Finding]
    summaries: dict[str, dict[str, Any]]
    network_attempts: list[str]
    manifests: list[Path]
    bad_files: tuple[Path, Path]


def load_suppressions() -> list[Suppression]:
    """tests/checkov-suppressions.yaml."""
    entries = yaml.safe_load(SUPPRESSIONS.read_text())
    return [Suppression(e["check"], tuple(e["resources"]), str(e.get("reason", ""))) for e in entries]


def _render(stack: str, out: Path) -> list[Path]:
    """The stack's objects as scripts/render.sh writes them."""
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert render.main([stack, "--out", str(out)]) == 0
    return sorted(out.glob("*.yaml"))


def _bad_files(manifests: list[Path], where: Path) -> tuple[Path, Path]:
    """An installer DaemonSet that regressed (host network) and a careless Dockerfile."""
    source = next(p for p in manifests if p.name.startswith("daemonset-nvidia-installer-"))
    daemonset: dict[str, Any] = copy.deepcopy(yaml.safe_load(source.read_text()))
    daemonset["metadata"]["name"] = BAD_DAEMONSET
    daemonset["spec"]["template"]["spec"]["hostNetwork"] = True
    where.mkdir()
    manifest = where / f"daemonset-{BAD_DAEMONSET}.yaml"
    manifest.write_text(yaml.safe_dump(daemonset))
    dockerfile = where / "Dockerfile"
    dockerfile.write_text(BAD_DOCKERFILE)
    return manifest, dockerfile


def _findings(report: dict[str, Any]) -> list[Finding]:
    return [
        Finding(f["check_id"], f["resource"], Path(f["file_abs_path"]).resolve())
        for f in report["results"]["failed_checks"]
    ]


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Scan:
    if not CHECKOV_PYTHON.is_file():
        pytest.fail("no .venv-checkov: run scripts/setup-venv.sh requirements-checkov.txt .venv-checkov")
    work = tmp_path_factory.mktemp("checkov")
    manifests = [m for stack in STACKS for m in _render(stack, work / stack)]
    bad = _bad_files(manifests, work / "bad")
    attempts = work / "network-attempts.log"
    argv = [
        str(CHECKOV_PYTHON), str(GUARD), "--skip-download", "--framework", "kubernetes", "dockerfile",
        "--output", "json", "--quiet", "--file", DOCKERFILE, *map(str, manifests), *map(str, bad),
    ]  # fmt: skip
    # --skip-download keeps checkov from Prisma Cloud; its banner still asks PyPI for a newer checkov (the
    # guard caught it) unless CKV_SKIP_PACKAGE_UPDATE_CHECK is set. A fresh HOME: no cached answer hides it.
    env = {
        **os.environ, "NET_ATTEMPTS_LOG": str(attempts), "HOME": str(work), "LOG_LEVEL": "WARNING",
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
    }  # fmt: skip
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    # Exit status 1: findings (there are always some, from the bad files); anything else is a crash.
    assert result.returncode == 1, result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return Scan(
        findings=[f for report in reports for f in _findings(report)],
        summaries={r["check_type"]: r["summary"] for r in reports},
        network_attempts=attempts.read_text().splitlines() if attempts.exists() else [],
        manifests=manifests,
        bad_files=bad,
    )


def test_the_guard_records_and_refuses_network_access(tmp_path: Path) -> None:
    # Without this, an empty attempts log could mean a guard that never ran.
    log = tmp_path / "attempts.log"
    env = {**os.environ, "NET_ATTEMPTS_LOG": str(log)}
    subprocess.run([str(CHECKOV_PYTHON), str(GUARD), "--self-test"], env=env, check=True, timeout=60)
    assert log.read_text().splitlines() == ["getaddrinfo 'pypi.org'", "connect ('127.0.0.1', 9)"]


def test_checkov_stays_offline_and_reads_every_file(scan: Scan) -> None:
    assert scan.network_attempts == []
    assert set(scan.summaries) == {"kubernetes", "dockerfile"}
    for summary in scan.summaries.values():
        assert summary["parsing_errors"] == 0
        assert summary["checkov_version"] == "3.3.30"  # requirements-checkov.txt
    # Every rendered object and both Dockerfiles were scanned, not silently skipped.
    objects = sum(len(list(yaml.safe_load_all(p.read_text()))) for p in scan.manifests)
    assert scan.summaries["kubernetes"]["resource_count"] >= objects + 1
    assert scan.summaries["dockerfile"]["resource_count"] == 2


def test_every_finding_on_the_project_is_suppressed_with_a_reason(scan: Scan) -> None:
    suppressions = load_suppressions()
    assert all(len(s.reason) > 20 or s.reason.startswith("As CKV_") for s in suppressions)
    checks = [s.check for s in suppressions]
    assert len(checks) == len(set(checks)), "one entry per check"
    ours = [f for f in scan.findings if f.path not in scan.bad_files]
    new = sorted({(f.check, f.resource) for f in ours if not any(s.covers(f) for s in suppressions)})
    assert new == [], "new checkov findings: fix them or add them, with a reason, to " + SUPPRESSIONS.name
    stale = [s.check for s in suppressions if not any(s.covers(f) for f in ours)]
    assert stale == [], "suppressions that match no finding any more: remove them"


def test_checkov_reports_a_regressed_manifest_and_a_careless_dockerfile(scan: Scan) -> None:
    suppressions = load_suppressions()
    manifest, dockerfile = scan.bad_files
    new = {
        (f.check, f.path)
        for f in scan.findings
        if f.path in scan.bad_files and not any(s.covers(f) for s in suppressions)
    }
    # Host network: no suppression covers it, though the name matches the installers' globs.
    assert ("CKV_K8S_19", manifest) in new
    # The suppression of CKV_DOCKER_7 holds for image/Dockerfile only; ADD of a URL is never accepted.
    assert {("CKV_DOCKER_7", dockerfile), ("CKV_DOCKER_4", dockerfile)} <= new
