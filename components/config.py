"""The stack configuration as pydantic models: every rule is checked here, before any resource exists.

Field descriptions double as the "expected" part of error messages (components/config_errors.py), and
docs/configuration.md documents the same keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

import pulumi
from pydantic import BaseModel, ConfigDict, Field, InstanceOf, field_validator, model_validator
from pydantic.alias_generators import to_camel

from components import selection
from components.checksums import CHECKSUM_FILE, NVIDIA_ARCH, available_checksums
from components.compatibility import FIRST_OPEN_MODULE_BRANCH, OPEN_BY_DEFAULT_BRANCH, incompatibility
from components.config_errors import ConfigRuleError
from components.image_key import ImageKey
from components.operator_config import GpuOperatorConfig
from components.versions import (
    DRIVER_VERSION_FORM,
    GL_VERSION_FORM,
    driver_branch,
    parse_driver_version,
    parse_gl_version,
)

PROJECT = "nvidia-installer"

DEFAULT_DEVICE_PLUGIN_IMAGE = "gcr.io/gke-release/nvidia-gpu-device-plugin:1.0.25-gke.56"

# Target names end up in DaemonSet names (`nvidia-installer-<name>`) and label values (max 63 characters).
MAX_TARGET_NAME = 40
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_PREFIX_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_REGISTRY_RE = re.compile(
    r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*(:[0-9]+)?"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
# A container image reference (distribution/reference grammar, simplified): [host[:port]/]path[:tag][@digest]
_IMAGE_RE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)
_DIGEST_RE = re.compile(r"@sha256:[a-f0-9]{64}\Z")
_USERNAME_RE = re.compile(r"[^:\s]+")
_MODULE_PARAM_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*=\S+")

DNS_LABEL_FORM = "a DNS-1123 label (lowercase letters, digits and '-', starting and ending alphanumeric)"
IMAGE_FORM = "an image reference like registry.example.com/repo/name:tag or ...@sha256:<64 hex>"


def is_digest_pinned(image: str) -> bool:
    """Whether an image reference names its content by digest."""
    return _DIGEST_RE.search(image) is not None


def _check_image(value: str | None) -> str | None:
    if value is not None and not _IMAGE_RE.fullmatch(value):
        raise ValueError(f"expected {IMAGE_FORM}")
    return value


@dataclass(frozen=True)
class SecretRef:
    """A secret stack config key; its value is read only as a secret Output, never as plain text."""

    key: str

    def output(self) -> pulumi.Output[str]:
        """The value as a secret Output (pulumi.Config marks it secret)."""
        return pulumi.Config(PROJECT).require_secret(self.key)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=False)


class ClusterConfig(_Model):
    """Where the objects go: a kubeconfig context, or a directory to render manifests into."""

    context: str | None = Field(None, min_length=1, description="the name of a kubeconfig context")
    render_directory: str | None = Field(
        None, min_length=1, description="a directory path the Kubernetes provider writes manifests to"
    )


class RegistryConfig(_Model):
    """The registry driver images are pushed to and pulled from."""

    server: str = Field(description="a registry host[:port] like registry.example.com")
    repository: str = Field(description="a lowercase repository path like gpu/nvidia-driver")
    username: str | None = Field(
        None, min_length=1, description="the registry user name (no ':' and no whitespace)"
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_inline_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ConfigRuleError(
                ["password"],
                "a password inside `registry` would be stored in plain text (value not shown)",
                "the separate secret key: pulumi config set --secret registryPassword <password>",
            )
        return data

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        if not _REGISTRY_RE.fullmatch(value):
            raise ValueError("expected a registry host[:port] like registry.example.com (no scheme, no path)")
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        # The pull Secret's `auth` is base64("<user>:<password>"), split at the first ':' by the kubelet.
        if value is not None and not _USERNAME_RE.fullmatch(value):
            raise ValueError(
                "expected a registry user name without ':' or whitespace (the pull Secret's auth is "
                "user:password, split at the first ':')"
            )
        return value

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not _REPOSITORY_RE.fullmatch(value):
            raise ValueError("expected a lowercase repository path like gpu/nvidia-driver")
        return value


class ImageConfig(_Model):
    """How driver images come to be: built and pushed here, or prebuilt references per target."""

    build: bool = Field(True, description="true (build and push) or false (use each target's image)")
    load_check: bool = Field(True, description="true or false: boot the target kernel under QEMU at build")
    build_base: str | None = Field(None, description=f"{IMAGE_FORM} (compile stage base override)")
    runtime_base: str | None = Field(None, description=f"{IMAGE_FORM} (runtime stage base override)")

    @field_validator("build_base", "runtime_base")
    @classmethod
    def _bases(cls, value: str | None) -> str | None:
        return _check_image(value)


class NodeRequirement(_Model):
    """One node label expression (a Kubernetes nodeSelectorRequirement)."""

    key: str = Field(description="a label key like gpu or example.com/pool")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="one of In, NotIn, Exists, DoesNotExist"
    )
    values: list[str] | None = Field(None, description="label values (only with In and NotIn)")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        prefix, _, name = value.rpartition("/")
        prefix_ok = not prefix or (len(prefix) <= 253 and _LABEL_PREFIX_RE.fullmatch(prefix))
        if not (prefix_ok and len(name) <= 63 and _LABEL_NAME_RE.fullmatch(name)):
            raise ValueError(
                "expected a label key: [dns-prefix/]name, name up to 63 alphanumerics, '-', '_', '.'"
            )
        return value

    @field_validator("values")
    @classmethod
    def _values(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if len(item) > 63 or (item and not _LABEL_NAME_RE.fullmatch(item)):
                raise ValueError(
                    f"{item!r} is not a label value; expected up to 63 alphanumerics, '-', '_', '.'"
                )
        return value

    @model_validator(mode="after")
    def _values_match_operator(self) -> Self:
        with_values = self.operator in ("In", "NotIn")
        if with_values and not self.values:
            raise ConfigRuleError(
                ["values"], f"{self.operator} needs values", "a non-empty list of label values"
            )
        if not with_values and self.values is not None:
            raise ConfigRuleError(["values"], f"{self.operator} takes no values", "no `values` key")
        return self

    def requirement(self) -> selection.Requirement:
        """The pure selection form."""
        return selection.Requirement(self.key, self.operator, tuple(self.values or ()))


class TargetConfig(_Model):
    """One GPU node population: what to build for it and how its nodes are selected."""

    name: str = Field(description=f"{DNS_LABEL_FORM}, at most {MAX_TARGET_NAME} characters")
    gl_version: str = Field(description=GL_VERSION_FORM)
    arch: Literal["amd64", "arm64"] = Field(description="amd64 or arm64")
    flavour: Literal["cloud", "metal"] = Field(description="cloud or metal")
    driver_version: str = Field(description=DRIVER_VERSION_FORM)
    module_type: Literal["auto", "open", "proprietary"] | None = Field(
        None,
        description=(
            "auto (both types, the node picks), open or proprietary; unset: open from driver branch "
            f"{OPEN_BY_DEFAULT_BRANCH}, proprietary before"
        ),
    )
    node_selector: list[NodeRequirement] | None = Field(
        None, min_length=1, description="a non-empty list of {key, operator, values?} label expressions"
    )
    image: str | None = Field(None, description=f"{IMAGE_FORM} (only with image.build=false)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > MAX_TARGET_NAME or not _DNS_LABEL_RE.fullmatch(value):
            raise ValueError(f"expected {DNS_LABEL_FORM}, at most {MAX_TARGET_NAME} characters")
        return value

    @field_validator("gl_version")
    @classmethod
    def _gl_version(cls, value: str) -> str:
        parse_gl_version(value)
        return value

    @field_validator("driver_version")
    @classmethod
    def _driver_version(cls, value: str) -> str:
        parse_driver_version(value)
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return _check_image(value)

    @model_validator(mode="after")
    def _known_incompatibility(self) -> Self:
        found = incompatibility(self.driver_version, self.gl_version)
        if found is not None:
            raise ConfigRuleError(
                ["driverVersion"],
                f"{self.driver_version!r} on Garden Linux {self.gl_version!r} cannot work: {found.reason}",
                f"a driver branch other than {found.branch} for this Garden Linux version",
            )
        return self

    @model_validator(mode="after")
    def _open_modules_exist(self) -> Self:
        if self.module_type == "open" and driver_branch(self.driver_version) < FIRST_OPEN_MODULE_BRANCH:
            raise ConfigRuleError(
                ["moduleType"],
                f"'open' with driver {self.driver_version!r}: NVIDIA's open modules start with branch "
                f"{FIRST_OPEN_MODULE_BRANCH}",
                f"proprietary or auto, or a driver of branch {FIRST_OPEN_MODULE_BRANCH} or later",
            )
        return self

    @model_validator(mode="after")
    def _selection_matches_something(self) -> Self:
        if not selection.satisfiable(self.selection()):
            described = " AND ".join(r.describe() for r in self.selection())
            raise ConfigRuleError(
                ["nodeSelector"],
                f"no node can match {described} (the arch label is always added)",
                "label expressions that some node can satisfy",
            )
        return self

    @model_validator(mode="after")
    def _selection_pins_version_and_arch(self) -> Self:
        # An image is built for one Garden Linux kernel and one arch: on any other node it cannot load.
        full = self.selection()
        problem = selection.version_problem(full, self.gl_version)
        if problem is None and not selection.pins(full, selection.ARCH_LABEL, self.arch):
            problem = f"it can match nodes whose {selection.ARCH_LABEL} is not {self.arch}"
        if problem is not None:
            described = " AND ".join(r.describe() for r in full)
            raise ConfigRuleError(
                ["nodeSelector"],
                f"{described} does not fit the nodes this target's image is built for (Garden Linux "
                f"{self.gl_version}, {self.arch}): {problem}",
                f"an expression `{selection.OS_VERSION_LABEL} In [{self.gl_version}]` (or "
                f"`{selection.NFD_VERSION_LABEL} In [{self.gl_version}]`) in nodeSelector, "
                "or no nodeSelector",
            )
        return self

    def built_module_type(self) -> str:
        """The module types the image holds: the setting, or NVIDIA's default for the driver branch."""
        if self.module_type is not None:
            return self.module_type
        return "open" if driver_branch(self.driver_version) >= OPEN_BY_DEFAULT_BRANCH else "proprietary"

    def node_module_type(self) -> str:
        """What the node installer is told: the setting, else `auto` (it picks the type the GPUs need and
        says which type is missing when the image lacks it, e.g. a pre-Turing GPU under an open image)."""
        return self.module_type or "auto"

    def module_type_note(self) -> str | None:
        """Said at preview when the default chose the module type (None when the stack set it)."""
        if self.module_type is not None:
            return None
        built = self.built_module_type()
        if built == "open":
            return (
                f"target {self.name}: moduleType not set: building the open modules only (NVIDIA's default "
                f"from driver branch {OPEN_BY_DEFAULT_BRANCH}; GPUs older than Turing need the proprietary "
                "ones: set moduleType: auto to ship both)"
            )
        return (
            f"target {self.name}: moduleType not set: building the proprietary modules only (driver branch "
            f"{driver_branch(self.driver_version)} is older than {OPEN_BY_DEFAULT_BRANCH}, NVIDIA's first "
            "with open modules by default)"
        )

    def selection(self) -> tuple[selection.Requirement, ...]:
        """The full node selection of this target (user expressions or the default, plus the arch)."""
        user = [r.requirement() for r in self.node_selector] if self.node_selector else None
        return selection.target_selection(self.arch, user, self.gl_version)

    def image_key(self) -> ImageKey:
        """What the driver image depends on: targets with equal keys share one image."""
        return ImageKey(
            driver_version=self.driver_version,
            gl_version=self.gl_version,
            arch=self.arch,
            flavour=self.flavour,
            module_type=self.built_module_type(),
        )


