"""The example stacks under mocks: resources, names, node affinity, images by digest, sharing, outputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.selection import ARCH_LABEL
from tests.pulumi import harness as h

DS = "kubernetes:apps/v1:DaemonSet"
CM = "kubernetes:core/v1:ConfigMap"
SECRET = "kubernetes:core/v1:Secret"
IMAGE = "docker:index/image:Image"


def _by_name(recorder: h.Recorder, typ: str) -> dict[str, dict[str, Any]]:
    return {h.plain(r.inputs)["metadata"]["name"]: h.plain(r.inputs) for r in recorder.of_type(typ)}


def _terms(ds: dict[str, Any]) -> list[list[dict[str, Any]]]:
    affinity = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    required = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    return [term["matchExpressions"] for term in required["nodeSelectorTerms"]]


@pytest.fixture(params=["dev", "prod"], scope="module")
def example(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], h.Recorder, Any]:
    """One run per example stack, shared by the read-only checks of this module."""
    config, secret = h.stack_dict(request.param)
    recorder, result = h.run(config, secret, request.param)
    return request.param, config, recorder, result


def test_one_installer_per_target_and_one_device_plugin(example: Any) -> None:
    _, config, recorder, _ = example
    names = [t["name"] for t in config[f"{h.NS}:targets"]]
    daemonsets = _by_name(recorder, DS)
    assert set(daemonsets) == {f"nvidia-installer-{n}" for n in names} | {"nvidia-device-plugin"}
    # one modprobe ConfigMap, mounted by every installer
    config_maps = _by_name(recorder, CM)
    mounted = set()
    for name in names:
        ds = daemonsets[f"nvidia-installer-{name}"]
        volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
        mounted.add(volumes["module-parameters"]["configMap"]["name"])
    (cm_name,) = mounted
    assert cm_name.startswith("nvidia-installer-modprobe-")
    assert "modprobe.conf" in config_maps[cm_name]["data"]


def test_every_kubernetes_resource_uses_the_explicit_provider(example: Any) -> None:
    _, _, recorder, _ = example
    providers = [r for r in recorder.regs if r.typ == "pulumi:providers:kubernetes"]
    assert len(providers) == 1
    objects = recorder.k8s_objects()
    assert objects
    for reg in objects:
        assert "pulumi:providers:kubernetes::cluster::" in reg.provider, (
            f"{reg.typ} {reg.name}: {reg.provider!r}"
        )


def test_provider_matches_the_cluster_setting(example: Any) -> None:
    _, config, recorder, _ = example
    (provider,) = [h.plain(r.inputs) for r in recorder.regs if r.typ == "pulumi:providers:kubernetes"]
    cluster = config[f"{h.NS}:cluster"]
    if "renderDirectory" in cluster:
        assert provider["renderYamlToDirectory"] == cluster["renderDirectory"]
        assert "context" not in provider
    else:
        assert provider["context"] == cluster["context"]
        assert "renderYamlToDirectory" not in provider


def test_installer_affinity_is_exactly_the_target_selection(example: Any) -> None:
    _, config, recorder, _ = example
    daemonsets = _by_name(recorder, DS)
    for target in config[f"{h.NS}:targets"]:
        (term,) = _terms(daemonsets[f"nvidia-installer-{target['name']}"])
        assert term == [
            {"key": "gpu", "operator": "Exists"},
            {"key": "os-version", "operator": "In", "values": [target["glVersion"]]},
            {"key": ARCH_LABEL, "operator": "In", "values": [target["arch"]]},
        ]


def test_device_plugin_runs_on_the_union_of_target_nodes(example: Any) -> None:
    _, config, recorder, _ = example
    daemonsets = _by_name(recorder, DS)
    plugin_terms = _terms(daemonsets["nvidia-device-plugin"])
    installer_terms = [
        _terms(daemonsets[f"nvidia-installer-{t['name']}"])[0] for t in config[f"{h.NS}:targets"]
    ]
    assert plugin_terms == installer_terms


def test_installer_images_are_what_each_target_gets(example: Any) -> None:
    stack, config, recorder, result = example
    daemonsets = _by_name(recorder, DS)
    images = {h.plain(r.inputs)["imageName"]: r for r in recorder.of_type(IMAGE)}
    for target in config[f"{h.NS}:targets"]:
        pod = daemonsets[f"nvidia-installer-{target['name']}"]["spec"]["template"]["spec"]
        image = pod["containers"][0]["image"]
        assert "@sha256:" in image, image
        assert result.outputs["targets"][target["name"]]["image"] == image
        if stack == "dev":
            assert image == target["image"]  # prebuilt reference, unchanged
            continue
        tag = f"{target['driverVersion']}-gl{target['glVersion']}-{target['flavour']}-{target['arch']}-"
        tag += target.get("moduleType", _nvidia_default_type(target["driverVersion"]))
        reg = images[f"registry.example.com/gpu/nvidia-driver:{tag}"]
        assert image == h.fake_digest(h.plain(reg.inputs)), "the pod must run the pushed digest, not the tag"


def test_stack_outputs_name_image_and_daemonset_per_target(example: Any) -> None:
    _, config, recorder, result = example
    names = [t["name"] for t in config[f"{h.NS}:targets"]]
    assert set(result.outputs["targets"]) == set(names)
    daemonsets = _by_name(recorder, DS)
    by_name = {t["name"]: t for t in config[f"{h.NS}:targets"]}
    for name in names:
        out = result.outputs["targets"][name]
        assert out["daemonSet"] == f"nvidia-installer-{name}"
        assert out["driverVersion"] == by_name[name]["driverVersion"]
        # The selection shown is the one the DaemonSet's affinity holds, expression by expression.
        (term,) = _terms(daemonsets[f"nvidia-installer-{name}"])
        shown = [
            f"{e['key']} {e['operator']}" + (f" [{', '.join(e['values'])}]" if "values" in e else "")
            for e in term
        ]
        assert out["nodeSelection"] == " AND ".join(shown)
    assert result.outputs["devicePluginDaemonSet"] == "nvidia-device-plugin"


def test_dev_builds_nothing_and_has_no_pull_secret() -> None:
    config, secret = h.stack_dict("dev")
    recorder, _ = h.run(config, secret, "dev")
    assert recorder.of_type(IMAGE) == []
    assert recorder.of_type(SECRET) == []
    for ds in _by_name(recorder, DS).values():
        assert "imagePullSecrets" not in ds["spec"]["template"]["spec"]


def test_prod_builds_each_target_with_its_build_args_and_pull_secret() -> None:
    config, secret = h.stack_dict("prod")
    recorder, _ = h.run(config, secret, "prod")
    builds = [h.plain(r.inputs) for r in recorder.of_type(IMAGE)]
    targets = config[f"{h.NS}:targets"]
    assert len(builds) == len(targets)  # the prod targets differ in every image input
    by_driver = {b["build"]["args"]["DRIVER_VERSION"]: b for b in builds}
    for target in targets:
        build = by_driver[target["driverVersion"]]["build"]
        assert build["args"] == {
            "ARCH": target["arch"],
            "DRIVER_VERSION": target["driverVersion"],
            "GL_VERSION": target["glVersion"],
            "KERNEL_FLAVOUR": target["flavour"],
            "MODULE_TYPE": target.get("moduleType", _nvidia_default_type(target["driverVersion"])),
            "LOAD_CHECK": "on",
            "DRIVER_SOURCE": "nvidia",
            "BUILDKIT_INLINE_CACHE": "1",  # the registry cache (docs/image.md), not a Dockerfile input
        }
        assert build["platform"] == f"linux/{target['arch']}"
        assert build["context"] == "image"
        assert build["dockerfile"] == "image/Dockerfile"
    (pull,) = [h.plain(r.inputs) for r in recorder.of_type(SECRET)]
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    for ds in _by_name(recorder, DS).values():
        assert ds["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": pull["metadata"]["name"]}]


def test_component_types_and_child_names_follow_the_convention() -> None:
    config, secret = h.stack_dict("prod")
    recorder, _ = h.run(config, secret, "prod")
    components = {r.name: r.typ for r in recorder.regs if not r.custom}
    assert components["registry"] == "nvidia-installer:pull_secret:PullSecret"
    assert components["device-plugin"] == "nvidia-installer:device_plugin:DevicePlugin"
    for target in config[f"{h.NS}:targets"]:
        assert components[f"installer-{target['name']}"] == "nvidia-installer:installer:Installer"
    customs = {r.name for r in recorder.regs if r.custom}
    for name, typ in components.items():
        assert typ.startswith("nvidia-installer:")
        assert any(child.startswith(f"{name}-") for child in customs), f"{name} has no {name}-<role> child"


def _sharing_targets(count: int, distinct: int) -> list[dict[str, Any]]:
    """`count` targets over `distinct` image combinations, each target on its own node pool."""
    drivers = h.checksummed("amd64")
    assert drivers, "image/checksums/nvidia-driver.sha256 lists no amd64 driver"
    combos = [
        ("1877.17", drivers[i % len(drivers)], "cloud" if i % 2 == 0 else "metal") for i in range(distinct)
    ]
    assert len(set(combos)) == distinct
    out = []
    for i in range(count):
        gl, driver, flavour = combos[i % distinct]
        pool = [
            {"key": "os-version", "operator": "In", "values": [gl]},
            {"key": "pool", "operator": "In", "values": [f"pool-{i}"]},
        ]
        out.append(h.target(f"t{i}", gl, driver, flavour=flavour, nodeSelector=pool))
    return out


@pytest.mark.parametrize(("count", "distinct"), [(1, 1), (6, 1), (6, 2), (9, 3)])
def test_targets_sharing_a_combination_share_one_image(count: int, distinct: int) -> None:
    config, secret = h.build_config(_sharing_targets(count, distinct))
    recorder, result = h.run(config, secret)
    builds = recorder.of_type(IMAGE)
    assert len(builds) == distinct
    digests = {result.outputs["targets"][f"t{i}"]["image"] for i in range(count)}
    assert len(digests) == distinct
    assert len(_by_name(recorder, DS)) == count + 1


def test_load_check_and_base_overrides_reach_the_build_args() -> None:
    driver = h.checksummed()[0]
    image = {
        "loadCheck": False,
        "buildBase": "mirror.test/kmodbuild:amd64-1877.17",
        "runtimeBase": "mirror.test/gl:1",
    }
    config, secret = h.build_config([h.target("a", "1877.17", driver)], image=image)
    recorder, _ = h.run(config, secret)
    (build,) = [h.plain(r.inputs)["build"]["args"] for r in recorder.of_type(IMAGE)]
    assert build["LOAD_CHECK"] == "off"
    assert build["BUILD_BASE"] == "mirror.test/kmodbuild:amd64-1877.17"
    assert build["BUILDER_BASE"] == "mirror.test/kmodbuild:amd64-1877.17"  # the stages that RUN
    assert build["RUNTIME_BASE"] == "mirror.test/gl:1"


def test_an_arm64_target_is_built_for_the_arm64_platform() -> None:
    """The image's target platform reaches BuildKit (pulumi-docker `platform`), which then runs every RUN
    stage on the builder's own platform and makes the final image arm64 (docs/image.md, "arm64"); the
    builder's base stays the Dockerfile's default (the builder arch's kmodbuild) unless buildBase is set."""
    (driver,) = h.checksummed("arm64")[:1]
    config, secret = h.build_config([h.target("a", "1877.17", driver, arch="arm64")])
    recorder, _ = h.run(config, secret)
    (build,) = [h.plain(r.inputs)["build"] for r in recorder.of_type(IMAGE)]
    assert build["platform"] == "linux/arm64"
    assert build["args"]["ARCH"] == "arm64"
    assert "BUILDER_BASE" not in build["args"] and "BUILD_BASE" not in build["args"]


def test_custom_node_selector_replaces_the_default_but_keeps_the_arch() -> None:
    driver = h.checksummed()[0]
    selector = [
        {
            "key": "feature.node.kubernetes.io/system-os_release.VERSION_ID",
            "operator": "In",
            "values": ["1877.17"],
        },
        {"key": "example.com/pool", "operator": "In", "values": ["a100"]},
    ]
    config, secret = h.build_config([h.target("a", "1877.17", driver, nodeSelector=selector)])
    recorder, _ = h.run(config, secret)
    (term,) = _terms(_by_name(recorder, DS)["nvidia-installer-a"])
    assert term == [*selector, {"key": ARCH_LABEL, "operator": "In", "values": ["amd64"]}]


def test_prebuilt_tag_without_digest_warns() -> None:
    config, secret = h.stack_dict("dev")
    config[f"{h.NS}:targets"][0]["image"] = "registry.example.com/gpu/nvidia-driver:latest"
    _, result = h.run(config, secret, "dev")
    (warning,) = [w for w in result.warnings if w.startswith("targets[")]
    assert warning.startswith("targets[0].image:") and "not digest-pinned" in warning
    assert "registry.example.com/gpu/nvidia-driver:latest@sha256:<digest>" in warning


def test_time_sharing_config_map_is_mounted_and_flagged() -> None:
    config, secret = h.stack_dict("prod")
    recorder, _ = h.run(config, secret, "prod")
    plugin = _by_name(recorder, DS)["nvidia-device-plugin"]["spec"]["template"]["spec"]
    (container,) = plugin["containers"]
    assert "-gpu-config=/etc/nvidia/gpu_config.json" in container["args"]
    volumes = {v["name"]: v for v in plugin["volumes"]}
    cm = _by_name(recorder, CM)[volumes["gpu-config"]["configMap"]["name"]]
    shared = config[f"{h.NS}:devicePlugin"]["timeSharing"]["maxSharedClientsPerGpu"]
    assert json.loads(cm["data"]["gpu_config.json"]) == {
        "GPUSharingConfig": {"GPUSharingStrategy": "time-sharing", "MaxSharedClientsPerGPU": shared}
    }
    assert {"name": "gpu-config", "mountPath": "/etc/nvidia", "readOnly": True} in container["volumeMounts"]


def test_module_parameters_become_modprobe_options() -> None:
    driver = h.checksummed()[0]
    params = {
        "nvidia": ["NVreg_EnableGpuFirmware=0", "NVreg_OpenRmEnableUnsupportedGpus=1"],
        "nvidia-uvm": [],
    }
    config, secret = h.build_config([h.target("a", "1877.17", driver)], moduleParameters=params)
    recorder, _ = h.run(config, secret)
    (cm,) = _by_name(recorder, CM).values()
    assert (
        cm["data"]["modprobe.conf"]
        == "options nvidia NVreg_EnableGpuFirmware=0 NVreg_OpenRmEnableUnsupportedGpus=1\n"
    )


def _nvidia_default_type(driver: str) -> str:
    """NVIDIA's default module type: open from driver branch 560 (installation guide), else proprietary."""
    return "open" if int(driver.split(".", maxsplit=1)[0]) >= 560 else "proprietary"
