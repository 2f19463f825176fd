"""A bad stack setting through the real CLI: the preview fails before any resource is registered, with the
one-line message naming the key path, the bad value and what is expected, and no Python traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.pulumi_cli import Project
from tests.e2e.readme import readme_block


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tools_bin: Path, pulumi_home: Path) -> Project:
    """The README's dev stack, configured but not previewed."""
    project = Project.copy(tmp_path_factory.mktemp("bad-config"), tools_bin, pulumi_home)
    for line in readme_block("dev-stack"):
        if line.startswith("pulumi config set") or line.startswith("pulumi stack init"):
            project.run_line(line)
    return project


def _restore(project: Project, path: str) -> None:
    """Puts one setting back as the README sets it (or removes it when the README does not set it)."""
    readme = [line for line in readme_block("dev-stack") if f"--path '{path}' " in line]
    top = path.partition(".")[0].partition("[")[0]
    if readme:
        project.run_line(readme[0])
    elif not any(f"--path '{top}" in line or f"--path {top}" in line for line in readme_block("dev-stack")):
        project.run("config", "rm", top)  # `rm --path` of its only key would leave an empty object behind
    else:
        project.run("config", "rm", "--path", path)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # `config set --path` stores an integer-looking value as a number.
        (
            "targets[1].glVersion",
            "1877",
            "targets[1].glVersion: 1877 is invalid (input should be a valid string; quote it in YAML or "
            "set it with `pulumi config set --type string`",
        ),
        (
            "targets[1].glVersion",
            "1877.17.1",
            "targets[1].glVersion: '1877.17.1' is invalid; expected a Garden Linux version",
        ),
        (
            "targets[0].arch",
            "x86_64",
            "targets[0].arch: 'x86_64' is not allowed; expected one of 'amd64' or 'arm64'",
        ),
        ("targets[0].flavor", "cloud", "targets[0].flavor: unknown key; expected one of arch, driverVersion"),
        (
            "rollout.maxUnavailable",
            "0",
            "rollout.maxUnavailable: 0 is invalid; expected an integer of 1 or more (nodes), or a percentage",
        ),
        (
            "rollout.timeoutMinutes",
            "30m",
            "rollout.timeoutMinutes: '30m' is invalid (input should be a valid integer); expected an integer "
            "of 1 or more",
        ),
        (
            "rollout.drain.mode",
            "drain",
            "rollout.drain.mode: 'drain' is not allowed; expected one of 'none' or 'evict'",
        ),
    ],
    ids=[
        "gl-version-number",
        "gl-version-form",
        "arch",
        "misspelled-key",
        "rollout-width",
        "rollout-timeout",
        "drain-mode",
    ],
)
def test_bad_setting_fails_preview_with_one_line(
    project: Project, path: str, value: str, message: str
) -> None:
    before = project.run("config", "--json").stdout
    project.run("config", "set", "--path", path, value)
    try:
        result = project.run("preview", "--diff", check=False)
    finally:
        _restore(project, path)
    assert project.run("config", "--json").stdout == before
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output
    assert "Traceback" not in output
    # One message: no "unhandled error" line from the engine after ours.
    assert "unhandled error" not in output
    # The error came before any resource was registered: only the stack itself is in the plan.
    assert "+ 1 to create" in output
    assert "pulumi:providers:kubernetes" not in output
    assert "DaemonSet" not in output
