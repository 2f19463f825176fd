"""`__main__.py`, the entry point `pulumi up` runs: it registers the stack's resources, and an invalid
configuration stops it before any registration: the problems logged as one error, then exit status 32, which
Pulumi's Python runner and language host take as "the user was already told" (no traceback, no second
"unhandled error" line; the real CLI's view of it is tests/e2e/test_bad_config.py)."""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime
import pytest
from pulumi.runtime.stack import wait_for_rpcs

from tests.pulumi import harness as h

MAIN = Path(__file__).resolve().parents[2] / "__main__.py"


def _run_main(config: dict[str, Any], secret: list[str], recorder: h.Recorder) -> h.Recorder:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.set_all_config(h.encode(config), secret)
        pulumi.runtime.set_mocks(recorder, project="nvidia-installer", stack="main", preview=False)
        runpy.run_path(str(MAIN), run_name="__main__")
        loop.run_until_complete(wait_for_rpcs())
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        asyncio.set_event_loop(None)
        loop.close()
    return recorder


def test_main_registers_the_prod_stack() -> None:
    config, secret = h.stack_dict("prod")
    recorder = _run_main(config, secret, h.Recorder())
    names = {h.plain(r.inputs)["metadata"]["name"] for r in recorder.of_type("kubernetes:apps/v1:DaemonSet")}
    assert names == {"nvidia-installer-vm-a100", "nvidia-installer-metal-h100", "nvidia-device-plugin"}


def test_main_stops_on_invalid_config_with_one_error_and_status_32(caplog: pytest.LogCaptureFixture) -> None:
    config, secret = h.stack_dict("prod")
    config[f"{h.NS}:targets"][0]["arch"] = "x86_64"
    recorder = h.Recorder()
    with pytest.raises(SystemExit) as caught:
        _run_main(config, secret, recorder)
    assert caught.value.code == 32
    assert recorder.regs == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "targets[0].arch: 'x86_64' is not allowed" in errors[0]
