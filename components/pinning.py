"""Images used by tag: a re-pushed tag changes what runs on the nodes (or what an image is built from)
without any diff in the stack. Every image the stack uses by tag gets one warning at preview and in the
offline render, with the digest-pinned form to use instead. Pure: a validated config in, messages out."""

from __future__ import annotations

from components.config import DEFAULT_DEVICE_PLUGIN_IMAGE, GKE, StackConfig, is_digest_pinned

# The build bases image/Dockerfile uses when image.buildBase / image.runtimeBase are not set (its ARG
# defaults; a test compares them).
DEFAULT_BUILD_BASE = "ghcr.io/gardenlinux/gardenlinux/kmodbuild:{arch}-{gl}"
DEFAULT_RUNTIME_BASE = "ghcr.io/gardenlinux/gardenlinux:{gl}"


def pinned_form(image: str) -> str:
    """The reference to use instead: the same name and tag, plus the content digest."""
    return f"{image}@sha256:<digest>"


def unpinned_warning(setting: str, image: str, changes: str, note: str = "") -> str:
    """One warning: the setting, the image, what a re-pushed tag would change, and the pinned form."""
    return (
        f"{setting}: {image!r}{note} is not digest-pinned: a re-pushed tag changes {changes} without a diff; "
        f"pin it as {pinned_form(image)}"
    )


def _targets(config: StackConfig) -> list[str]:
    return [
        unpinned_warning(f"targets[{index}].image", target.image, f"the driver of target {target.name!r}")
        for index, target in enumerate(config.targets)
        if target.image is not None and not is_digest_pinned(target.image)
    ]


def _device_plugin(config: StackConfig) -> list[str]:
    if config.device_plugin.provider != GKE:
        # The GPU Operator runs NVIDIA's plugin (its images are the chart's): GKE's image is not used.
        return []
    image = config.device_plugin.image
    if is_digest_pinned(image):
        return []
    note = " (the default)" if image == DEFAULT_DEVICE_PLUGIN_IMAGE else ""
    return [unpinned_warning("devicePlugin.image", image, "the device plugin on every GPU node", note)]


def _bases(config: StackConfig) -> list[str]:
    if not config.image.build:
        return []
    keys = config.image_keys()
    settings = [
        (
            "image.buildBase",
            config.image.build_base,
            {DEFAULT_BUILD_BASE.format(arch=k.arch, gl=k.gl_version) for k in keys},
        ),
        (
            "image.runtimeBase",
            config.image.runtime_base,
            {DEFAULT_RUNTIME_BASE.format(gl=k.gl_version) for k in keys},
        ),
    ]
    warnings = []
    for setting, configured, defaults in settings:
        images = [configured] if configured is not None else sorted(defaults)
        note = "" if configured is not None else f" (image/Dockerfile's default while {setting} is not set)"
        warnings += [
            unpinned_warning(setting, image, "the driver images built from it", note)
            for image in images
            if not is_digest_pinned(image)
        ]
    return warnings


def unpinned_images(config: StackConfig) -> list[str]:
    """One warning per image the stack uses by tag: prebuilt driver images, GKE's device plugin (when it
    runs), and the build bases of the images built here."""
    return [*_targets(config), *_device_plugin(config), *_bases(config)]
