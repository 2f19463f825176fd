"""The offline render: it prints exactly what the program registers, stably, with placeholders and
redactions, and fails on bad input with exit status 2 and no traceback."""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import render
from components.inprocess import run_in_process
from tests.pulumi import harness as h

ROOT = Path(__file__).resolve().parents[2]


def _render_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = render.main(list(args))
    return code, out.getvalue(), err.getvalue()


def _registered(stack: str) -> list[dict[str, Any]]:
    """What the program registers under the tests' own mocks, with the render's placeholder and marker
    applied the way the render documents them."""

    class SameDigest(h.Recorder):
        def new_resource(self, args: Any) -> tuple[str, dict[str, Any]]:
            rid, state = super().new_resource(args)
            if args.typ == "docker:index/image:Image":
                state["repoDigest"] = f"{args.inputs['imageName']}@{render.PLACEHOLDER_DIGEST}"
            return rid, state

    config, secret = h.stack_dict(stack)
    recorder = SameDigest()
    run_in_process(h.encode(config), secret, recorder, stack)
    objects = []
    for reg in recorder.k8s_objects():
        obj = _redacted(reg.inputs)
        objects.append(obj)
    return objects


def _redacted(value: Any, inside: bool = False) -> Any:
    if isinstance(value, dict):
        if value.get(h.SIG_KEY) == h.SIG_SECRET:
            return _redacted(value["value"], True)
        return {k: _redacted(v, inside) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, inside) for v in value]
    if inside:
        return render.REDACTION
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_render_equals_what_the_program_registers(stack: str) -> None:
    code, out, _ = _render_cli(stack)
    assert code == 0
    rendered = [d for d in yaml.safe_load_all(out) if d is not None]
    registered = sorted(_registered(stack), key=_key)
    assert len(rendered) == len(registered) >= 4
    assert rendered == registered
    assert [_key(o) for o in rendered] == sorted(_key(o) for o in rendered)


def test_render_is_stable() -> None:
    first = _render_cli("prod")
    second = _render_cli("prod")
    assert first[1] == second[1]


def test_prod_render_marks_placeholders_and_redacts_secrets() -> None:
    code, out, _ = _render_cli("prod")
    assert code == 0
    docs = [d for d in yaml.safe_load_all(out) if d]
    installers = [
        d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] != "nvidia-device-plugin"
    ]
    for ds in installers:
        image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.endswith("@" + render.PLACEHOLDER_DIGEST)
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["data"] == {".dockerconfigjson": render.REDACTION}
    assert "v1:cGxhY2Vob2xkZXI" not in out  # the ciphertext is not echoed either


def test_out_writes_one_file_per_object_and_drops_stale_ones(tmp_path: Path) -> None:
    (tmp_path / "keep.yaml").write_text("mine: true\n")
    (tmp_path / "configmap-gone.yaml").write_text(render.HEADER + "kind: ConfigMap\n")
    code, out, err = _render_cli("dev", "--out", str(tmp_path))
    assert code == 0 and out == ""
    files = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert "keep.yaml" in files and "configmap-gone.yaml" not in files
    assert "daemonset-nvidia-device-plugin.yaml" in files
    rendered = [yaml.safe_load((tmp_path / f).read_text()) for f in files if f != "keep.yaml"]
    _, stdout, _ = _render_cli("dev")
    assert sorted(rendered, key=_key) == [d for d in yaml.safe_load_all(stdout) if d]
    assert f"wrote {len(rendered)} objects" in err


def _bad_stack(tmp_path: Path) -> Path:
    config, _ = h.stack_dict("dev")
    config[f"{h.NS}:targets"][1]["glVersion"] = "2150.9"
    document = {"config": config}
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


def test_bad_config_exits_2_with_the_message(tmp_path: Path) -> None:
    code, out, err = _render_cli("bad", "--stacks-dir", str(_bad_stack(tmp_path)))
    assert code == 2 and out == ""
    assert "targets[1].glVersion: '2150.9'" in err
    assert "three parts from 2150" in err


def test_bad_config_from_the_command_line_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "components.render", "bad", "--stacks-dir", str(_bad_stack(tmp_path))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "targets[1].glVersion" in proc.stderr


def test_unknown_stack_exits_2_naming_the_known_ones() -> None:
    code, _, err = _render_cli("nope")
    assert code == 2
    assert "Pulumi.nope.yaml" in err and "dev" in err and "prod" in err


@pytest.mark.parametrize("stack", ["prod", "bad"])
def test_render_exits_cleanly_under_dev_mode(stack: str, tmp_path: Path) -> None:
    # `-X dev -W default` shows every ResourceWarning (an event loop or socket never closed) and every
    # exception raised during interpreter shutdown; a clean exit shows neither.
    stacks_dir = _bad_stack(tmp_path) if stack == "bad" else ROOT / "stacks"
    argv = ["-X", "dev", "-W", "default", "-m", "components.render", stack, "--stacks-dir", str(stacks_dir)]
    proc = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == (2 if stack == "bad" else 0), proc.stderr
    assert "ResourceWarning" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
