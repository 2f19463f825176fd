"""PullSecret: the kubernetes.io/dockerconfigjson Secret both DaemonSets pull their images with."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import specs


@dataclass(frozen=True)
class PullSecretArgs:
    """Registry server and user, and the password as a secret Output (never a plain string)."""

    namespace: str
    server: str
    username: str
    password: pulumi.Output[str]


class PullSecret(pulumi.ComponentResource):
    """The image pull Secret; the encoded credentials stay a secret Output end to end."""

    secret_name: pulumi.Output[str]

    def __init__(self, name: str, args: PullSecretArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("nvidia-installer:pull_secret:PullSecret", name, None, opts)
        encoded: pulumi.Output[str] = pulumi.Output.secret(
            args.password.apply(lambda password: specs.dockerconfigjson(args.server, args.username, password))
        )
        spec = specs.pull_secret(specs.PULL_SECRET_NAME, args.namespace, encoded)
        secret = k8s.core.v1.Secret(
            f"{name}-secret",
            metadata=spec["metadata"],
            type=spec["type"],
            data=spec["data"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Read back from the Secret, so every pod spec that names it depends on its creation.
        self.secret_name = secret.metadata.apply(lambda meta: meta.name or specs.PULL_SECRET_NAME)
        self.register_outputs({"secret_name": self.secret_name})
