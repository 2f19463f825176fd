"""Turns validation failures into one line per problem: key path, bad value, expected form."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


class ConfigError(Exception):
    """The stack configuration is invalid; `problems` holds one message per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        # Warnings issued before validation failed (the offline render prints them with the problems).
        self.warnings: list[str] = []
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"invalid stack configuration ({count} problem{'s' if count != 1 else ''}):"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


class ConfigRuleError(ValueError):
    """A cross-field rule failed: `path` is relative to the model that checked the rule."""

    def __init__(self, path: Sequence[str | int], problem: str, expected: str) -> None:
        self.path = tuple(path)
        self.problem = problem
        self.expected = expected
        super().__init__(f"{problem}; expected {expected}")


def format_path(loc: Sequence[str | int]) -> str:
    """`("targets", 1, "glVersion")` -> `targets[1].glVersion`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def show(value: Any) -> str:
    """A short, single-line rendering of a bad value; a long one keeps its start and its end (where a stray
    character like a trailing newline often is)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:50]}...{text[-27:]}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `X | None` or `list[X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _field_by_alias(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (info.alias, name):
            return info
    return None


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model reached by following the keys of `loc` (list indexes skipped)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = _field_by_alias(model, part) if model is not None else None
        if field is None:
            return None
        model = _model_in(field.annotation)
    return model


def _field_at(root: type[BaseModel], loc: Sequence[str | int]) -> FieldInfo | None:
    keys = [p for p in loc if isinstance(p, str)]
    if not keys:
        return None
    owner = _model_at(root, loc[: max(i for i, p in enumerate(loc) if isinstance(p, str))])
    return _field_by_alias(owner, keys[-1]) if owner is not None else None


def _allowed_keys(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    owner = _model_at(root, loc[:-1])
    if owner is None:
        return "a documented key (docs/configuration.md)"
    keys = [info.alias or name for name, info in owner.model_fields.items() if not info.exclude]
    return "one of " + ", ".join(sorted(keys))


def _expected(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    field = _field_at(root, loc)
    if field is not None and field.description:
        return field.description
    return "the form documented in docs/configuration.md"


def _one(root: type[BaseModel], error: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, ConfigRuleError):
        return f"{format_path(loc + cause.path)}: {cause.problem}; expected {cause.expected}"
    path = format_path(loc)
    value = error.get("input")
    if kind == "extra_forbidden":
        return f"{path}: unknown key; expected {_allowed_keys(root, loc)}"
    if kind == "missing":
        return f"{path}: missing; expected {_expected(root, loc)}"
    if kind == "literal_error":
        return f"{path}: {show(value)} is not allowed; expected one of {ctx.get('expected')}"
    if kind == "value_error":
        return f"{path}: {show(value)} is invalid; {str(cause) if cause else error['msg']}"
    detail = error["msg"][0].lower() + error["msg"][1:]
    if kind == "string_type" and isinstance(value, int | float):
        detail += (
            "; quote it in YAML or set it with `pulumi config set --type string`,"
            " a number loses trailing zeros"
        )
    return f"{path}: {show(value)} is invalid ({detail}); expected {_expected(root, loc)}"


def problems_from(root: type[BaseModel], exc: ValidationError) -> list[str]:
    """One message per pydantic error, rooted at `root`, without pydantic's URLs."""
    return [_one(root, error) for error in exc.errors(include_url=False)]