class TimeSharingConfig(_Model):
    """GPU time-sharing of GKE's device plugin (several containers share one GPU)."""

    # GKE documents 2 to 48 clients per GPU for time-sharing
    # (cloud.google.com/kubernetes-engine/docs/how-to/timesharing-gpus).
    max_shared_clients_per_gpu: int = Field(
        ge=2, le=48, strict=True, description="an integer from 2 to 48 (containers sharing one GPU)"
    )


Provider = Literal["gke", "gpu-operator"]
GKE: Provider = "gke"
GPU_OPERATOR: Provider = "gpu-operator"


class DevicePluginConfig(_Model):
    """Who advertises the GPUs: GKE's device plugin (a DaemonSet declared here, with its image and sharing
    options) or NVIDIA's GPU Operator (settings under `gpuOperator`)."""

    provider: Provider = Field(
        GKE, description="gke (GKE's device plugin, the default) or gpu-operator (NVIDIA's GPU Operator)"
    )
    image: str = Field(DEFAULT_DEVICE_PLUGIN_IMAGE, description=f"{IMAGE_FORM} (GKE's plugin only)")
    time_sharing: TimeSharingConfig | None = Field(
        None, description="{maxSharedClientsPerGpu: N} (GKE's plugin only)"
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return _check_image(value)


_PARAMS_FORM = "a list of NAME=VALUE module parameters like NVreg_EnableGpuFirmware=0"


class ModuleParametersConfig(_Model):
    """Kernel module parameters, written to the installer's modprobe.conf."""

    nvidia: list[str] = Field(default_factory=list, description=_PARAMS_FORM)
    nvidia_uvm: list[str] = Field(default_factory=list, alias="nvidia-uvm", description=_PARAMS_FORM)

    @field_validator("nvidia", "nvidia_uvm")
    @classmethod
    def _params(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _MODULE_PARAM_RE.fullmatch(item):
                raise ValueError(f"{item!r} is not NAME=VALUE; expected {_PARAMS_FORM}")
        return value

    def by_module(self) -> dict[str, list[str]]:
        """Module name -> parameters, in a fixed order."""
        return {"nvidia": list(self.nvidia), "nvidia-uvm": list(self.nvidia_uvm)}


_PERCENT_RE = re.compile(r"^([1-9][0-9]?|100)%$")
MAX_UNAVAILABLE_FORM = (
    "an integer of 1 or more (nodes), or a percentage of the target's nodes from '1%' to '100%' "
    "(rounded up, so at least one node)"
)


DRAIN_MODE_FORM = "none (wait for GPU jobs to end, the default) or evict (cordon and evict GPU pods)"


class DrainConfig(_Model):
    """Whether an installer that finds its node's GPUs busy drains the node (cordon, evict the GPU pods
    through the Eviction API, swap, uncordon) or only waits for the jobs to end (docs/operations.md)."""

    mode: Literal["none", "evict"] = Field("none", description=DRAIN_MODE_FORM)
    timeout_minutes: int = Field(
        15,
        ge=1,
        strict=True,
        description="an integer of 1 or more: minutes an installer keeps evicting (PodDisruptionBudgets "
        "may refuse) before it stops (default 15; only with mode evict)",
    )

    @model_validator(mode="after")
    def _timeout_needs_eviction(self) -> Self:
        if self.mode == "none" and "timeout_minutes" in self.model_fields_set:
            raise ConfigRuleError(
                ["timeoutMinutes"],
                f"{self.timeout_minutes!r} is set while mode is 'none' (nothing is drained, so nothing would "
                "time out)",
                "mode evict with it, or no timeoutMinutes",
            )
        return self

    @property
    def evicts(self) -> bool:
        """Whether installers cordon their node and evict its GPU pods."""
        return self.mode == "evict"


class RolloutConfig(_Model):
    """How a driver change reaches the nodes: the installers' rolling update (docs/operations.md)."""

    max_unavailable: Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=_PERCENT_RE.pattern)] = Field(
        1,
        description=f"{MAX_UNAVAILABLE_FORM}: how many nodes of a target change driver at once (default 1)",
    )
    timeout_minutes: int = Field(
        30,
        ge=1,
        strict=True,
        description="an integer of 1 or more: minutes `pulumi up` follows a target's rollout before it fails "
        "(default 30)",
    )
    drain: DrainConfig = Field(
        default_factory=DrainConfig, description="{mode?: none|evict, timeoutMinutes?} (default: no drain)"
    )

    @field_validator("max_unavailable", mode="before")
    @classmethod
    def _max_unavailable(cls, value: Any) -> Any:
        # bool is an int in Python: `true` must not pass as one node.
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        if isinstance(value, str) and _PERCENT_RE.fullmatch(value):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 1:
            raise ValueError(
                f"expected {MAX_UNAVAILABLE_FORM}; 0 or below would let no node change (the API server "
                "refuses maxUnavailable 0 beside maxSurge 0)"
            )
        raise ValueError(f"expected {MAX_UNAVAILABLE_FORM}")


