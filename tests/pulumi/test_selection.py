"""Node-selection overlap: two selections overlap unless some key makes them provably disjoint."""

from __future__ import annotations

import pytest

from components.selection import Requirement, can_overlap, satisfiable, target_selection


def r(key: str, op: str, *values: str) -> Requirement:
    return Requirement(key, op, tuple(values))  # type: ignore[arg-type]


CASES = [
    # (a, b, can overlap)
    ([r("gpu", "Exists")], [r("gpu", "Exists")], True),
    ([r("os", "In", "1", "2")], [r("os", "In", "2", "3")], True),
    ([r("os", "In", "1")], [r("os", "In", "2")], False),
    ([r("os", "In", "1", "2")], [r("os", "NotIn", "1", "2")], False),
    ([r("os", "In", "1", "2")], [r("os", "NotIn", "1")], True),
    ([r("gpu", "Exists")], [r("gpu", "DoesNotExist")], False),
    ([r("gpu", "In", "x")], [r("gpu", "DoesNotExist")], False),
    ([r("gpu", "NotIn", "x")], [r("gpu", "DoesNotExist")], True),  # an absent label satisfies NotIn
    ([r("gpu", "Exists")], [r("pool", "In", "a")], True),  # different keys never separate
    ([r("gpu", "Exists"), r("os", "In", "1")], [r("gpu", "Exists"), r("os", "In", "2")], False),
    ([r("os", "NotIn", "1")], [r("os", "NotIn", "2")], True),
    ([r("os", "Exists"), r("os", "NotIn", "1")], [r("os", "In", "1")], False),
]


@pytest.mark.parametrize(("a", "b", "expected"), CASES)
def test_can_overlap(a: list[Requirement], b: list[Requirement], expected: bool) -> None:
    assert can_overlap(a, b) is expected
    assert can_overlap(b, a) is expected


def test_different_arch_is_disjoint_even_with_equal_user_selection() -> None:
    user = [r("pool", "In", "gpu")]
    assert not can_overlap(
        target_selection("amd64", user, "1877.17"), target_selection("arm64", user, "1877.17")
    )
    assert can_overlap(
        target_selection("amd64", user, "1877.17"), target_selection("amd64", user, "2150.9.0")
    )


def test_default_selection_separates_garden_linux_versions() -> None:
    assert target_selection("amd64", None, "1877.17") == (
        r("gpu", "Exists"),
        r("os-version", "In", "1877.17"),
        r("kubernetes.io/arch", "In", "amd64"),
    )
    assert not can_overlap(
        target_selection("amd64", None, "1877.17"), target_selection("amd64", None, "2150.9.0")
    )


def test_satisfiable() -> None:
    assert satisfiable([r("a", "In", "1"), r("a", "NotIn", "2")])
    assert not satisfiable([r("a", "In", "1"), r("a", "In", "2")])
    assert not satisfiable([r("a", "DoesNotExist"), r("a", "Exists")])
