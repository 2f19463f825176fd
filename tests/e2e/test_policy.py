"""The policy pack run for real by the real CLI (`pulumi preview --policy-pack policy`): the project's dev
stack passes it, and a program that breaks one rule is stopped at preview with that rule's name.

(The prod stack builds images, which needs the Docker provider: not previewable here, docs/e2e.md.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.rules import POLICIES
from tests.e2e.pulumi_cli import ROOT, Project
from tests.e2e.readme import readme_block

PACK = ROOT / "policy"
VIOLATIONS = Path(__file__).with_name("policy_violations")


@pytest.fixture(scope="module")
def violations(tmp_path_factory: pytest.TempPathFactory, tools_bin: Path, pulumi_home: Path) -> Project:
    """The violations program with a stack of its own."""
    workdir = tmp_path_factory.mktemp("policy") / "violations"
    project = Project.copy(workdir, tools_bin, pulumi_home, source=VIOLATIONS)
    project.run("stack", "init", "violations")
    return project


def test_dev_stack_passes_the_pack(tmp_path: Path, tools_bin: Path, pulumi_home: Path) -> None:
    project = Project.copy(tmp_path / "dev", tools_bin, pulumi_home)
    for line in readme_block("dev-stack"):
        if line.startswith(("pulumi stack init", "pulumi config set")):
            project.run_line(line)
    result = project.run("preview", "--policy-pack", str(PACK), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "✅ nvidia-installer@" in output, output


def test_a_compliant_object_passes(violations: Project) -> None:
    violations.run("config", "set", "rule", "none")
    result = violations.run("preview", "--policy-pack", str(PACK), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✅ nvidia-installer@" in result.stdout


@pytest.mark.parametrize("rule", [p.name for p in POLICIES])
def test_each_rule_stops_the_preview_by_name(violations: Project, rule: str) -> None:
    violations.run("config", "set", "rule", rule)
    result = violations.run("preview", "--policy-pack", str(PACK), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "❌ nvidia-installer@" in output, output
    assert f"[mandatory]  {rule}  (kubernetes:apps/v1:DaemonSet: agent)" in output, output
    others = [p.name for p in POLICIES if p.name != rule]
    assert not [name for name in others if name in output], output
