"""Secrets stay secret: the registry password and kubeconfig never appear in plain text anywhere the
engine would store them (registered inputs outside secret envelopes, stack outputs)."""

from __future__ import annotations

import base64
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import render
from tests.pulumi import harness as h

ROOT = Path(__file__).resolve().parents[2]

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


# Stack keys marked secret other than registryPassword and kubeconfig: every other setting ends up in plain
# text (object names, labels, image references), so a secret-marked one is refused by key, value unseen.
SENTINEL = "zz-sentinel-7c1e"


def _valid() -> tuple[dict[str, Any], list[str]]:
    return h.build_config([h.target("a", "1877.17", h.checksummed()[0])])


def _assert_unseen(text: str) -> None:
    assert SENTINEL not in text, "a secret-marked value was echoed"
    assert "zz-sentinel" not in text


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [
        pytest.param("namespace", "kube-system", "namespace", id="valid-namespace"),
        pytest.param("namespace", f"Bad_{SENTINEL}", "namespace", id="invalid-namespace"),
        pytest.param(
            "targets",
            [h.target("a", f"1877.{SENTINEL}", "580.159.04")],
            "targets",
            id="targets-with-a-bad-version",
        ),
        pytest.param(
            "registry",
            {"server": "r.test", "repository": "gpu/d", "username": SENTINEL},
            "registry",
            id="registry-with-the-user",
        ),
        pytest.param("regsitry", {"server": SENTINEL}, "regsitry", id="unknown-key"),
    ],
)
def test_a_secret_marked_setting_is_refused_by_key_without_its_value(key: str, value: Any, path: str) -> None:
    config, secret = _valid()
    config[f"{h.NS}:{key}"] = value
    if key == "registry":
        del config[f"{h.NS}:registryPassword"]  # the credentials rule would name the user
        secret = []
    recorder, error = h.run_failing(config, [*secret, f"{h.NS}:{key}"])
    assert recorder.regs == []
    lines = [line for line in error.problems if line.startswith(f"{path}:")]
    assert lines and "secret" in lines[0] and "value not shown" in lines[0], error.problems
    _assert_unseen(str(error))


def test_a_secret_marked_default_providers_setting_is_not_echoed() -> None:
    config, secret = _valid()
    config["pulumi:disable-default-providers"] = [SENTINEL]
    _, error = h.run_failing(config, [*secret, "pulumi:disable-default-providers"])
    assert any(line.startswith("pulumi:disable-default-providers:") for line in error.problems)
    _assert_unseen(str(error))


def test_render_refuses_a_secure_namespace_in_a_stack_file(tmp_path: Path) -> None:
    stack = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    stack["config"][f"{h.NS}:namespace"] = {"secure": "v1:c2VjcmV0:" + SENTINEL}
    (tmp_path / "Pulumi.sec.yaml").write_text(yaml.safe_dump(stack))
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = render.main(["sec", "--stacks-dir", str(tmp_path)])
    assert code == 2
    assert "namespace:" in err.getvalue() and "secret" in err.getvalue()
    _assert_unseen(err.getvalue())


def test_a_user_name_with_a_colon_is_refused() -> None:
    # The pull Secret's `auth` is base64("user:password"): a ':' in the user splits it in the wrong place.
    config, secret = _valid()
    config[f"{h.NS}:registry"]["username"] = "robot:gpu"
    recorder, error = h.run_failing(config, secret)
    assert recorder.regs == []
    (line,) = [p for p in error.problems if p.startswith("registry.username:")]
    assert "'robot:gpu'" in line and "':'" in line
    _assert_unseen(str(error))


@pytest.mark.parametrize("key", ["registryPassword", "kubeconfig"])
@pytest.mark.parametrize("value", ["", "  \n"])
def test_an_empty_secret_is_refused(key: str, value: str) -> None:
    config, secret = _valid()
    config[f"{h.NS}:{key}"] = value
    recorder, error = h.run_failing(config, [*secret, f"{h.NS}:{key}"])
    assert recorder.regs == []
    (line,) = [p for p in error.problems if p.startswith(f"{key}:")]
    assert "empty" in line
