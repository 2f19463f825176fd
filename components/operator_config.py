"""The `gpuOperator` stack settings: NVIDIA's GPU Operator on top of this project's driver
(`devicePlugin.provider: gpu-operator`). Shape and rules of the block itself; the rules that relate it to
other settings (the provider, the targets' node selection, render mode) are in components/config.py.

The chart keys these settings become are listed in components/operator_values.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from components.config_errors import ConfigRuleError

DEFAULT_OPERATOR_NAMESPACE = "gpu-operator"
DEFAULT_CHART_NAME = "gpu-operator"
# Helm reads a chart repository over http(s) or, for OCI registries, oci://.
_REPOSITORY_RE = re.compile(r"(https?|oci)://[^\s/]+(/[^\s]*)?")
# A chart version as Helm accepts it: semantic version, `v` prefix allowed (NVIDIA tags `v24.6.2`).
_CHART_VERSION_RE = re.compile(r"v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_CHART_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

CHART_FORM = (
    "{path: <directory holding Chart.yaml>} or {repository: <https:// or oci:// URL>, name?, version}"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=False)


class ChartConfig(_Model):
    """Where the GPU Operator chart comes from: a local chart directory, or a repository and a version."""

    path: str | None = Field(
        None, min_length=1, description="a local chart directory holding Chart.yaml (relative to the project)"
    )
    repository: str | None = Field(
        None, description="a chart repository URL like https://helm.ngc.nvidia.com/nvidia (or oci://...)"
    )
    name: str = Field(
        DEFAULT_CHART_NAME, description="the chart name in the repository (default gpu-operator)"
    )
    version: str | None = Field(
        None, description="the chart version, like v24.6.2 (required with repository)"
    )

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not _REPOSITORY_RE.fullmatch(value):
            raise ValueError("expected a chart repository URL starting with https://, http:// or oci://")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _CHART_NAME_RE.fullmatch(value):
            raise ValueError("expected a chart name: lowercase letters, digits and '-'")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and not _CHART_VERSION_RE.fullmatch(value):
            raise ValueError("expected a chart version like v24.6.2 (a semantic version, v prefix allowed)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.path is not None and self.repository is not None:
            raise ConfigRuleError(
                ["path"], f"{self.path!r} is set together with repository {self.repository!r}", CHART_FORM
            )
        if self.path is None and self.repository is None:
            raise ConfigRuleError([], "neither path nor repository is set", CHART_FORM)
        if self.repository is not None and self.version is None:
            # Without a version Helm installs whatever the repository calls latest today: not reproducible.
            raise ConfigRuleError(
                ["version"],
                f"missing while repository is {self.repository!r} (the newest chart would change without "
                "a diff)",
                "a chart version like v24.6.2",
            )
        if self.path is not None and self.version is not None:
            raise ConfigRuleError(
                ["version"],
                f"{self.version!r} is set for a local chart, whose version is in its own Chart.yaml",
                "no version with path",
            )
        if self.path is not None and not (Path(self.path) / "Chart.yaml").is_file():
            raise ConfigRuleError(
                ["path"],
                f"{self.path!r} holds no Chart.yaml (looked in {Path(self.path).resolve()})",
                "a chart directory (the unpacked gpu-operator chart, e.g. from `helm pull --untar`)",
            )
        return self


class MigConfig(_Model):
    """MIG (Multi-Instance GPU): how the device plugin names MIG devices, and whether the MIG manager runs."""

    strategy: Literal["none", "single", "mixed"] = Field(
        "none",
        description=(
            "none (MIG devices not advertised), single (every GPU of a node split alike, advertised as "
            "nvidia.com/gpu) or mixed (advertised as nvidia.com/mig-<profile>)"
        ),
    )
    manager: bool = Field(
        False,
        strict=True,
        description="true or false: run NVIDIA's MIG manager (applies MIG layouts by node label)",
    )

    @model_validator(mode="after")
    def _manager_needs_strategy(self) -> Self:
        if self.manager and self.strategy == "none":
            raise ConfigRuleError(
                ["manager"],
                "true with strategy 'none': the MIG manager would split GPUs the device plugin never "
                "advertises",
                "strategy single or mixed with manager true, or manager false",
            )
        return self


class TimeSlicingConfig(_Model):
    """GPU time-slicing in NVIDIA's device plugin: every GPU is advertised `replicas` times."""

    replicas: int = Field(
        ge=2, strict=True, description="an integer of at least 2 (containers sharing one GPU)"
    )


class GpuOperatorConfig(_Model):
    """NVIDIA's GPU Operator over this project's driver: its chart, namespace and the operands it runs."""

    chart: ChartConfig | None = Field(
        None, description=f"{CHART_FORM}; unset: no Helm release, the values are exported only"
    )
    namespace: str = Field(
        DEFAULT_OPERATOR_NAMESPACE,
        description="a DNS-1123 label, at most 63 characters (default gpu-operator)",
    )
    toolkit: bool = Field(
        True, strict=True, description="true or false: NVIDIA's container toolkit on the nodes"
    )
    cdi: bool = Field(True, strict=True, description="true or false: the toolkit injects GPUs through CDI")
    dcgm_exporter: bool = Field(
        True, strict=True, description="true or false: the DCGM exporter (GPU metrics)"
    )
    nfd: Literal["bundled", "external"] = Field(
        "bundled",
        description=(
            "bundled (the chart's Node Feature Discovery, run on the targets' nodes only) or external (NFD "
            "is deployed separately; the chart's is off)"
        ),
    )
    mig: MigConfig = Field(default_factory=MigConfig, description="{strategy?, manager?}")
    time_slicing: TimeSlicingConfig | None = Field(None, description="{replicas: N}")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL_RE.fullmatch(value):
            raise ValueError("expected a DNS-1123 label, at most 63 characters")
        return value

    @model_validator(mode="after")
    def _time_slicing_with_mig(self) -> Self:
        if self.time_slicing is not None and self.mig.strategy == "mixed":
            raise ConfigRuleError(
                ["timeSlicing"],
                "set with mig.strategy 'mixed': it shares the resource nvidia.com/gpu only, and under mixed "
                "the MIG devices are nvidia.com/mig-<profile> resources it would leave unshared",
                "mig.strategy none or single with timeSlicing, or no timeSlicing",
            )
        return self
