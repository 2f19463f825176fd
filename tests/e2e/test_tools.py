"""The built tools are the pinned versions, and report them (the provider refuses a cluster at v0.0.0)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.e2e.controlplane import ControlPlane
from tests.e2e.pulumi_cli import ROOT, base_env, provider_version
from tests.pins import tool_pin


def test_pulumi_cli_is_the_pinned_release(tools_bin: Path, pulumi_home: Path) -> None:
    out = subprocess.run(
        ["pulumi", "version"],
        env=base_env(tools_bin, pulumi_home),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == tool_pin("pulumi", "github.com/pulumi/pulumi/pkg/v3")


def test_installed_provider_is_the_version_the_python_package_asks_for(
    tools_bin: Path, pulumi_home: Path
) -> None:
    out = subprocess.run(
        ["pulumi", "plugin", "ls", "--json"],
        env=base_env(tools_bin, pulumi_home),
        capture_output=True,
        text=True,
        check=True,
    )
    plugins = {(p["name"], p["kind"]): p["version"] for p in json.loads(out.stdout)}
    assert plugins[("kubernetes", "resource")] == provider_version()
    pinned = re.search(r"^pulumi-kubernetes==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned and pinned.group(1) == provider_version()


def test_api_server_reports_its_real_version(control_plane: ControlPlane) -> None:
    version = control_plane.api.get("/version")
    pinned = tool_pin("kubernetes", "k8s.io/kubernetes")
    assert version["gitVersion"] == pinned
    assert version["minor"] == pinned.split(".")[1]
