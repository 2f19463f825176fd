"""Every validated string is matched as a whole: a trailing newline (which Python's `$` tolerates) or any
other trailing or leading character makes it invalid, in every field that has a form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from components.checksums import parse_checksums
from components.config import is_digest_pinned
from components.versions import parse_driver_version, parse_gl_version
from tests.pulumi import harness as h

Config = dict[str, Any]
T = f"{h.NS}:targets"
DIGEST = "sha256:" + "a" * 64


def _base() -> tuple[Config, list[str]]:
    return h.build_config([h.target("vm", "1877.17", h.checksummed()[0])])


def _target(**changes: Any) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        config[T][0].update(changes)

    return mutate


def _set(key: str, value: Any) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        config[f"{h.NS}:{key}"] = value

    return mutate


def _prebuilt(image: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        config[f"{h.NS}:image"] = {"build": False}
        config[T][0]["image"] = image

    return mutate


def _registry(**changes: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        config[f"{h.NS}:registry"].update(changes)

    return mutate


# (mutation, the key path the problem must name)
CASES = [
    pytest.param(_target(name="vm\n"), "targets[0].name", id="target-name"),
    pytest.param(_target(glVersion="1877.17\n"), "targets[0].glVersion", id="gl-version"),
    pytest.param(_target(driverVersion=h.checksummed()[0] + "\n"), "targets[0].driverVersion", id="driver"),
    pytest.param(_set("namespace", "kube-system\n"), "namespace", id="namespace"),
    pytest.param(_registry(server="registry.test:5000\n"), "registry.server", id="registry-server"),
    pytest.param(_registry(repository="gpu/driver\n"), "registry.repository", id="registry-repository"),
    pytest.param(
        _prebuilt(f"registry.test/gpu/driver:1@{DIGEST}\n"), "targets[0].image", id="target-image-digest"
    ),
    pytest.param(_prebuilt("registry.test/gpu/driver:1\n"), "targets[0].image", id="target-image-tag"),
    pytest.param(_set("devicePlugin", {"image": "gcr.io/x/plugin:1\n"}), "devicePlugin.image", id="plugin"),
    pytest.param(
        _set("image", {"buildBase": "mirror.test/kmodbuild:1\n"}), "image.buildBase", id="build-base"
    ),
    pytest.param(
        _set("image", {"runtimeBase": "mirror.test/gl:1\n"}), "image.runtimeBase", id="runtime-base"
    ),
    pytest.param(
        _target(nodeSelector=[{"key": "os-version\n", "operator": "Exists"}]),
        "targets[0].nodeSelector[0].key",
        id="label-key",
    ),
    pytest.param(
        _target(nodeSelector=[{"key": "example.com\n/pool", "operator": "Exists"}]),
        "targets[0].nodeSelector[0].key",
        id="label-key-prefix",
    ),
    pytest.param(
        _target(nodeSelector=[{"key": "os-version", "operator": "In", "values": ["1877.17\n"]}]),
        "targets[0].nodeSelector[0].values",
        id="label-value",
    ),
    pytest.param(
        _set("moduleParameters", {"nvidia": ["NVreg_EnableGpuFirmware=0\n"]}),
        "moduleParameters.nvidia",
        id="module-parameter",
    ),
]


@pytest.mark.parametrize(("mutate", "path"), CASES)
def test_a_trailing_newline_is_rejected(mutate: Callable[[Config], None], path: str) -> None:
    config, secret = _base()
    mutate(config)
    recorder, error = h.run_failing(config, secret)
    assert recorder.regs == []
    assert any(line.startswith(f"{path}:") and "\\n" in line for line in error.problems), error.problems


@pytest.mark.parametrize("text", ["1877.17\n", "2150.9.0\n", "1877.17\n\n", " 1877.17"])
def test_gl_version_parser_matches_the_whole_string(text: str) -> None:
    with pytest.raises(ValueError):
        parse_gl_version(text)


@pytest.mark.parametrize("text", ["580.159.04\n", "580.159.04 ", "\n580.159.04"])
def test_driver_version_parser_matches_the_whole_string(text: str) -> None:
    with pytest.raises(ValueError):
        parse_driver_version(text)


def test_digest_pinning_needs_the_digest_at_the_very_end() -> None:
    assert is_digest_pinned(f"r.test/x@{DIGEST}")
    assert not is_digest_pinned(f"r.test/x@{DIGEST}\n")


def test_checksum_lines_match_as_a_whole() -> None:
    good = "a" * 64 + "  NVIDIA-Linux-x86_64-580.159.04.run"
    assert parse_checksums(good) == {("amd64", "580.159.04")}
    assert parse_checksums(good + " trailing") == frozenset()
