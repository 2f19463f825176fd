"""Node-selection overlap: two selections overlap unless some key makes them provably disjoint."""

from __future__ import annotations

import pytest

from components.selection import (
    Requirement,
    can_overlap,
    pins,
    satisfiable,
    target_selection,
    version_problem,
)


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


NFD = "feature.node.kubernetes.io/system-os_release.VERSION_ID"


@pytest.mark.parametrize(
    ("user", "gl"),
    [
        (None, "1877.17"),
        ([r("os-version", "In", "1877.17")], "1877.17"),
        ([r(NFD, "In", "2150.9.0"), r("feature.node.kubernetes.io/pci-10de.present", "Exists")], "2150.9.0"),
        ([r("os-version", "Exists"), r(NFD, "In", "1877.17"), r("pool", "In", "a")], "1877.17"),
        ([r("os-version", "In", "1877.17", "1877.16"), r("os-version", "NotIn", "1877.16")], "1877.17"),
    ],
)
def test_selections_that_pin_the_version_have_no_version_problem(
    user: list[Requirement] | None, gl: str
) -> None:
    selection = target_selection("amd64", user, gl)
    assert version_problem(selection, gl) is None
    assert pins(selection, "kubernetes.io/arch", "amd64")


@pytest.mark.parametrize(
    ("user", "gl", "fragment"),
    [
        # nothing about the version: nodes of every Garden Linux version match
        ([r("pool", "In", "gpu")], "1877.17", "any Garden Linux version"),
        ([r("os-version", "Exists")], "1877.17", "any Garden Linux version"),
        ([r("os-version", "In", "1877.17", "2150.9.0")], "1877.17", "any Garden Linux version"),
        ([r("os-version", "NotIn", "2150.9.0")], "1877.17", "any Garden Linux version"),
        # a 2150 image on nodes labelled 1877
        ([r("os-version", "In", "1877.17")], "2150.9.0", "os-version=2150.9.0"),
        ([r("os-version", "In", "1877.17"), r(NFD, "In", "2150.9.0")], "1877.17", f"{NFD}=1877.17"),
        ([r("os-version", "NotIn", "1877.17"), r(NFD, "In", "1877.17")], "1877.17", "os-version=1877.17"),
    ],
)
def test_selections_that_admit_other_versions_have_a_version_problem(
    user: list[Requirement], gl: str, fragment: str
) -> None:
    problem = version_problem(target_selection("amd64", user, gl), gl)
    assert problem is not None and fragment in problem


def test_pins() -> None:
    assert pins([r("a", "In", "1")], "a", "1")
    assert not pins([r("a", "In", "1", "2")], "a", "1")
    assert not pins([r("a", "Exists")], "a", "1")
    assert not pins([r("b", "In", "1")], "a", "1")
