"""Contracts between the Python side (components/) and the bash side (image/build, image/verify,
image/node, image/Dockerfile), each checked by running or reading both sides: driver versions and the
checksum file, where the image puts things, the NVIDIA module names, the architecture names.
Fast: no compile, no download, no module loaded."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from pydantic import ValidationError

import components.checksums
import components.config
from components import specs
from components.checksums import NVIDIA_ARCH, checksum_entries, parse_checksums
from components.config import ModuleParametersConfig, StackConfig, TargetConfig
from components.selection import Requirement

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "image"
FETCH = IMAGE / "build" / "fetch-driver.sh"
LIB = IMAGE / "build" / "lib.sh"
COMPILE = IMAGE / "build" / "compile-modules.sh"
LOAD_CHECK = IMAGE / "verify" / "load-check.sh"
NODE = IMAGE / "node" / "nvidia-installer"
DOCKERFILE = IMAGE / "Dockerfile"
REPO_CHECKSUMS = IMAGE / "checksums" / "nvidia-driver.sha256"
BASH = shutil.which("bash") or "/bin/bash"


def bash(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, "-c", f"set -euo pipefail\n{script}"],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def bash_value(path: Path, name: str) -> list[str]:
    """The words of a bash array or string variable, as bash itself reads the line that declares it."""
    lines = [line for line in path.read_text().splitlines() if re.match(rf"^(readonly )?{name}=", line)]
    assert len(lines) == 1, f"{path.relative_to(ROOT)} declares {name} {len(lines)} times"
    result = bash(f'{lines[0]}\nprintf "%s\\n" "${{{name}[@]}}"')
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


# ---- (a) driver versions, (e) the checksum file: fetch-driver.sh and components/ -------------------


def _sum(name: str) -> str:
    """A distinct, recognisable SHA-256 per line of the test's checksum file."""
    return hashlib.sha256(name.encode()).hexdigest()


# Lines of a checksum file the test writes; each says whether it is an entry under the file's rules
# (image/checksums/nvidia-driver.sha256's header, `sha256sum` output): `<64 lowercase hex> [*]<name>`.
EDGE_LINES = [
    (f"{_sum('a')}  NVIDIA-Linux-x86_64-575.64.05.run", True),
    (f"{_sum('b')} *NVIDIA-Linux-aarch64-575.64.05.run", True),  # sha256sum's binary-mode marker
    (f"  {_sum('c')}\tNVIDIA-Linux-x86_64-550.163.01.run  ", True),  # blanks around, a tab between
    (f"{_sum('d')}  NVIDIA-Linux-x86_64-550.54.15.run\r", True),  # a CRLF file
    (f"{_sum('e')}  NVIDIA-Linux-x86_64-575.64.05.run", False),  # a second line for a name: first wins
    (f"{_sum('f').upper()}  NVIDIA-Linux-x86_64-560.35.03.run", False),  # not lowercase
    (f"{_sum('g')[:63]}  NVIDIA-Linux-x86_64-555.58.02.run", False),  # 63 digits
    (f"# {_sum('h')}  NVIDIA-Linux-x86_64-545.29.06.run", False),  # commented out
    (f"{_sum('i')}  NVIDIA-Linux-x86_64-535.183.01.run extra", False),  # trailing word
    (f"{_sum('j')}  NVIDIA-Linux-x86_64-535.183.06.run\rjunk", False),  # a lone CR inside a line
    (f"{_sum('k')}\vNVIDIA-Linux-x86_64-535.216.01.run", False),  # a vertical tab is no separator
    (f"{_sum('l')}  NVIDIA-Linux-ppc64le-535.216.03.run", False),  # an arch we do not build
    (f"{_sum('m')}  NVIDIA-Linux-x86_64-580.1.run", True),  # an entry; the version form is checked later
    (f"{_sum('n')}  NVIDIA-Linux-x86_64-0580.159.04.run", True),
]


@pytest.fixture
def edge_checksums(tmp_path: Path) -> Path:
    path = tmp_path / "nvidia-driver.sha256"
    path.write_bytes(("# test file\n\n" + "\n".join(line for line, _ in EDGE_LINES)).encode())
    return path


