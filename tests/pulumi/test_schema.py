"""Every rendered object validates against the Kubernetes OpenAPI schema (strict: unknown fields fail)
of Kubernetes 1.30 and of the newest version the installed kubernetes-validate knows."""

from __future__ import annotations

from functools import cache
from typing import Any

import kubernetes_validate
import pytest

from components import specs
from components.render import render_objects
from tests.pulumi import harness as h

VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


STACKS = ["dev", "prod"]


@cache
def _objects(stack: str) -> tuple[dict[str, Any], ...]:
    """The stack's rendered objects, rendered once per session and only when a test asks (a broken stack
    fails that test, not the collection)."""
    objects, _ = render_objects(stack)
    return tuple(objects)


def test_both_stacks_render_every_kind() -> None:
    kinds = {o["kind"] for stack in STACKS for o in _objects(stack)}
    assert kinds == {"DaemonSet", "ConfigMap", "Secret", *specs.INSTALLER_IDENTITY_KINDS}
    assert VERSIONS[1] != "1.30.0"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stack", STACKS)
def test_objects_are_valid_kubernetes(version: str, stack: str) -> None:
    for obj in _objects(stack):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{stack}: {obj['kind']} {obj['metadata']['name']}: {error}") from error


def test_strict_validation_catches_a_misspelled_field() -> None:
    ds = next(o for o in _objects("dev") if o["kind"] == "DaemonSet")
    broken = h.plain(ds)
    broken["spec"]["template"]["spec"]["nodeAfinity"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
