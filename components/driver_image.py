"""DriverImage: builds and pushes one driver image (one distinct driver/GL/arch/flavour/module-type)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.config import ImageConfig, RegistryConfig
from components.image_key import ImageKey
from components.specs import image_name, image_tag

# Paths relative to the project directory, where Pulumi runs the program (pulumi-docker resolves both
# against the working directory).
BUILD_CONTEXT = "image"
DOCKERFILE = "image/Dockerfile"
# BuildKit writes its cache metadata into the pushed image (inline cache). A later build of the same
# image key names that image as its cache source: BuildKit matches the final stage's layers by the
# definition of every stage before them (Dockerfile, build arguments, checksums of the copied files), so an
# unchanged driver is neither downloaded nor compiled nor load-checked again, on any builder that can pull
# from the registry (docs/image.md, "Registry cache").
INLINE_CACHE_ARGS = {"BUILDKIT_INLINE_CACHE": "1"}


@dataclass(frozen=True)
class DriverImageArgs:
    """What one image build needs: its identity (the build inputs), the registry and the (secret)
    registry password."""

    key: ImageKey
    registry: RegistryConfig
    password: pulumi.Output[str] | None
    settings: ImageConfig


def build_args(args: DriverImageArgs) -> dict[str, str]:
    """The Dockerfile build arguments, exactly as docs/architecture.md lists them."""
    key = args.key
    values = {
        "ARCH": key.arch,
        "DRIVER_VERSION": key.driver_version,
        "GL_VERSION": key.gl_version,
        "KERNEL_FLAVOUR": key.flavour,
        "MODULE_TYPE": key.module_type,
        "LOAD_CHECK": "on" if args.settings.load_check else "off",
        # The product path: NVIDIA's checksum-verified .run (the Debian source exists for tests only).
        "DRIVER_SOURCE": "nvidia",
    }
    if args.settings.build_base is not None:
        values["BUILD_BASE"] = args.settings.build_base
        # Every RUN happens in BUILDER_BASE (the builder's kmodbuild; image/Dockerfile defaults it to
        # kmodbuild:<BUILDARCH>-<gl>): a mirrored build base stands for it too, as it did before the
        # stages moved to the build platform. Right whenever the builder's architecture is the target's;
        # a cross build (arm64 target, amd64 builder) with a mirror needs its own key (docs/image.md).
        values["BUILDER_BASE"] = args.settings.build_base
    if args.settings.runtime_base is not None:
        values["RUNTIME_BASE"] = args.settings.runtime_base
    return values


class DriverImage(pulumi.ComponentResource):
    """One driver image built from image/Dockerfile and pushed; `repo_digest` pins its content."""

    image_name: str
    repo_digest: pulumi.Output[str]

    def __init__(self, name: str, args: DriverImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nvidia-installer:driver_image:DriverImage", name, None, opts)
        self.image_name = image_name(args.registry.server, args.registry.repository, image_tag(args.key))
        image = docker.Image(
            f"{name}-image",
            image_name=self.image_name,
            build=docker.DockerBuildArgs(
                context=BUILD_CONTEXT,
                dockerfile=DOCKERFILE,
                platform=f"linux/{args.key.arch}",
                args={**build_args(args), **INLINE_CACHE_ARGS},
                builder_version=docker.BuilderVersion.BUILDER_BUILD_KIT,
                cache_from=docker.CacheFromArgs(images=[self.image_name]),
            ),
            registry=self._registry(args),
            skip_push=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.repo_digest = image.repo_digest
        self.register_outputs({"image_name": self.image_name, "repo_digest": self.repo_digest})

    @staticmethod
    def _registry(args: DriverImageArgs) -> docker.RegistryArgs:
        if args.password is None:
            return docker.RegistryArgs(server=args.registry.server)
        return docker.RegistryArgs(
            server=args.registry.server,
            username=args.registry.username,
            password=pulumi.Output.secret(args.password),
        )