class StackConfig(_Model):
    """The whole validated configuration of one stack (one cluster)."""

    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="{context?, renderDirectory?}")
    kubeconfig: InstanceOf[SecretRef] | None = Field(
        None, description="a kubeconfig set with `pulumi config set --secret kubeconfig`"
    )
    namespace: str = Field("kube-system", description=f"{DNS_LABEL_FORM} (default kube-system)")
    registry: RegistryConfig | None = Field(None, description="{server, repository, username?}")
    registry_password: InstanceOf[SecretRef] | None = Field(
        None, description="a secret set with `pulumi config set --secret registryPassword`"
    )
    image: ImageConfig = Field(
        default_factory=ImageConfig, description="{build?, loadCheck?, buildBase?, runtimeBase?}"
    )
    targets: list[TargetConfig] = Field(min_length=1, description="a non-empty list of targets")
    device_plugin: DevicePluginConfig = Field(
        default_factory=DevicePluginConfig, description="{provider?, image?, timeSharing?}"
    )
    gpu_operator: GpuOperatorConfig | None = Field(
        None,
        description=(
            "{chart?, namespace?, toolkit?, cdi?, dcgmExporter?, nfd?, mig?, timeSlicing?} "
            "(only with devicePlugin.provider gpu-operator)"
        ),
    )
    module_parameters: ModuleParametersConfig = Field(
        default_factory=ModuleParametersConfig, description="{nvidia?: [...], nvidia-uvm?: [...]}"
    )
    rollout: RolloutConfig = Field(
        default_factory=RolloutConfig, description="{maxUnavailable?, timeoutMinutes?, drain?}"
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL_RE.fullmatch(value):
            raise ValueError(f"expected {DNS_LABEL_FORM}, at most 63 characters")
        return value

    @model_validator(mode="after")
    def _one_cluster_target(self) -> Self:
        render = self.cluster.render_directory
        if render is not None and (self.cluster.context is not None or self.kubeconfig is not None):
            raise ConfigRuleError(
                ["cluster", "renderDirectory"],
                f"{render!r} is set together with a context or kubeconfig",
                "either renderDirectory (write manifests) or context/kubeconfig (apply to a cluster)",
            )
        if render is not None and self.registry_password is not None:
            # The Kubernetes provider's render mode (renderYamlToDirectory) writes Secret data unencrypted.
            raise ConfigRuleError(
                ["cluster", "renderDirectory"],
                f"{render!r} is set together with registryPassword: render mode would write the pull "
                "Secret to disk in plain text",
                "renderDirectory without registry credentials, or a context/kubeconfig to apply to",
            )
        if render is None and self.cluster.context is None and self.kubeconfig is None:
            raise ConfigRuleError(
                ["cluster"],
                "no cluster given",
                "cluster.context, the secret key kubeconfig, or cluster.renderDirectory",
            )
        return self

    @model_validator(mode="after")
    def _credentials_pair(self) -> Self:
        username = self.registry.username if self.registry else None
        if username is not None and self.registry_password is None:
            raise ConfigRuleError(
                ["registryPassword"],
                f"missing although registry.username is {username!r}",
                "pulumi config set --secret registryPassword <password>",
            )
        if self.registry_password is not None and username is None:
            raise ConfigRuleError(
                ["registry", "username"],
                "missing although registryPassword is set",
                "the user name that goes with registryPassword",
            )
        return self

    @model_validator(mode="after")
    def _image_source(self) -> Self:
        if self.image.build and self.registry is None:
            raise ConfigRuleError(
                ["registry"],
                "missing while image.build is true (images must be pushed somewhere)",
                "{server, repository, username} or image.build=false with an image per target",
            )
        for index, target in enumerate(self.targets):
            if self.image.build and target.image is not None:
                raise ConfigRuleError(
                    ["targets", index, "image"],
                    f"{target.image!r} is set while image.build is true",
                    "no image per target when building, or image.build=false",
                )
            if not self.image.build and target.image is None:
                raise ConfigRuleError(
                    ["targets", index, "image"],
                    "missing while image.build is false",
                    f"{IMAGE_FORM}, ideally digest-pinned",
                )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: dict[str, int] = {}
        for index, target in enumerate(self.targets):
            if target.name in seen:
                raise ConfigRuleError(
                    ["targets", index, "name"],
                    f"{target.name!r} is already used by targets[{seen[target.name]}]",
                    "a name unique among targets",
                )
            seen[target.name] = index
        return self

    @model_validator(mode="after")
    def _disjoint_selections(self) -> Self:
        selections = [t.selection() for t in self.targets]
        for i, first in enumerate(self.targets):
            for j in range(i + 1, len(self.targets)):
                second = self.targets[j]
                if selection.can_overlap(selections[i], selections[j]):
                    raise ConfigRuleError(
                        ["targets", j, "nodeSelector"],
                        f"targets[{i}] ({first.name!r}) and targets[{j}] ({second.name!r}) can select "
                        "the same node, which would get two drivers",
                        "selections that some label makes disjoint: different os-version/glVersion or arch, "
                        "or a nodeSelector with disjoint In values, In vs NotIn, or Exists vs DoesNotExist",
                    )
        return self

    @model_validator(mode="after")
    def _driver_checksums(self) -> Self:
        if not self.image.build:
            return self
        known = available_checksums()
        for index, target in enumerate(self.targets):
            if (target.arch, target.driver_version) not in known:
                arch = NVIDIA_ARCH[target.arch]
                raise ConfigRuleError(
                    ["targets", index, "driverVersion"],
                    f"{target.driver_version!r} has no {arch} checksum in {CHECKSUM_FILE.name}, so the build "
                    "cannot verify the download",
                    f"a version listed for {arch} there ({_listed(known, target.arch)}), or add its checksum "
                    "(docs/image.md)",
                )
        return self

    @model_validator(mode="after")
    def _provider_settings(self) -> Self:
        plugin = self.device_plugin
        if plugin.provider == GKE:
            if self.gpu_operator is not None:
                raise ConfigRuleError(
                    ["gpuOperator"],
                    "set while devicePlugin.provider is 'gke' (GKE's plugin would run and the block be "
                    "ignored)",
                    "devicePlugin.provider gpu-operator with it, or no gpuOperator block",
                )
            return self
        # The GPU Operator brings NVIDIA's device plugin: GKE's plugin settings would silently do nothing.
        if "image" in plugin.model_fields_set:
            raise ConfigRuleError(
                ["devicePlugin", "image"],
                f"{plugin.image!r} is set while devicePlugin.provider is 'gpu-operator' (the operator runs "
                "NVIDIA's device plugin, not GKE's)",
                "no devicePlugin.image in operator mode (the chart's values choose the operator's images)",
            )
        if plugin.time_sharing is not None:
            raise ConfigRuleError(
                ["devicePlugin", "timeSharing"],
                "set while devicePlugin.provider is 'gpu-operator' (it configures GKE's plugin only)",
                "gpuOperator.timeSlicing.replicas: N in operator mode",
            )
        return self

    @model_validator(mode="after")
    def _operator_chart_applies(self) -> Self:
        operator = self.gpu_operator
        render = self.cluster.render_directory
        if operator is not None and operator.chart is not None and render is not None:
            # The Kubernetes provider's render mode writes manifests; a Helm release needs a cluster.
            raise ConfigRuleError(
                ["gpuOperator", "chart"],
                f"set while cluster.renderDirectory is {render!r}: a Helm release cannot be rendered to "
                "files",
                "no chart in render mode (the values are exported as gpuOperatorValues), or a cluster",
            )
        return self

    @model_validator(mode="after")
    def _nfd_can_label_the_targets(self) -> Self:
        operator = self.operator_settings()
        if operator is None or operator.nfd != "bundled":
            return self
        for index, target in enumerate(self.targets):
            nfd_keys = [r.key for r in target.selection() if r.key.startswith(selection.NFD_LABEL_PREFIX)]
            if nfd_keys:
                # The bundled NFD worker runs only where the targets select; labels only it sets could never
                # appear there.
                raise ConfigRuleError(
                    ["gpuOperator", "nfd"],
                    f"'bundled' while targets[{index}] ({target.name!r}) selects nodes by {nfd_keys[0]}, a "
                    "label Node Feature Discovery sets: the bundled NFD runs only on the targets' nodes, "
                    "so it would never label them",
                    "nfd: external (NFD deployed separately labels the nodes), or target selections by "
                    "labels NFD does not set (the default gpu and os-version)",
                )
        return self

    def operator_settings(self) -> GpuOperatorConfig | None:
        """The GPU Operator settings in operator mode (the defaults when the block is left out), else None."""
        if self.device_plugin.provider != GPU_OPERATOR:
            return None
        return self.gpu_operator or GpuOperatorConfig()

    def image_keys(self) -> list[ImageKey]:
        """The distinct driver images, in first-use order."""
        return list(dict.fromkeys(t.image_key() for t in self.targets))


def _listed(known: frozenset[tuple[str, str]], arch: str) -> str:
    versions = sorted(v for a, v in known if a == arch)
    return ", ".join(versions) if versions else "none yet"
