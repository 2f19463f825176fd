"""Reads the raw Pulumi stack configuration and validates it into one StackConfig (or one ConfigError)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi.runtime
from pulumi.runtime import config as runtime_config
from pydantic import ValidationError

from components.config import PROJECT, SecretRef, StackConfig
from components.config_errors import ConfigError, problems_from, show

# Keys whose values are secrets: read only through pulumi.Config.require_secret.
SECRET_KEYS = ("kubeconfig", "registryPassword")
# Keys holding structured values (`pulumi config set --path`), stored by Pulumi as JSON text.
OBJECT_KEYS = ("cluster", "registry", "image", "targets", "devicePlugin", "moduleParameters")
DISABLE_DEFAULT_PROVIDERS = "pulumi:disable-default-providers"


@dataclass(frozen=True)
class RawConfig:
    """Every stack config value by full key (`nvidia-installer:targets`), and which keys are secret."""

    values: Mapping[str, Any]
    secret_keys: frozenset[str]


def read_pulumi_config() -> RawConfig:
    """The config the Pulumi language host handed to this process (env), plus anything set in-process
    with pulumi.runtime.set_all_config (the offline render and the tests)."""
    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    secret = set(pulumi.runtime.get_config_secret_keys_env())
    secret.update(k for k in values if runtime_config.is_config_secret(k))
    return RawConfig(values=values, secret_keys=frozenset(secret))


def _decode(key: str, value: Any, problems: list[str]) -> Any:
    if key not in OBJECT_KEYS or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        problems.append(f"{key}: {show(value)} is not structured; expected an object/list set with --path")
        return None


def _check_default_providers(raw: RawConfig, problems: list[str]) -> None:
    value = raw.values.get(DISABLE_DEFAULT_PROVIDERS)
    try:
        disabled = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        disabled = None
    if not (isinstance(disabled, list) and ("kubernetes" in disabled or "*" in disabled)):
        problems.append(
            f"{DISABLE_DEFAULT_PROVIDERS}: {show(value)} does not disable the default Kubernetes provider "
            f"(a forgotten provider would apply to your current kubectl context); expected a list holding "
            f"kubernetes: pulumi config set --path '{DISABLE_DEFAULT_PROVIDERS}[0]' kubernetes"
        )


def build_stack_config(raw: RawConfig) -> StackConfig:
    """Validates the raw config; raises ConfigError with every problem found, one per line."""
    problems: list[str] = []
    _check_default_providers(raw, problems)
    data: dict[str, Any] = {}
    prefix = f"{PROJECT}:"
    for full_key, value in raw.values.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix) :]
        if key in SECRET_KEYS:
            if full_key not in raw.secret_keys:
                problems.append(
                    f"{key}: stored in plain text (value not shown); expected a secret: "
                    f"pulumi config set --secret {key} ... (and rotate it: it is in the stack file)"
                )
            data[key] = SecretRef(key)
            continue
        data[key] = _decode(key, value, problems)
    try:
        config = StackConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(problems_from(StackConfig, exc))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_stack_config() -> StackConfig:
    """Reads and validates the current stack's configuration (call once, before any resource)."""
    return build_stack_config(read_pulumi_config())