def bash_entries(checksum_file: Path) -> dict[str, str]:
    result = subprocess.run(
        [str(FETCH), "list"],
        check=False,
        env={**os.environ, "CHECKSUM_FILE": str(checksum_file)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    entries: dict[str, str] = {}
    for line in result.stdout.splitlines():
        digest, _, name = line.partition("  ")
        assert name not in entries, f"fetch-driver.sh list repeats {name}"
        entries[name] = digest
    return entries


def test_checksum_file_entries_are_read_alike(edge_checksums: Path) -> None:
    text = edge_checksums.read_bytes().decode()
    python = checksum_entries(text)
    assert bash_entries(edge_checksums) == python
    expected = {}
    for line, is_entry in EDGE_LINES:
        if is_entry:
            digest, name = line.strip(" \t\r").split(maxsplit=1)
            expected[name.lstrip("*")] = digest
    assert python == expected


def test_the_repository_checksum_file_is_read_alike() -> None:
    python = checksum_entries(REPO_CHECKSUMS.read_bytes().decode())
    assert python, "the repository's checksum file has no entries"
    assert bash_entries(REPO_CHECKSUMS) == python
    assert {(a, v) for a, v in components.checksums.available_checksums()} == parse_checksums(
        REPO_CHECKSUMS.read_text()
    )


def fetch_check(version: str, arch: str, checksum_file: Path) -> subprocess.CompletedProcess[str]:
    """fetch-driver.sh's refusal path; a mirror that cannot answer makes any download attempt fail."""
    env = {
        **os.environ,
        "CHECKSUM_FILE": str(checksum_file),
        "DRIVER_VERSION": version,
        "ARCH": arch,
        "NVIDIA_MIRRORS": "http://127.0.0.1:9",
    }
    return subprocess.run(
        [str(FETCH), "check"], env=env, capture_output=True, text=True, check=False, timeout=60
    )


def preview_accepts(version: str, arch: str, text: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether the stack config validation (what `pulumi preview` runs first) takes a target with this
    driver, when the checksum file reads `text`."""
    listed = parse_checksums(text)
    monkeypatch.setattr(components.config, "available_checksums", lambda *_: listed)
    config: dict[str, Any] = {
        "cluster": {"renderDirectory": "out"},
        "registry": {"server": "registry.example.com", "repository": "gpu/nvidia-driver"},
        "targets": [
            {"name": "t", "glVersion": "1877.17", "arch": arch, "flavour": "cloud", "driverVersion": version}
        ],
    }
    try:
        StackConfig.model_validate(config)
    except (ValidationError, ValueError):
        return False
    return True


# (version, arch, accepted): accepted when the version has NVIDIA's form and the file lists it for the arch.
VERSIONS = [
    ("575.64.05", "amd64", True),  # only in the test's file
    ("575.64.05", "arm64", True),  # its aarch64 line carries the `*` marker
    ("550.163.01", "amd64", True),
    ("550.54.15", "amd64", True),
    ("550.163.01", "arm64", False),  # no aarch64 line
    ("560.35.03", "amd64", False),  # its line is not an entry
    ("555.58.02", "amd64", False),
    ("545.29.06", "amd64", False),
    ("535.183.01", "amd64", False),
    ("535.183.06", "amd64", False),
    ("535.216.01", "amd64", False),
    ("580.1", "amd64", False),  # listed, but not NVIDIA's version form
    ("0580.159.04", "amd64", False),
    ("575.64.5", "amd64", False),
    ("575.64.005", "amd64", False),
    ("575.64.05.1", "amd64", False),
    ("575.64.05 ", "amd64", False),
    ("575.64.05\n", "amd64", False),
    ("../575.64.05", "amd64", False),
    ("", "amd64", False),
    ("575.64.05", "x86_64", False),  # NVIDIA's arch name is not a target arch
    ("575.64.05", "i386", False),
]


@pytest.mark.parametrize(
    ("version", "arch", "accepted"), VERSIONS, ids=[f"{v!r}-{a}" for v, a, _ in VERSIONS]
)
def test_build_and_preview_accept_the_same_driver_versions(
    version: str, arch: str, accepted: bool, edge_checksums: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = edge_checksums.read_bytes().decode()
    result = fetch_check(version, arch, edge_checksums)
    assert "downloading" not in result.stderr
    assert (result.returncode == 0) == accepted, f"fetch-driver.sh check: {result.stderr}"
    assert preview_accepts(version, arch, text, monkeypatch) == accepted
    if accepted:
        nvidia = NVIDIA_ARCH[arch]
        name = f"NVIDIA-Linux-{nvidia}-{version}.run"
        assert result.stdout == f"{checksum_entries(text)[name]}  {name}\n"
    else:
        assert result.stderr.strip(), "a refusal says why"


def test_every_version_the_repository_lists_is_fetchable_and_previewable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = REPO_CHECKSUMS.read_bytes().decode()
    listed = parse_checksums(text)
    assert listed
    for arch, version in sorted(listed):
        assert fetch_check(version, arch, REPO_CHECKSUMS).returncode == 0, (arch, version)
        assert preview_accepts(version, arch, text, monkeypatch), (arch, version)


# ---- (d) architecture names ------------------------------------------------------------------------

ARCH_NAMES = ["amd64", "arm64", "x86_64", "aarch64", "i386", "armhf", "AMD64", ""]


def test_nvidia_arch_names_agree() -> None:
    for name in ARCH_NAMES:
        result = bash(f"source {shlex.quote(str(LIB))}\nnvidia_arch {shlex.quote(name)}")
        bash_says = result.stdout.strip() if result.returncode == 0 else None
        assert bash_says == NVIDIA_ARCH.get(name), name


def test_target_arches_are_the_ones_the_build_maps() -> None:
    schema = TargetConfig.model_json_schema(by_alias=True)
    assert set(schema["properties"]["arch"]["enum"]) == set(NVIDIA_ARCH)


def _function(path: Path, name: str) -> str:
    """The text of one bash function of a script (from `name() {` to the first `}` at column 0)."""
    match = re.search(rf"^{name}\(\) {{\n.*?^}}\n", path.read_text(), re.MULTILINE | re.DOTALL)
    assert match is not None, f"{path.relative_to(ROOT)} has no function {name}"
    return match.group(0)


def test_load_check_maps_the_machine_arch_back_like_python() -> None:
    """load-check.sh names the build machine's arch from `uname -m` (NVIDIA's names) without dpkg."""
    ours = {nvidia: arch for arch, nvidia in NVIDIA_ARCH.items()}
    for machine, arch in ours.items():
        script = (
            f'uname() {{ printf "%s\\n" {machine}; }}\n{_function(LOAD_CHECK, "_detect_arch")}\n_detect_arch'
        )
        result = bash(script, env={"PATH": "/nonexistent"})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == arch


def test_the_node_installer_maps_the_machine_arch_like_python() -> None:
    """It compares the manifest's ARCH (ours) with `uname -m` (NVIDIA's names) before touching the host."""
    for arch, machine in NVIDIA_ARCH.items():
        result = bash(f"{_function(NODE, '_arch_of_machine')}\n_arch_of_machine {machine}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == arch


def test_load_check_guest_arches_are_the_target_arches() -> None:
    accepted = set()
    for name in ARCH_NAMES:
        script = f"die() {{ exit 1; }}\n{_function(LOAD_CHECK, '_set_arch')}\n_set_arch {shlex.quote(name)}"
        if bash(script).returncode == 0:
            accepted.add(name)
    assert accepted == set(NVIDIA_ARCH)


# ---- (b) where the image puts things -----------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's (instruction, arguments), continuation lines joined; the last stage is "final"."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            words = [word for word in args.split() if not word.startswith("--")]  # --platform=...
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else "final"
            current = stages.setdefault(name, [])
            continue
        current.append((keyword.upper(), args.strip()))
    return stages


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile's last stage."""
    return dockerfile_stages()["final"]


def _copy_paths(args: str) -> tuple[str | None, list[str]]:
    words = args.split()
    stage = next((w.removeprefix("--from=") for w in words if w.startswith("--from=")), None)
    return stage, [w for w in words if not w.startswith("--")]


def final_copies() -> dict[str, str]:
    """Image path -> where it comes from: a build-context file, `stage:path` for a COPY --from, or
    `stage:RUN` for what a stage's RUN writes under the layer root it hands over whole (`COPY
    --from=<stage> /layer/ /`: build/seal-layer.sh)."""
    stages = dockerfile_stages()
    copies = {}
    for keyword, args in stages["final"]:
        if keyword != "COPY":
            continue
        stage, paths = _copy_paths(args)
        assert len(paths) == 2, f"COPY with several sources: {args}"
        if stage is not None and paths == ["/layer/", "/"]:
            for inner_keyword, inner_args in stages[stage]:
                inner_stage, inner_paths = _copy_paths(inner_args)
                if inner_keyword == "COPY" and inner_stage is None and inner_paths[-1].startswith("/layer/"):
                    assert len(inner_paths) == 2, f"COPY with several sources into a layer: {inner_args}"
                    copies[inner_paths[1].removeprefix("/layer")] = inner_paths[0]
                elif inner_keyword == "RUN":
                    for written in re.findall(r"/layer(/\S+)", inner_args):
                        copies[written] = f"{stage}:RUN"
            continue
        copies[paths[1].rstrip("/") or "/"] = f"{stage}:{paths[0]}" if stage else paths[0]
    return copies


def test_the_image_puts_the_installer_where_the_pod_runs_it() -> None:
    copies = final_copies()
    assert copies[specs.INSTALLER_BIN] == "node/nvidia-installer"
    stage = dict(dockerfile_final_stage())
    assert json.loads(stage["ENTRYPOINT"])[0] == specs.INSTALLER_BIN
    path = re.fullmatch(r"PATH=(\S+)", stage["ENV"])
    assert path is not None and str(PurePosixPath(specs.INSTALLER_BIN).parent) in path.group(1).split(":")


def _installer_pod() -> dict[str, Any]:
    ds = specs.installer_daemonset(
        target="t",
        namespace="kube-system",
        image="registry.example.com/driver@sha256:" + "0" * 64,
        module_type="auto",
        selection=(Requirement("gpu", "Exists", ()),),
        parameters_config_map="params",
        pull_secret_name=None,
        version_labels={},
    )
    pod: dict[str, Any] = ds["spec"]["template"]["spec"]
    return pod


def test_no_installer_mount_hides_what_the_image_ships() -> None:
    shipped = [PurePosixPath(dest) for dest in final_copies() if dest != "/"]
    assert shipped
    for mount in _installer_pod()["containers"][0]["volumeMounts"]:
        mount_path = PurePosixPath(mount["mountPath"])
        hidden = [str(p) for p in shipped if p == mount_path or mount_path in p.parents]
        assert hidden == [], f"mount {mount_path} hides {hidden}"


def node_defaults() -> dict[str, str]:
    """The node installer's path settings as bash evaluates them (HOST_ROOT=/host, nothing else set):
    its top-level assignments, without the ones that run a command."""
    head = NODE.read_text().split("\n_", 1)[0].split("\n}", 1)[0]
    lines = [
        line
        for line in head.splitlines()
        if re.match(r"^(readonly )?[A-Z_]+=", line) and "$(" not in line and "`" not in line
    ]
    result = bash("\n".join([*lines, "declare -p"]), env={"HOST_ROOT": "/host"})
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r'^declare -[-a-zA-Z]* ([A-Z_]+)="([^"]*)"$', result.stdout, re.MULTILINE))


