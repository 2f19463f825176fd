"""Every rendered object validates against the Kubernetes OpenAPI schema (strict: unknown fields fail)
of Kubernetes 1.30 and of the newest version the installed kubernetes-validate knows."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from components.render import render_objects
from tests.pulumi import harness as h

VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def _objects() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for stack in ("dev", "prod"):
        objects, _ = render_objects(stack)
        out.extend((stack, o) for o in objects)
    return out


OBJECTS = _objects()


def test_both_stacks_render_every_kind() -> None:
    kinds = {o["kind"] for _, o in OBJECTS}
    assert kinds == {"DaemonSet", "ConfigMap", "Secret"}
    assert VERSIONS[1] != "1.30.0"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("stack", "obj"), OBJECTS, ids=[f"{s}-{o['kind']}-{o['metadata']['name']}" for s, o in OBJECTS]
)
def test_object_is_valid_kubernetes(version: str, stack: str, obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_catches_a_misspelled_field() -> None:
    _, ds = next((s, o) for s, o in OBJECTS if o["kind"] == "DaemonSet")
    broken = h.plain(ds)
    broken["spec"]["template"]["spec"]["nodeAfinity"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
