"""Secrets stay secret: the registry password and kubeconfig never appear in plain text anywhere the
engine would store them (registered inputs outside secret envelopes, stack outputs)."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.pulumi import harness as h

PASSWORD = "s3cr3t-Sentinel-pw"
KUBECONFIG = "apiVersion: v1\nkind: Config\n# kubeconfig-sentinel-9f2c\n"


def _forms(secret: str, username: str) -> list[str]:
    """The password as itself and in the encodings a pull secret uses."""
    pair = f"{username}:{secret}"
    return [secret, base64.b64encode(secret.encode()).decode(), base64.b64encode(pair.encode()).decode()]


def _run() -> tuple[h.Recorder, Any]:
    driver = h.checksummed()[0]
    config, secret = h.build_config([h.target("a", "1877.17", driver)])
    config[f"{h.NS}:cluster"] = {"context": "ctx"}
    config[f"{h.NS}:kubeconfig"] = KUBECONFIG
    return h.run(config, [*secret, f"{h.NS}:kubeconfig"])


def test_password_and_kubeconfig_only_inside_secret_envelopes() -> None:
    recorder, result = _run()
    assert len(recorder.regs) > 5
    leaks = []
    for reg in recorder.regs:
        for text in h.outside_secrets(reg.inputs):
            for form in [*_forms(PASSWORD, "robot"), "kubeconfig-sentinel-9f2c"]:
                if form in text:
                    leaks.append(f"{reg.typ} {reg.name}: {text[:60]!r}")
    assert leaks == []
    assert PASSWORD not in json.dumps(result.outputs)


def test_the_secrets_do_reach_their_consumers_wrapped() -> None:
    recorder, _ = _run()
    (pull,) = recorder.of_type("kubernetes:core/v1:Secret")
    assert pull.inputs["data"].get(h.SIG_KEY) == h.SIG_SECRET
    encoded = h.plain(pull.inputs)["data"][".dockerconfigjson"]
    auths = json.loads(base64.b64decode(encoded))["auths"]
    assert auths == {
        "registry.test:5000": {
            "username": "robot",
            "password": PASSWORD,
            "auth": base64.b64encode(f"robot:{PASSWORD}".encode()).decode(),
        }
    }
    (image,) = recorder.of_type("docker:index/image:Image")
    registry = image.inputs["registry"]
    assert registry.get(h.SIG_KEY) == h.SIG_SECRET
    assert registry["value"]["password"] == PASSWORD
    (provider,) = [r for r in recorder.regs if r.typ == "pulumi:providers:kubernetes"]
    assert provider.inputs["kubeconfig"].get(h.SIG_KEY) == h.SIG_SECRET
    assert h.plain(provider.inputs)["kubeconfig"] == KUBECONFIG
