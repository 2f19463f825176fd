"""Runs the program in-process under Pulumi's mocks: no CLI, no provider plugins, no cluster, no registry.
Used by the offline render; the tests drive the same entry point with their own recording mocks."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.runtime
from pulumi.runtime.stack import wait_for_rpcs

from components import program
from components.config import PROJECT, StackConfig
from components.config_errors import ConfigError
from components.config_source import load_stack_config

# Pulumi wraps secret values in this envelope on their way to the engine (pulumi.runtime.rpc).
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"
DOCKER_IMAGE_TYPE = "docker:index/image:Image"


@dataclass(frozen=True)
class Registration:
    """One resource registration as the engine would see it (inputs still carry secret envelopes)."""

    typ: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    provider: str | None


def is_secret_envelope(value: Any) -> bool:
    """Whether a serialized value is a secret envelope."""
    return isinstance(value, dict) and value.get(SECRET_SIG_KEY) == SECRET_SIG_VALUE


def unwrap(value: Any, secret: Any = None) -> Any:
    """The plain form of serialized inputs: secrets replaced by `secret` (or their value when None),
    integral floats back to ints (the wire format turns numbers into floats)."""
    if is_secret_envelope(value):
        inner = unwrap(value["value"])
        return inner if secret is None else _redact(inner, secret)
    if isinstance(value, dict):
        return {k: unwrap(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v, secret) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _redact(value: Any, marker: Any) -> Any:
    """Keeps the shape of a secret value (a Secret's `data` stays a map) and hides every leaf."""
    if isinstance(value, dict):
        return {k: _redact(v, marker) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, marker) for v in value]
    return marker


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every registration; a pushed image gets `<image name>@<placeholder_digest>` as its digest."""

    def __init__(self, placeholder_digest: str) -> None:
        self.placeholder_digest = placeholder_digest
        self.registrations: list[Registration] = []

    def digest_for(self, inputs: Mapping[str, Any]) -> str:
        """The repo digest a mocked image build returns."""
        return f"{inputs['imageName']}@{self.placeholder_digest}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        """Records the registration; the state carries only what the program reads back (an object's
        name, an image's digest): echoing every input would make the SDK rebuild typed outputs nobody
        reads, which dominated the render time of large stacks."""
        self.registrations.append(
            Registration(args.typ, args.name, args.inputs, bool(args.custom), args.provider)
        )
        state: dict[str, Any] = {}
        metadata = args.inputs.get("metadata")
        if isinstance(metadata, dict) and "name" in metadata:
            state["metadata"] = {"name": metadata["name"]}
        if args.typ == DOCKER_IMAGE_TYPE:
            state["repoDigest"] = self.digest_for(args.inputs)
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        """No provider functions are used."""
        return {}, None


@dataclass
class InProcessRun:
    """The result of one in-process run: the validated config and the resolved stack outputs."""

    config: StackConfig
    outputs: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_in_process(
    values: Mapping[str, str],
    secret_keys: Sequence[str],
    mocks: pulumi.runtime.Mocks,
    stack: str,
    uncovered: Mapping[str, str] | None = None,
) -> InProcessRun:
    """Sets the stack config in-process, validates it (ConfigError before any registration), runs the
    program under `mocks` on a fresh event loop and waits for every registration. `uncovered`: what the
    cluster's coverage check would have found (no cluster is read in-process)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    workers = _WorkerLoops()
    loop.set_default_executor(workers.executor)
    logger = logging.getLogger(f"{PROJECT}.inprocess")
    logger.propagate = False
    collect = _Collect()
    logger.handlers = [collect]
    try:
        # A fresh root stack resource for this loop: set_mocks keeps an existing one, and one left by an
        # earlier run (a ConfigError run ends before its root is used) is bound to that run's closed loop.
        pulumi.runtime.settings.reset_options(project=PROJECT, stack=stack)
        pulumi.runtime.set_all_config(dict(values), list(secret_keys))
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, logger=logger)
        try:
            config = load_stack_config()
        except ConfigError as error:
            error.warnings = list(collect.messages)
            raise
        outputs = program.run(config, uncovered)
        resolved = loop.run_until_complete(pulumi.Output.from_input(outputs).future(with_unknowns=True))
        loop.run_until_complete(wait_for_rpcs())
        return InProcessRun(config=config, outputs=dict(resolved or {}), warnings=collect.messages)
    finally:
        _close(loop, workers)


class _WorkerLoops:
    """The thread pool the SDK runs its (mocked) engine calls on. The mocks need an event loop in each
    worker thread and the SDK creates one there without ever closing it (pulumi.runtime.sync_await
    `_ensure_event_loop`); this pool gives each worker its loop up front, so all of them can be closed
    after the run instead of leaking to interpreter shutdown (ResourceWarning: unclosed event loop)."""

    def __init__(self) -> None:
        self.loops: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(thread_name_prefix="inprocess-engine", initializer=self._start)

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._lock:
            self.loops.append(loop)

    def close(self) -> None:
        """Waits for the workers to finish (call after the pool's owner loop shut it down), then closes
        their loops."""
        self.executor.shutdown(wait=True)
        with self._lock:
            loops, self.loops = self.loops, []
        for loop in loops:
            loop.close()


def _close(loop: asyncio.AbstractEventLoop, workers: _WorkerLoops) -> None:
    """Cancels what is still pending (after a ConfigError, the root stack's own tasks), stops the worker
    threads and closes every loop, so nothing leaks into the next run or to interpreter shutdown."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_default_executor())
    workers.close()
    asyncio.set_event_loop(None)
    loop.close()
