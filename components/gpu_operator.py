"""GpuOperator: NVIDIA's GPU Operator over this project's driver (`devicePlugin.provider: gpu-operator`).

Declares the operator's namespace, the time-slicing ConfigMap when sharing is set, and, with a chart
reference, a Helm release of the chart with the values of components/operator_values.py. Without a chart
reference it declares no release: the values are exported for `helm install`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import operator_values
from components.operator_config import ChartConfig, GpuOperatorConfig
from components.selection import Requirement

RELEASE_NAME = "gpu-operator"


@dataclass(frozen=True)
class GpuOperatorArgs:
    """The operator settings, every target's node selection and the installers the release waits for."""

    settings: GpuOperatorConfig
    selections: Sequence[Sequence[Requirement]]
    installers: Sequence[pulumi.Resource]


def chart_arguments(chart: ChartConfig) -> dict[str, Any]:
    """The Release arguments that name the chart: a local directory, or repository, name and version."""
    if chart.path is not None:
        return {"chart": chart.path}
    return {
        "chart": chart.name,
        "version": chart.version,
        "repository_opts": k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository),
    }


def install_note(settings: GpuOperatorConfig) -> str:
    """Said at preview when no chart reference is given: how to install the chart with these values."""
    return (
        "devicePlugin.provider is gpu-operator without gpuOperator.chart: no Helm release is declared. "
        "Install the chart with the generated values: pulumi stack output gpuOperatorValues --json > "
        f"gpu-operator-values.json && helm upgrade --install {RELEASE_NAME} nvidia/gpu-operator "
        f"--namespace {settings.namespace} --version <chart version> --values gpu-operator-values.json "
        "(or set gpuOperator.chart to let Pulumi install it)"
    )


class GpuOperator(pulumi.ComponentResource):
    """The operator's namespace, its time-slicing ConfigMap and, with a chart reference, its Helm release."""

    values: dict[str, Any]
    release_name: str | None

    def __init__(self, name: str, args: GpuOperatorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nvidia-installer:gpu_operator:GpuOperator", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        ns_spec = operator_values.namespace(settings)
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=ns_spec["metadata"], opts=child)
        depends: list[pulumi.Resource] = [ns, *args.installers]
        cm_spec = operator_values.time_slicing_config_map(settings)
        plugin_config: str | None = None
        if cm_spec is not None:
            plugin_config = cm_spec["metadata"]["name"]
            depends.append(
                k8s.core.v1.ConfigMap(
                    f"{name}-time-slicing",
                    metadata=cm_spec["metadata"],
                    data=cm_spec["data"],
                    immutable=cm_spec["immutable"],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]),
                )
            )
        self.values = operator_values.values(settings, args.selections, plugin_config)
        operator_values.check(self.values, args.selections)
        self.release_name = None
        if settings.chart is None:
            pulumi.log.info(install_note(settings))
        else:
            # The operator starts its validator and plugin on a node only after this project's driver is
            # there; depending on the installers keeps the release after them in `pulumi up`.
            k8s.helm.v3.Release(
                f"{name}-release",
                name=RELEASE_NAME,
                namespace=settings.namespace,
                # The namespace is declared above (with the Pod Security label the operands need).
                create_namespace=False,
                values=self.values,
                **chart_arguments(settings.chart),
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
            )
            self.release_name = RELEASE_NAME
        self.register_outputs({"values": self.values, "release_name": self.release_name})
