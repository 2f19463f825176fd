"""`python -m components.render STACK [--out DIR]`: every Kubernetes object `pulumi up -s STACK` would
apply, as YAML, offline. The program runs in-process under mocks (components/inprocess.py), so the render
comes from the same code path as the real resources.

Output: one YAML document per object, sorted by kind, namespace and name; on stdout, or with --out one
file per object, `<kind>-<name>.yaml`, and in GPU Operator mode the chart's values as VALUES_FILE (a Helm
release is not an object: its values are what it applies). Secrets appear as REDACTION; images that are
not built here show `<image name>@` + PLACEHOLDER_DIGEST. Exit status: 0 rendered, 2 invalid stack or
configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.config import PROJECT
from components.config_errors import ConfigError
from components.inprocess import RecordingMocks, Registration, run_in_process, unwrap

ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = ROOT / "stacks"
REDACTION = "REDACTED-SECRET"
PLACEHOLDER_DIGEST = "sha256:NOT-BUILT-offline-render-placeholder"
# libyaml's C implementation when PyYAML was built with it (same output, many times faster).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
HEADER = "# Rendered offline by `python -m components.render`: not applied by Pulumi.\n"
VALUES_FILE = "gpu-operator-values.yaml"
# Helm releases register under this type prefix; they are not Kubernetes objects.
_HELM_TYPES = "kubernetes:helm.sh/"


class StackFileError(Exception):
    """The stack file is missing or unreadable."""


def _mask_secure(value: Any) -> tuple[Any, bool]:
    """Replaces every `{secure: ...}` (ciphertext, not decryptable offline) by the redaction marker."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return REDACTION, True
        found = False
        out = {}
        for k, v in value.items():
            out[k], inner = _mask_secure(v)
            found = found or inner
        return out, found
    if isinstance(value, list):
        items = [_mask_secure(v) for v in value]
        return [v for v, _ in items], any(s for _, s in items)
    return value, False


def stack_config(stack: str, stacks_dir: Path = STACKS_DIR) -> tuple[dict[str, str], list[str]]:
    """The config of stacks/Pulumi.<stack>.yaml as Pulumi hands it to a program: full keys, objects as
    JSON text; and the keys that are secret."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))
        raise StackFileError(f"no stack file {path}; known stacks: {', '.join(known) or 'none'}")
    try:
        document = yaml.load(path.read_text(), Loader=_LOADER) or {}
    except yaml.YAMLError as error:
        raise StackFileError(f"{path}: not valid YAML: {error}") from None
    raw = document.get("config") or {}
    if not isinstance(raw, dict):
        raise StackFileError(f"{path}: `config` must be a mapping")
    values: dict[str, str] = {}
    secret: list[str] = []
    for key, value in raw.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        masked, is_secret = _mask_secure(value)
        values[full] = masked if isinstance(masked, str) else json.dumps(masked)
        if is_secret:
            secret.append(full)
    return values, secret


def _object(registration: Registration) -> dict[str, Any]:
    obj: dict[str, Any] = unwrap(registration.inputs, secret=REDACTION)
    return obj


def kubernetes_objects(registrations: Sequence[Registration]) -> list[dict[str, Any]]:
    """The Kubernetes objects among the registrations, sorted by kind, namespace, name."""
    objects = [
        _object(r)
        for r in registrations
        # Providers register as `pulumi:providers:kubernetes`, so this keeps objects only.
        if r.custom and r.typ.startswith("kubernetes:") and not r.typ.startswith(_HELM_TYPES)
    ]
    return sorted(
        objects,
        key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]),
    )


@dataclass(frozen=True)
class Rendered:
    """What one offline render produced: the objects, the program's warnings and, in GPU Operator mode,
    the chart's values (the stack output gpuOperatorValues)."""

    objects: list[dict[str, Any]]
    warnings: list[str]
    operator_values: dict[str, Any] | None


def render_stack(stack: str, stacks_dir: Path = STACKS_DIR) -> Rendered:
    """Runs the stack's program under mocks; returns its objects, warnings and operator values."""
    values, secret = stack_config(stack, stacks_dir)
    mocks = RecordingMocks(PLACEHOLDER_DIGEST)
    result = run_in_process(values, secret, mocks, stack)
    operator_values = result.outputs.get("gpuOperatorValues")
    return Rendered(
        objects=kubernetes_objects(mocks.registrations),
        warnings=result.warnings,
        operator_values=unwrap(operator_values) if operator_values is not None else None,
    )


def render_objects(stack: str, stacks_dir: Path = STACKS_DIR) -> tuple[list[dict[str, Any]], list[str]]:
    """Runs the stack's program under mocks; returns its Kubernetes objects and the program's warnings."""
    rendered = render_stack(stack, stacks_dir)
    return rendered.objects, rendered.warnings


def to_yaml(obj: dict[str, Any]) -> str:
    """One stable YAML document."""
    return yaml.dump(obj, Dumper=_DUMPER, sort_keys=True, default_flow_style=False)


def _write_dir(out: Path, rendered: Rendered) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.yaml"):
        if stale.read_text().startswith(HEADER):
            stale.unlink()  # an object gone from the stack must not linger in the render
    for obj in rendered.objects:
        name = f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        (out / name).write_text(HEADER + to_yaml(obj))
    if rendered.operator_values is not None:
        # `helm install ... --values <this file>`: the header is a YAML comment, so Helm reads it as is.
        (out / VALUES_FILE).write_text(HEADER + to_yaml(rendered.operator_values))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m components.render", description=__doc__.splitlines()[0])
    parser.add_argument("stack", help="stack name: renders stacks/Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, help="directory for one file per object (default: stdout)")
    parser.add_argument("--stacks-dir", type=Path, default=STACKS_DIR, help="where Pulumi.<stack>.yaml live")
    args = parser.parse_args(argv)
    try:
        rendered = render_stack(args.stack, args.stacks_dir)
    except (ConfigError, StackFileError) as error:
        for warning in error.warnings if isinstance(error, ConfigError) else []:
            print(f"render: warning: {warning}", file=sys.stderr)
        print(f"render: {error}", file=sys.stderr)
        return 2
    for warning in rendered.warnings:
        print(f"render: warning: {warning}", file=sys.stderr)
    if args.out is None:
        sys.stdout.write(HEADER + "---\n".join(to_yaml(o) for o in rendered.objects))
        if rendered.operator_values is not None:
            print(
                f"render: GPU Operator values not printed; --out DIR writes them to {VALUES_FILE}",
                file=sys.stderr,
            )
    else:
        _write_dir(args.out, rendered)
        extra = (
            f" and the GPU Operator values to {VALUES_FILE}" if rendered.operator_values is not None else ""
        )
        print(f"render: wrote {len(rendered.objects)} objects{extra} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
