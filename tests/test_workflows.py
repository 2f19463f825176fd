"""The delivery workflows and scripts/stack.sh agree: deploy and drift run the script (which the e2e tier
runs against a real control plane), the pull-request preview asks pulumi/actions for the same command,
every job installs the CLI release the e2e tier tests, and the stack matrix is what the script lists."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.pins import tool_pin

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
SCRIPT = ROOT / "scripts" / "stack.sh"


def _workflow(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return document


def _steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = workflow["jobs"][job]["steps"]
    return steps


def _script_function(name: str) -> str:
    match = re.search(rf"^_{name}\(\) \{{\n(.*?)\n\}}", SCRIPT.read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"scripts/stack.sh has no _{name}"
    return match.group(1)


def test_stack_list_leaves_out_the_local_dev_stack() -> None:
    listed = json.loads(
        subprocess.run([str(SCRIPT), "stacks"], capture_output=True, text=True, check=True).stdout
    )
    on_disk = {p.name[len("Pulumi.") : -len(".yaml")] for p in (ROOT / "stacks").glob("Pulumi.*.yaml")}
    assert set(listed) == on_disk - {"dev"}
    assert "prod" in listed


def test_deploy_and_drift_run_the_script() -> None:
    up = [s["run"] for s in _steps(_workflow("deploy.yml"), "up") if "run" in s]
    assert any(r.startswith('./scripts/stack.sh up "${{ matrix.stack }}"') for r in up), up
    drift = [s["run"] for s in _steps(_workflow("drift.yml"), "drift") if "run" in s]
    assert any('./scripts/stack.sh drift "${{ matrix.stack }}"' in r for r in drift), drift


def test_pull_request_preview_is_the_scripts_preview() -> None:
    (action,) = [
        s for s in _steps(_workflow("pull-request.yml"), "preview") if "pulumi/actions" in s.get("uses", "")
    ]
    inputs = action["with"]
    preview = _script_function("preview")
    assert inputs["command"] == "preview" and "pulumi preview" in preview
    assert inputs["diff"] is True and "--diff" in preview
    assert inputs["policyPacks"] == "policy" and '--policy-pack "${POLICY_PACK}"' in preview
    assert 'readonly POLICY_PACK="${ROOT}/policy"' in SCRIPT.read_text()
    assert inputs["comment-on-pr"] is True
    assert _workflow("pull-request.yml")["jobs"]["preview"]["permissions"]["pull-requests"] == "write"


def test_every_job_installs_the_cli_release_the_e2e_tier_tests() -> None:
    versions = {
        step["with"]["pulumi-version"]
        for name in ("pull-request.yml", "deploy.yml", "drift.yml")
        for job in _workflow(name)["jobs"].values()
        for step in job["steps"]
        if "pulumi/actions" in step.get("uses", "")
    }
    assert versions == {tool_pin("pulumi", "github.com/pulumi/pulumi/pkg/v3").removeprefix("v")}


def test_deploy_is_one_stack_at_a_time_behind_an_environment() -> None:
    job = _workflow("deploy.yml")["jobs"]["up"]
    assert job["strategy"]["max-parallel"] == 1
    assert job["environment"] == "${{ matrix.stack }}"
    # YAML 1.1 reads the key `on` as True.
    triggers: dict[Any, Any] = _workflow("deploy.yml")
    assert triggers[True]["push"]["branches"] == ["main"]


def test_no_credentials_in_the_workflows() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for line in path.read_text().splitlines():
            if re.search(r"(TOKEN|PASSPHRASE|PASSWORD)\s*:", line) and "${{" not in line:
                raise AssertionError(
                    f"{path.name}: a credential that is not a secret reference: {line.strip()}"
                )
