"""Render mode through the real CLI: the dev stack typed as README.md tells users, previewed and applied by
the real engine and Kubernetes provider, writes the same objects as the offline render."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.pulumi_cli import ROOT, Project
from tests.e2e.readme import readme_block


def _documents(directory: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in sorted(directory.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                meta = doc["metadata"]
                key = (doc["kind"], meta.get("namespace", ""), meta["name"])
                assert key not in found, f"{key} written twice (second time in {path})"
                found[key] = doc
    return found


@pytest.fixture(scope="module")
def dev_project(tmp_path_factory: pytest.TempPathFactory, tools_bin: Path, pulumi_home: Path) -> Project:
    """A copy of the program with no stack file: the README's commands create, configure, preview and
    apply the stack (each must succeed)."""
    project = Project.copy(tmp_path_factory.mktemp("dev-cli"), tools_bin, pulumi_home)
    for line in readme_block("dev-stack"):
        project.run_line(line)
    return project


def test_readme_dev_commands_preview_and_apply(dev_project: Project) -> None:
    lines = readme_block("dev-stack")
    assert any(line.startswith("pulumi preview --diff") for line in lines)
    assert any(line.startswith("pulumi up") for line in lines)
    preview = next(r for line, r in dev_project.results.items() if line.startswith("pulumi preview"))
    # The first preview creates everything: the two installers, the device plugin, the modprobe ConfigMap.
    for name in ("installer-gl1877-cloud-daemonset", "installer-gl2150-metal-daemonset", "module-parameters"):
        assert name in preview.stdout, preview.stdout
    assert "Traceback" not in preview.stdout + preview.stderr


def test_provider_manifests_equal_the_offline_render(dev_project: Project, tmp_path: Path) -> None:
    offline = tmp_path / "offline"
    subprocess.run(
        [sys.executable, "-m", "components.render", "dev", "--out", str(offline)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    written = _documents(dev_project.workdir / "out" / "dev-manifests")
    expected = _documents(offline)
    assert set(written) == set(expected)
    for key, doc in expected.items():
        assert written[key] == doc, f"{key} differs between the provider's render and the offline render"


def test_second_preview_expects_no_changes(dev_project: Project) -> None:
    result = dev_project.run("preview", "--expect-no-changes", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
