"""The real Pulumi CLI driven the way a user drives it, on a temporary copy of the project.

Each `Project` is a copy of the program (Pulumi.yaml, __main__.py, components/, image/, stacks/) in a
temporary directory whose `.venv` links to the repository's, a `file://` backend of its own, and a
PULUMI_HOME shared by the session where the Kubernetes provider built by tools/build.sh is installed.
Nothing reaches a network: plugin acquisition and update checks are off.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROGRAM_FILES = ("Pulumi.yaml", "__main__.py", "requirements.txt")
PROGRAM_DIRS = ("components", "image", "stacks")
PASSPHRASE = "nvidia-installer-e2e-passphrase"
COMMAND_TIMEOUT = 600


def provider_version() -> str:
    """The Kubernetes provider version the Python package asks for (its pulumi-plugin.json)."""
    import pulumi_kubernetes  # noqa: PLC0415  (only the e2e tier needs it at this point)

    plugin = Path(pulumi_kubernetes.__file__).parent / "pulumi-plugin.json"
    version: str = json.loads(plugin.read_text())["version"]
    return version


def base_env(tools_bin: Path, pulumi_home: Path) -> dict[str, str]:
    """The environment of every CLI call: the built tools first on PATH, no network, no prompts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "KUBECONFIG"))}
    env.update(
        PATH=f"{tools_bin}:{ROOT / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        PULUMI_HOME=str(pulumi_home),
        PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        PULUMI_SKIP_CONFIRMATIONS="true",
        NO_COLOR="1",
    )
    return env


def install_provider(tools_bin: Path, pulumi_home: Path) -> None:
    """Installs the built provider into PULUMI_HOME at exactly the version the Python SDK names."""
    binary = (tools_bin / "plugins" / "pulumi-resource-kubernetes").resolve()
    subprocess.run(
        ["pulumi", "plugin", "install", "resource", "kubernetes", provider_version(), "--file", str(binary)],
        env=base_env(tools_bin, pulumi_home),
        check=True,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


class CliError(AssertionError):
    """A CLI call that was expected to succeed failed (its output is in the message)."""


@dataclass
class Project:
    """A temporary copy of the program with its own backend; `run` calls the real CLI in it."""

    workdir: Path
    tools_bin: Path
    pulumi_home: Path
    # What the commands run so far printed, by command line (the secrets test reads every output).
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    @classmethod
    def copy(
        cls,
        workdir: Path,
        tools_bin: Path,
        pulumi_home: Path,
        stacks: tuple[str, ...] = (),
        source: Path = ROOT,
    ) -> Project:
        """Copies the program at `source` (this project's by default: its files and directories, or
        every file of another program's directory); only the named stack files come along."""
        workdir.mkdir(parents=True, exist_ok=True)
        files = PROGRAM_FILES if source == ROOT else tuple(p.name for p in source.iterdir() if p.is_file())
        for name in files:
            shutil.copy2(source / name, workdir / name)
        for name in PROGRAM_DIRS if source == ROOT else ():
            shutil.copytree(
                source / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__", "Pulumi.*.yaml")
            )
        for stack in stacks:
            shutil.copy2(ROOT / "stacks" / f"Pulumi.{stack}.yaml", workdir / "stacks")
        (workdir / ".venv").symlink_to(ROOT / ".venv")
        (workdir / "state").mkdir()
        return cls(workdir, tools_bin, pulumi_home)

    @property
    def env(self) -> dict[str, str]:
        """The CLI's environment for this project (its own file backend)."""
        env = base_env(self.tools_bin, self.pulumi_home)
        env["PULUMI_BACKEND_URL"] = f"file://{self.workdir / 'state'}"
        return env

    def run(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`pulumi ARGS --non-interactive --color never`; stdout and stderr are kept apart."""
        return self._call(["pulumi", *args, "--non-interactive", "--color", "never"], check, stdin)

    def script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`scripts/stack.sh ARGS`: the commands the delivery workflows run, on this project."""
        return self._call([str(ROOT / "scripts" / "stack.sh"), *args, "--color", "never"], check, None)

    def _call(self, argv: list[str], check: bool, stdin: str | None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv,
            cwd=self.workdir,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        self.results[shlex.join(argv)] = result
        if check and result.returncode != 0:
            raise CliError(
                f"{shlex.join(argv)} exited {result.returncode}\n--- stdout\n{result.stdout}\n"
                f"--- stderr\n{result.stderr}"
            )
        return result

    def run_line(self, line: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """One shell-style `pulumi ...` command line, as a user types it."""
        words = shlex.split(line, comments=True)
        if not words or words[0] != "pulumi":
            raise ValueError(f"not a pulumi command: {line!r}")
        return self.run(*words[1:], check=check)

    def init_one_target_stack(
        self, stack: str, kubeconfig: str, namespace: str, target: str, gl_version: str, *lines: str
    ) -> None:
        """A stack with one cloud amd64 target of prebuilt images against a cluster, typed the way a user
        types it (`pulumi config set --path`), then the extra `pulumi config set ...` lines."""
        self.run("stack", "init", stack)
        self.run("config", "set", "--secret", "kubeconfig", stdin=kubeconfig)
        for line in [
            "pulumi config set --path 'pulumi:disable-default-providers[0]' kubernetes",
            f"pulumi config set namespace {namespace}",
            "pulumi config set --path image.build false",
            f"pulumi config set --path 'targets[0].name' {target}",
            f"pulumi config set --path 'targets[0].glVersion' {gl_version}",
            "pulumi config set --path 'targets[0].arch' amd64",
            "pulumi config set --path 'targets[0].flavour' cloud",
            *lines,
        ]:
            self.run_line(line)

    def stack_export(self) -> dict[str, Any]:
        """`pulumi stack export` (secrets stay encrypted)."""
        exported: dict[str, Any] = json.loads(self.run("stack", "export").stdout)
        return exported

    def outputs(self) -> dict[str, Any]:
        """`pulumi stack output --json`."""
        outputs: dict[str, Any] = json.loads(self.run("stack", "output", "--json").stdout)
        return outputs
