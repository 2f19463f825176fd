"""The one explicit Kubernetes provider every Kubernetes resource of the stack uses."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.config import StackConfig


def cluster_provider(config: StackConfig) -> k8s.Provider:
    """A provider from OUR validated config (an explicit provider ignores the kubernetes:* stack config):
    render mode writes manifests to a directory, otherwise a kubeconfig context and/or a secret kubeconfig."""
    cluster = config.cluster
    if cluster.render_directory is not None:
        return k8s.Provider("cluster", render_yaml_to_directory=cluster.render_directory)
    kubeconfig = config.kubeconfig.output() if config.kubeconfig is not None else None
    # A stable identifier keeps a rotated kubeconfig from replacing the provider (and with it every object);
    # switching to another context still replaces, as it should.
    identifier = f"context-{cluster.context}" if cluster.context else f"stack-{pulumi.get_stack()}"
    return k8s.Provider(
        "cluster", context=cluster.context, kubeconfig=kubeconfig, cluster_identifier=identifier
    )