def test_the_node_installer_finds_the_payload_and_user_space_where_the_image_puts_them() -> None:
    copies = final_copies()
    node = node_defaults()
    payload = [dest for dest, src in copies.items() if src.startswith("payload:")]
    userspace = [dest for dest, src in copies.items() if src.startswith("userspace:")]
    assert payload == [node["PAYLOAD_DIR"]]
    assert userspace == [node["USERSPACE_DIR"]]
    sourced = re.findall(
        r'^source "\$\{NVIDIA_INSTALLER_LIB:-\$\{SCRIPT_DIR\}/\.\./lib\}/(\S+)"$',
        NODE.read_text(),
        re.MULTILINE,
    )
    for name in sourced:
        lib = str(PurePosixPath(specs.INSTALLER_BIN).parent.parent / "lib" / name)
        assert copies.get(lib) == f"lib/{name}", (
            f"the node installer sources {lib}, the image has no such file"
        )


def test_the_node_installer_writes_where_the_pods_look() -> None:
    node = node_defaults()
    host_root = node["HOST_ROOT"]
    pod = _installer_pod()
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounted = {
        m["mountPath"]: host_paths[m["name"]]
        for m in pod["containers"][0]["volumeMounts"]
        if m["name"] in host_paths
    }
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HOST_ROOT"] == host_root
    # Every host place the installer writes is a hostPath mounted at HOST_ROOT + the same path.
    for name in ("DRIVER_LINK", "READY_FILE"):
        pod_path = PurePosixPath(node[name])
        assert any(
            PurePosixPath(mount) in pod_path.parents and mount == host_root + host
            for mount, host in mounted.items()
        ), f"{name}={pod_path} is on no hostPath mount of the installer pod"
    # ... and the device plugin reads the driver link and the readiness file where the installer puts them.
    assert node["DRIVER_LINK"].removeprefix(host_root) == specs.HOST_DRIVER_DIR
    assert node["READY_FILE"].removeprefix(host_root) == specs.DRIVER_READY_FILE


