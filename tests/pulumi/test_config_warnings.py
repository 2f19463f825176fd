"""Warnings at preview (pulumi.log.warn) and in the offline render: keys meant for this project but written
in another namespace, and images used by tag (a re-pushed tag changes what runs without a diff)."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import render
from components.config import DEFAULT_DEVICE_PLUGIN_IMAGE
from components.pinning import DEFAULT_BUILD_BASE, DEFAULT_RUNTIME_BASE
from tests.pulumi import harness as h

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "@sha256:" + "b" * 64
PLUGIN_PINNED = {"image": "mirror.test/nvidia-gpu-device-plugin:1.0.25-gke.56" + DIGEST}


def _pinned_build(**image: Any) -> tuple[dict[str, Any], list[str]]:
    """A building stack with every image pinned except what `image` sets."""
    bases = {
        "buildBase": "mirror.test/kmodbuild:amd64-1877.17" + DIGEST,
        "runtimeBase": "mirror.test/gl" + DIGEST,
    }
    return h.build_config(
        [h.target("a", "1877.17", h.checksummed()[0])], image={**bases, **image}, devicePlugin=PLUGIN_PINNED
    )


# --- namespace typos -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "namespace",
    ["nvidia_installer", "NVIDIA-Installer", "nvidia-instaler", "nvidia-installer-", "nvidiainstaller"],
)
def test_a_key_in_a_near_miss_namespace_is_named_with_the_key_meant(namespace: str) -> None:
    config, secret = _pinned_build()
    config[f"{namespace}:moduleParameters"] = {"nvidia": ["NVreg_EnableGpuFirmware=0"]}
    _, result = h.run(config, secret)
    (warning,) = result.warnings
    assert f"{namespace}:moduleParameters" in warning
    assert f"{h.NS}:moduleParameters" in warning
    assert "ignored" in warning


@pytest.mark.parametrize(
    "key", ["kubernetes:context", "pulumi:tags", "docker:host", "nvidia:foo", "aws:region"]
)
def test_other_projects_namespaces_are_left_alone(key: str) -> None:
    config, secret = _pinned_build()
    config[key] = "x"
    _, result = h.run(config, secret)
    assert result.warnings == []


def test_a_secret_near_miss_is_named_without_its_value() -> None:
    config, secret = _pinned_build()
    config["nvidia_installer:registryPassword"] = "zz-sentinel-4411"
    _, result = h.run(config, [*secret, "nvidia_installer:registryPassword"])
    (warning,) = result.warnings
    assert "nvidia_installer:registryPassword" in warning and "zz-sentinel" not in warning


def test_the_render_shows_the_near_miss_even_when_the_stack_is_invalid(tmp_path: Path) -> None:
    stack = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    stack["config"]["nvidia_installer:targets"] = stack["config"].pop(f"{h.NS}:targets")
    (tmp_path / "Pulumi.typo.yaml").write_text(yaml.safe_dump(stack))
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = render.main(["typo", "--stacks-dir", str(tmp_path)])
    assert code == 2
    assert "targets: missing" in err.getvalue()
    assert re.search(r"warning: .*nvidia_installer:targets.*nvidia-installer:targets", err.getvalue())


# --- unpinned images -------------------------------------------------------------------------------------


def test_a_fully_pinned_stack_has_no_warning() -> None:
    config, secret = _pinned_build()
    _, result = h.run(config, secret)
    assert result.warnings == []


def test_the_default_device_plugin_image_is_used_by_tag_and_says_so() -> None:
    config, secret = _pinned_build()
    del config[f"{h.NS}:devicePlugin"]
    _, result = h.run(config, secret)
    (warning,) = result.warnings
    assert warning.startswith("devicePlugin.image:")
    assert f"{DEFAULT_DEVICE_PLUGIN_IMAGE}@sha256:<digest>" in warning


def test_operator_mode_warns_about_no_device_plugin_image() -> None:
    # GKE's plugin does not run under the GPU Operator: its default image is used by nobody (the e2e run
    # showed this warning in operator mode).
    config, secret = _pinned_build()
    config[f"{h.NS}:devicePlugin"] = {"provider": "gpu-operator"}
    _, result = h.run(config, secret)
    assert result.warnings == []


def test_a_configured_device_plugin_tag_says_so() -> None:
    config, secret = _pinned_build()
    config[f"{h.NS}:devicePlugin"] = {"image": "mirror.test/plugin:1"}
    _, result = h.run(config, secret)
    (warning,) = result.warnings
    assert "devicePlugin.image" in warning and "mirror.test/plugin:1@sha256:<digest>" in warning


@pytest.mark.parametrize(
    ("setting", "key", "image"),
    [
        ("buildBase", "image.buildBase", "mirror.test/kmodbuild:amd64-1877.17"),
        ("runtimeBase", "image.runtimeBase", "mirror.test/gl:1877.17"),
    ],
)
def test_a_configured_base_by_tag_says_so(setting: str, key: str, image: str) -> None:
    config, secret = _pinned_build(**{setting: image})
    _, result = h.run(config, secret)
    (warning,) = result.warnings
    assert warning.startswith(f"{key}:") and f"{image}@sha256:<digest>" in warning


def test_default_bases_are_named_once_per_distinct_image_when_building() -> None:
    drivers = h.checksummed()
    pin = {"key": "os-version", "operator": "In", "values": ["1877.17"]}
    targets = [
        h.target(
            "a",
            "1877.17",
            drivers[0],
            nodeSelector=[pin, {"key": "pool", "operator": "NotIn", "values": ["m"]}],
        ),
        h.target(
            "b",
            "1877.17",
            drivers[1],
            flavour="metal",
            nodeSelector=[pin, {"key": "pool", "operator": "In", "values": ["m"]}],
        ),
        h.target("c", "2150.9.0", drivers[0]),
    ]
    config, secret = h.build_config(targets, devicePlugin=PLUGIN_PINNED)
    _, result = h.run(config, secret)
    expected = {
        DEFAULT_BUILD_BASE.format(arch="amd64", gl="1877.17"),
        DEFAULT_BUILD_BASE.format(arch="amd64", gl="2150.9.0"),
        DEFAULT_RUNTIME_BASE.format(gl="1877.17"),
        DEFAULT_RUNTIME_BASE.format(gl="2150.9.0"),
    }
    assert len(result.warnings) == len(expected)
    for image in expected:
        assert any(f"{image}@sha256:<digest>" in w for w in result.warnings), (image, result.warnings)


def test_default_bases_mirror_the_dockerfile() -> None:
    dockerfile = (ROOT / "image" / "Dockerfile").read_text()
    build = DEFAULT_BUILD_BASE.format(arch="${ARCH}", gl="${GL_VERSION}")
    runtime = DEFAULT_RUNTIME_BASE.format(gl="${GL_VERSION}")
    assert f"ARG BUILD_BASE={build}\n" in dockerfile
    assert f"ARG RUNTIME_BASE={runtime}\n" in dockerfile


def test_prebuilt_images_are_not_warned_about_bases() -> None:
    config, secret = h.stack_dict("dev")
    config[f"{h.NS}:devicePlugin"] = PLUGIN_PINNED
    _, result = h.run(config, secret, "dev")
    assert result.warnings == []


def test_the_render_prints_the_same_warnings() -> None:
    config, secret = h.stack_dict("prod")
    _, result = h.run(config, secret, "prod")
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        assert render.main(["prod"]) == 0
    printed = [line[len("render: warning: ") :] for line in err.getvalue().splitlines() if "warning:" in line]
    assert printed == result.warnings and len(printed) >= 5
