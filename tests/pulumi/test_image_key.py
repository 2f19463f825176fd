"""One image identity: the five build inputs a driver image depends on, by name, shared by the config
(which targets share an image), the tag (components/specs.py) and the build arguments."""

from __future__ import annotations

import dataclasses

import pytest

from components import specs
from components.config import ImageConfig, RegistryConfig, TargetConfig
from components.driver_image import DriverImageArgs, build_args
from components.image_key import ImageKey
from tests.pulumi import harness as h

# Distinct values in every field, so a swapped pair of fields shows.
KEY = ImageKey(
    driver_version="590.48.01", gl_version="2150.9.0", arch="arm64", flavour="metal", module_type="open"
)


def test_the_fields_are_the_five_build_inputs_in_one_order() -> None:
    names = [f.name for f in dataclasses.fields(ImageKey)]
    assert names == ["driver_version", "gl_version", "arch", "flavour", "module_type"]
    assert ImageKey.__doc__


def test_it_is_frozen_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KEY.arch = "amd64"  # type: ignore[misc]
    assert {KEY: 1}[dataclasses.replace(KEY)] == 1
    assert dataclasses.replace(KEY, flavour="cloud") != KEY


def test_a_target_names_its_key_by_field() -> None:
    target = TargetConfig.model_validate(
        {
            "name": "t",
            "glVersion": KEY.gl_version,
            "arch": KEY.arch,
            "flavour": KEY.flavour,
            "driverVersion": KEY.driver_version,
            "moduleType": KEY.module_type,
        }
    )
    assert target.image_key() == KEY


def test_the_tag_shows_each_field_in_its_documented_place() -> None:
    # docs/configuration.md: <driver>-gl<gl>-<flavour>-<arch>-<moduleType>
    assert specs.image_tag(KEY) == "590.48.01-gl2150.9.0-metal-arm64-open"


def test_the_build_args_come_from_the_same_fields() -> None:
    args = DriverImageArgs(
        key=KEY,
        registry=RegistryConfig.model_validate({"server": "r.test", "repository": "gpu/d"}),
        password=None,
        settings=ImageConfig(),
    )
    values = build_args(args)
    assert (values["DRIVER_VERSION"], values["GL_VERSION"], values["ARCH"]) == (
        "590.48.01",
        "2150.9.0",
        "arm64",
    )
    assert (values["KERNEL_FLAVOUR"], values["MODULE_TYPE"]) == ("metal", "open")


def test_a_built_image_is_named_by_its_targets_key() -> None:
    config, secret = h.build_config(
        [h.target("m", "2150.9.0", h.checksummed()[0], flavour="metal", moduleType="auto")]
    )
    recorder, _ = h.run(config, secret)
    (image,) = recorder.of_type("docker:index/image:Image")
    assert image.inputs["imageName"].endswith(f":{h.checksummed()[0]}-gl2150.9.0-metal-amd64-auto")


@pytest.mark.parametrize(
    ("driver", "built"),
    [("580.159.04", "open"), ("565.57.01", "open"), ("535.129.03", "proprietary")],
)
def test_unset_module_type_builds_nvidias_default_and_lets_the_node_pick(driver: str, built: str) -> None:
    """NVIDIA's default is open from branch 560, proprietary before: the image holds only that type (a
    small payload), the node is told `auto` (so a pre-Turing GPU under an open image gets a clear
    message), and the preview says what was chosen and how to ship both."""
    config, secret = h.build_config([h.target("t", "1877.17", driver)])
    recorder, result = h.run(config, secret)
    (image,) = recorder.of_type("docker:index/image:Image")
    assert image.inputs["imageName"].endswith(f"-{built}")
    assert h.plain(image.inputs)["build"]["args"]["MODULE_TYPE"] == built
    (ds,) = [r for r in recorder.of_type("kubernetes:apps/v1:DaemonSet") if r.name.startswith("installer-")]
    env = {e["name"]: e.get("value") for e in ds.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODULE_TYPE"] == "auto"
    assert result.outputs["targets"]["t"]["moduleTypes"] == built
    target = TargetConfig.model_validate(h.target("t", "1877.17", driver))
    note = target.module_type_note()
    assert note is not None and f"{built} modules only" in note
    assert target.model_copy(update={"module_type": "auto"}).module_type_note() is None


def test_a_build_uses_its_own_pushed_image_as_registry_cache() -> None:
    """Issue 11: an unchanged driver does not recompile. The build asks BuildKit to embed its cache in the
    pushed image and names that same image (its key's tag) as the cache source of the next build."""
    config, secret = h.build_config([h.target("m", "2150.9.0", h.checksummed()[0], flavour="metal")])
    recorder, _ = h.run(config, secret)
    (image,) = recorder.of_type("docker:index/image:Image")
    build = h.plain(image.inputs)["build"]
    assert build["cacheFrom"] == {"images": [image.inputs["imageName"]]}
    assert build["builderVersion"] == "BuilderBuildKit"
    assert build["args"]["BUILDKIT_INLINE_CACHE"] == "1"
    # The cache argument is no build input of the Dockerfile's: it leaves the image key's args alone.
    dockerfile_args = {"ARCH", "DRIVER_VERSION", "GL_VERSION", "KERNEL_FLAVOUR", "MODULE_TYPE", "LOAD_CHECK"}
    assert set(build["args"]) - {"BUILDKIT_INLINE_CACHE"} == {*dockerfile_args, "DRIVER_SOURCE"}
