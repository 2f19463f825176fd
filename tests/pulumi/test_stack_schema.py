"""stacks/schema.json: generated from the models, current, referenced by every stack file, and as strict as
the models on the shape of a setting."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from components import schema
from components.config_errors import ConfigError
from components.render import STACKS_DIR, render_objects

SCHEMA_FILE = STACKS_DIR / schema.SCHEMA_FILE_NAME
STACK_FILES = sorted(STACKS_DIR.glob("Pulumi.*.yaml"))
NS = "nvidia-installer"


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))


def test_committed_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text() == schema.render(), (
        "stacks/schema.json is stale: run .venv/bin/python -m components.schema > stacks/schema.json"
    )


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_stack_file_points_at_the_schema_and_passes_it(path: Path) -> None:
    assert path.read_text().splitlines()[0] == schema.MODELINE
    errors = [e.message for e in _validator().iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


def _set(*keys: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        node: Any = config
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda config: config.pop(key)


BAD = {
    "arch-not-a-choice": _set(f"{NS}:targets", 0, "arch", value="x86_64"),
    "misspelled-target-key": _set(f"{NS}:targets", 0, "flavor", value="cloud"),
    "gl-version-as-number": _set(f"{NS}:targets", 0, "glVersion", value=1877),
    "unknown-setting": _set(f"{NS}:registy", value={"server": "r.example.com"}),
    "no-targets": _delete(f"{NS}:targets"),
    "empty-targets": _set(f"{NS}:targets", value=[]),
    "sharing-below-two": _set(f"{NS}:devicePlugin", value={"timeSharing": {"maxSharedClientsPerGpu": 1}}),
    "password-in-plain-text": _set(f"{NS}:registryPassword", value="hunter2"),
    "default-provider-enabled": _set("pulumi:disable-default-providers", value=["aws"]),
    "module-type-not-a-choice": _set(f"{NS}:targets", 1, "moduleType", value="nouveau"),
    "provider-not-a-choice": _set(f"{NS}:devicePlugin", value={"provider": "nvidia"}),
    "mig-strategy-not-a-choice": _set(f"{NS}:gpuOperator", value={"mig": {"strategy": "all"}}),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_schema_rejects_what_the_models_reject(name: str, tmp_path: Path) -> None:
    document = yaml.safe_load((STACKS_DIR / "Pulumi.dev.yaml").read_text())
    bad = copy.deepcopy(document)
    BAD[name](bad["config"])
    assert list(_validator().iter_errors(bad)), f"the schema accepts {name}"
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError):
        render_objects("bad", tmp_path)
