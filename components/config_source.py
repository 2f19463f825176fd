"""Reads the raw Pulumi stack configuration and validates it into one StackConfig (or one ConfigError)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.runtime
from pulumi.runtime import config as runtime_config
from pydantic import ValidationError

from components.config import PROJECT, SecretRef, StackConfig
from components.config_errors import ConfigError, problems_from, show

# Keys whose values are secrets: read only through pulumi.Config.require_secret.
SECRET_KEYS = ("kubeconfig", "registryPassword")
# Keys holding structured values (`pulumi config set --path`), stored by Pulumi as JSON text.
OBJECT_KEYS = (
    "cluster",
    "registry",
    "image",
    "targets",
    "devicePlugin",
    "gpuOperator",
    "moduleParameters",
    "rollout",
)
DISABLE_DEFAULT_PROVIDERS = "pulumi:disable-default-providers"
# How far a namespace may be from PROJECT to count as a misspelling of it (`nvidia-instaler`).
MAX_NAMESPACE_TYPO = 2


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
        shown = (
            "(value not shown: marked secret)"
            if DISABLE_DEFAULT_PROVIDERS in raw.secret_keys
            else show(value)
        )
        problems.append(
            f"{DISABLE_DEFAULT_PROVIDERS}: {shown} does not disable the default Kubernetes provider "
            f"(a forgotten provider would apply to your current kubectl context); expected a list holding "
            f"kubernetes: pulumi config set --path '{DISABLE_DEFAULT_PROVIDERS}[0]' kubernetes"
        )


def _secret_setting(key: str, raw: RawConfig, problems: list[str]) -> SecretRef:
    """One of SECRET_KEYS: it must be stored as a secret and not be empty; its value stays unread."""
    full_key = f"{PROJECT}:{key}"
    if full_key not in raw.secret_keys:
        problems.append(
            f"{key}: stored in plain text (value not shown); expected a secret: "
            f"pulumi config set --secret {key} ... (and rotate it: it is in the stack file)"
        )
    value = raw.values.get(full_key)
    if isinstance(value, str) and not value.strip():
        problems.append(f"{key}: empty; expected a non-empty secret: pulumi config set --secret {key} ...")
    return SecretRef(key)


def _secret_marked(key: str) -> str:
    """The problem of a setting stored as a secret although its value ends up in plain text."""
    return (
        f"{key}: marked secret (value not shown), but only {' and '.join(SECRET_KEYS)} are kept secret: this "
        f"setting ends up in plain text in the Kubernetes objects and the stack outputs; expected a plain "
        f"value: pulumi config rm {key}, then pulumi config set --path {key} ... without --secret"
    )


def build_stack_config(raw: RawConfig) -> StackConfig:
    """Validates the raw config; raises ConfigError with every problem found, one per line.

    A project setting marked secret other than SECRET_KEYS is refused and the models do not run: a model's
    message could echo the value (or a value derived from it) under any key."""
    problems: list[str] = []
    _check_default_providers(raw, problems)
    data: dict[str, Any] = {}
    refused: list[str] = []
    prefix = f"{PROJECT}:"
    for full_key, value in raw.values.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix) :]
        if key in SECRET_KEYS:
            data[key] = _secret_setting(key, raw, problems)
        elif full_key in raw.secret_keys:
            refused.append(_secret_marked(key))
        else:
            data[key] = _decode(key, value, problems)
    if refused:
        raise ConfigError([*problems, *refused])
    try:
        config = StackConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(problems_from(StackConfig, exc))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _looks_like_project(namespace: str) -> bool:
    """A namespace that is probably a misspelling of PROJECT: equal but for case and separators, or at
    most MAX_NAMESPACE_TYPO edits away."""
    letters = re.sub(r"[^a-z0-9]", "", namespace.lower())
    return letters == re.sub(r"[^a-z0-9]", "", PROJECT) or (
        _edit_distance(namespace.lower(), PROJECT) <= MAX_NAMESPACE_TYPO
    )


def namespace_typos(keys: Iterable[str]) -> list[str]:
    """A warning for each key in another namespace that looks like a misspelling of this project's: Pulumi
    hands such a key to no one, so the setting is silently ignored. Names keys only, never values."""
    warnings = []
    for full_key in sorted(keys):
        namespace, separator, key = full_key.partition(":")
        if separator and namespace != PROJECT and _looks_like_project(namespace):
            warnings.append(
                f"{full_key}: ignored, {namespace!r} is not this project's namespace; did you mean "
                f"{PROJECT}:{key}? (pulumi config set --path {key} ... writes that key)"
            )
    return warnings


def load_stack_config() -> StackConfig:
    """Reads and validates the current stack's configuration (call once, before any resource). Keys in a
    misspelt namespace are warned about first, so the warning shows even when validation fails."""
    raw = read_pulumi_config()
    for warning in namespace_typos(raw.values):
        pulumi.log.warn(warning)
    return build_stack_config(raw)