# ---- (c) NVIDIA module names -------------------------------------------------------------------------


def _architecture_doc_modules() -> list[str]:
    match = re.search(
        r"modules-<type>\.tar\.zst\s+stripped \*\.ko \(([^)]*)\)",
        (ROOT / "docs" / "architecture.md").read_text(),
    )
    assert match is not None, "docs/architecture.md no longer lists the modules of the payload"
    return match.group(1).split()


def test_module_lists_agree() -> None:
    compiled = bash_value(COMPILE, "REQUIRED_MODULES")
    load_checked = bash_value(LOAD_CHECK, "NVIDIA_MODULES")
    documented = _architecture_doc_modules()
    assert compiled and load_checked[0] == "nvidia"
    # Every module the build requires is load-checked; the load check knows no module the docs do not.
    assert set(compiled) <= set(load_checked)
    assert set(load_checked) == set(documented)


def test_the_node_unloads_every_module_the_image_may_bring_and_loads_required_ones() -> None:
    load_checked = {m.replace("-", "_") for m in bash_value(LOAD_CHECK, "NVIDIA_MODULES")}
    compiled = {m.replace("-", "_") for m in bash_value(COMPILE, "REQUIRED_MODULES")}
    unloaded = bash_value(NODE, "NVIDIA_MODULES_UNLOAD_ORDER")
    loaded = {m.replace("-", "_") for m in bash_value(NODE, "NVIDIA_MODULES_REQUIRED")}
    assert set(unloaded) == load_checked
    assert unloaded[-1] == "nvidia", "nvidia.ko is what the others depend on: it goes last"
    assert "nvidia" in loaded and loaded <= compiled


