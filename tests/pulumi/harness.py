"""Test harness: runs the program in-process under mocks that record every registration.

The mocks here are the tests' own (not components.inprocess.RecordingMocks): a built image gets a
digest computed from its build inputs, like a registry would give distinct content distinct digests.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.runtime

from components.checksums import available_checksums
from components.config_errors import ConfigError
from components.inprocess import InProcessRun, run_in_process
from components.render import stack_config

SIG_KEY = "4dabf18193072939515e22adb298388d"
SIG_SECRET = "1b47061264138c4ac30d75fd1eb44270"
NS = "nvidia-installer"


@dataclass
class Reg:
    """One recorded registration."""

    typ: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    provider: str


class Recorder(pulumi.runtime.Mocks):
    """Records registrations; images get `repository@sha256:<hash of their inputs>`."""

    def __init__(self) -> None:
        self.regs: list[Reg] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.regs.append(Reg(args.typ, args.name, args.inputs, bool(args.custom), args.provider or ""))
        state = dict(args.inputs)
        if args.typ == "docker:index/image:Image":
            state["repoDigest"] = fake_digest(args.inputs)
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None

    def of_type(self, typ: str) -> list[Reg]:
        return [r for r in self.regs if r.typ == typ and r.custom]

    def k8s_objects(self) -> list[Reg]:
        return [r for r in self.regs if r.custom and r.typ.startswith("kubernetes:")]


def fake_digest(inputs: Mapping[str, Any]) -> str:
    repository = str(inputs["imageName"]).rsplit(":", 1)[0]
    content = hashlib.sha256(json.dumps(inputs["build"], sort_keys=True).encode()).hexdigest()
    return f"{repository}@sha256:{content}"


def plain(value: Any) -> Any:
    """Inputs with secret envelopes opened and integral floats as ints."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SIG_SECRET:
            return plain(value["value"])
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def outside_secrets(value: Any) -> Iterator[str]:
    """Every string of serialized inputs that is NOT inside a secret envelope."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SIG_SECRET:
            return
        for k, v in value.items():
            yield str(k)
            yield from outside_secrets(v)
    elif isinstance(value, list):
        for v in value:
            yield from outside_secrets(v)
    elif isinstance(value, str):
        yield value


def stack_dict(stack: str) -> tuple[dict[str, Any], list[str]]:
    """An example stack's config as Python values (full keys), and its secret keys."""
    values, secret = stack_config(stack)
    decoded = {}
    for key, value in values.items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value
    return decoded, secret


def encode(config: Mapping[str, Any]) -> dict[str, str]:
    """Python values -> the text values Pulumi hands a program."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def run(
    config: Mapping[str, Any],
    secret_keys: list[str],
    stack: str = "test",
    uncovered: Mapping[str, str] | None = None,
) -> tuple[Recorder, InProcessRun]:
    """Runs the program (with these uncovered GPU nodes, as the cluster read would report them); returns
    the recorder and the run (outputs, warnings)."""
    recorder = Recorder()
    result = run_in_process(encode(config), secret_keys, recorder, stack, uncovered)
    return recorder, result


def run_failing(config: Mapping[str, Any], secret_keys: list[str]) -> tuple[Recorder, ConfigError]:
    """Runs a config that must be rejected; returns the recorder and the error."""
    recorder = Recorder()
    try:
        run_in_process(encode(config), secret_keys, recorder, "test")
    except ConfigError as error:
        return recorder, error
    raise AssertionError("the configuration was accepted")


def checksummed(arch: str = "amd64") -> list[str]:
    """Driver versions the image build can verify for `arch` (read from the checksum file)."""
    return sorted(v for a, v in available_checksums() if a == arch)


def target(name: str, gl: str, driver: str, **extra: Any) -> dict[str, Any]:
    """A target dict with amd64/cloud defaults."""
    return {
        "name": name,
        "glVersion": gl,
        "arch": "amd64",
        "flavour": "cloud",
        "driverVersion": driver,
        **extra,
    }


def build_config(targets: list[dict[str, Any]], **keys: Any) -> tuple[dict[str, Any], list[str]]:
    """A valid building stack (context cluster, registry with credentials) with these targets."""
    config: dict[str, Any] = {
        "pulumi:disable-default-providers": ["kubernetes"],
        f"{NS}:cluster": {"context": "test-cluster"},
        f"{NS}:registry": {"server": "registry.test:5000", "repository": "gpu/driver", "username": "robot"},
        f"{NS}:registryPassword": "s3cr3t-Sentinel-pw",
        f"{NS}:targets": copy.deepcopy(targets),
    }
    config.update({f"{NS}:{k}": v for k, v in keys.items()})
    return config, [f"{NS}:registryPassword"]