def test_module_parameters_name_modules_the_node_loads() -> None:
    keys = {field.alias or name for name, field in ModuleParametersConfig.model_fields.items()}
    loaded = set(bash_value(NODE, "NVIDIA_MODULES_REQUIRED"))
    assert keys and keys <= loaded


def _admitted_by_dockerignore(relative: str, patterns: list[str]) -> bool:
    """Whether image/.dockerignore sends this context path to the builder (last matching pattern wins;
    a pattern matching a parent directory counts, as `*` excludes whole top-level directories)."""
    admitted = True
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!")
        if any(fnmatch.fnmatchcase(c, glob) and c.count("/") == glob.count("/") for c in candidates):
            admitted = negated
    return admitted


def test_every_file_the_dockerfile_copies_from_the_context_reaches_the_builder() -> None:
    lines = (IMAGE / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    sources = []
    for stage in dockerfile_stages().values():
        for keyword, args in stage:
            if keyword == "COPY":
                from_stage, paths = _copy_paths(args)
                if from_stage is None:
                    sources += paths[:-1]
    assert sources
    for source in sources:
        path = IMAGE / source
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        assert files, f"COPY source {source} does not exist"
        for file in files:
            relative = file.relative_to(IMAGE).as_posix()
            assert _admitted_by_dockerignore(relative, patterns), f"image/.dockerignore leaves out {relative}"
