"""Real module compiles: NVIDIA's sources as Debian packages them against real Debian kernel headers.

Each (kernel, module type) compiles once per cache key (tests/image/compile_cache.py); the QEMU
load-check tests reuse the same builds. Pins: tests/pins.env.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.image.compile_cache import CompiledModules, run_compile
from tests.pins import PINS

pytestmark = pytest.mark.slow

VERSION = PINS["NVIDIA_VERSION"]
K61 = PINS["KERNEL_61"]
K612 = PINS["KERNEL_612"]
REQUIRED = ("nvidia", "nvidia-uvm", "nvidia-modeset", "nvidia-drm")
# What the assertions need: both flavours of 6.1 (flavour detection), the 6.12 series, both types.
# The cloud flavour builds open only: proprietary adds nothing the default flavour does not prove.
BUILDS = [
    (f"{K61}-amd64", "open"),
    (f"{K61}-cloud-amd64", "open"),
    (f"{K61}-amd64", "proprietary"),
    (f"{K612}-amd64", "open"),
    (f"{K612}-amd64", "proprietary"),
]


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in pairs}


def modinfo(field: str, ko: Path) -> str:
    return subprocess.run(
        ["modinfo", "-F", field, str(ko)], capture_output=True, text=True, check=True
    ).stdout.strip()


def section_names(ko: Path) -> set[str]:
    out = subprocess.run(["readelf", "-S", "-W", str(ko)], capture_output=True, text=True, check=True).stdout
    return {word for line in out.splitlines() for word in line.split() if word.startswith(".")}


@pytest.mark.parametrize(("release", "module_type"), BUILDS, ids=[f"{r}-{t}" for r, t in BUILDS])
def test_modules_are_built_for_the_headers_kernel_and_stripped(
    compiled_modules: CompiledModules, release: str, module_type: str
) -> None:
    modules = compiled_modules(release, module_type)
    build = read_env(modules / "build.env")
    # Flavour detection chose exactly this headers directory among all of /usr/src.
    assert build["KERNEL_NAME"] == release
    assert build["HEADERS_DIR"] == f"/usr/src/linux-headers-{release}"
    assert build["KERNEL_FLAVOUR"] == ("cloud" if "-cloud-" in release else "metal")
    assert build["DRIVER_VERSION"] == VERSION
    assert build["MODULE_TYPES"] == module_type
    for name in REQUIRED:
        ko = modules / f"{name}.ko"
        assert ko.is_file(), f"{name}.ko missing for {release} {module_type}"
        vermagic = modinfo("vermagic", ko)
        assert vermagic.split()[0] == release, f"{name}.ko vermagic {vermagic!r} is not for {release}"
        assert modinfo("version", ko) == VERSION or name != "nvidia"
        sections = section_names(ko)
        debug = sorted(section for section in sections if section.startswith(".debug"))
        assert debug == [], f"{name}.ko still has debug sections {debug}"
        assert ".modinfo" in sections  # stripping debug info must keep what the loader needs


def test_the_cloud_flavour_differs_from_the_default_one(compiled_modules: CompiledModules) -> None:
    default = compiled_modules(f"{K61}-amd64", "open") / "nvidia.ko"
    cloud = compiled_modules(f"{K61}-cloud-amd64", "open") / "nvidia.ko"
    assert modinfo("vermagic", cloud).startswith(f"{K61}-cloud-amd64 ")
    assert modinfo("vermagic", default).startswith(f"{K61}-amd64 ")


def test_known_incompatibility_fails_with_one_line_naming_the_kernel_api(
    debian_driver_tree: Path, tmp_path: Path
) -> None:
    # 535.261.03 against 6.1.0-56 (kernel 6.1.192): pci_resize_resource gained an argument.
    release = f"{PINS['KERNEL_61_BROKEN']}-amd64"
    result = run_compile(debian_driver_tree, tmp_path / "out", release, "open")
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    failures = [line for line in lines if " failed: " in line]
    assert len(failures) == 1, result.stderr[-3000:]
    assert failures[0].startswith(
        f"building the open modules of NVIDIA driver {VERSION} for kernel {release} failed:"
    )
    assert "pci_resize_resource" in failures[0]
    # The report is short; the full log stays on disk for whoever wants it.
    assert len(result.stderr) < 6000
    assert (tmp_path / "out" / "logs" / "open.log").stat().st_size > 10 * len(result.stderr)
    assert not (tmp_path / "out" / "open").exists()
    assert not (tmp_path / "out" / "build.env").exists()


def test_missing_headers_fail_naming_flavour(debian_driver_tree: Path, tmp_path: Path) -> None:
    # Real /usr/src, a kernel version with no headers installed: one clear line, nothing built.
    if shutil.which("make") is None:
        pytest.fail("make is missing: run .ci/system-deps.sh")
    result = subprocess.run(
        [str(Path(__file__).resolve().parents[2] / "image" / "build" / "compile-modules.sh")],
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "DRIVER_TREE": str(debian_driver_tree),
            "OUTPUT_DIR": str(tmp_path / "out"),
            "KERNEL_FLAVOUR": "cloud",
            "ARCH": "amd64",
            "KERNEL_VERSION": "6.99.0-1",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "no kernel headers for flavour cloud, arch amd64, version 6.99.0-1" in result.stderr
    assert not (tmp_path / "out").exists()


def packed_open_payload_size(open_modules: Path, release: str, arch: str, tmp_path: Path) -> int:
    """Bytes of modules-open.tar.zst as the image's own pack-payload.sh packs these open modules."""
    modules = tmp_path / "modules"
    shutil.copytree(open_modules, modules / "open", ignore=shutil.ignore_patterns("logs"))
    (modules / "build.env").write_text(
        f"DRIVER_VERSION={VERSION}\nKERNEL_NAME={release}\nMODULE_TYPES=open\nARCH={arch}\nKERNEL_FLAVOUR=metal\n"
    )
    (modules / "verdict.env").write_text(f"LOAD_CHECK_VERDICT=pass\nLOAD_CHECK_KERNEL={release}\n")
    pack = Path(__file__).resolve().parents[2] / "image" / "build" / "pack-payload.sh"
    payload = tmp_path / "payload"
    subprocess.run([str(pack), str(modules), str(payload)], env={**os.environ, "GL_VERSION": "1877.17"},
                   check=True, capture_output=True)  # fmt: skip
    return (payload / "modules-open.tar.zst").stat().st_size


@pytest.mark.parametrize("release", [f"{K61}-amd64", f"{K612}-amd64"])
def test_an_open_modules_payload_is_at_most_6_mib_per_kernel(
    compiled_modules: CompiledModules, tmp_path: Path, release: str
) -> None:
    """The default payload (open modules, docs/configuration.md "Module types") packed by the image's own
    pack-payload.sh: what a node pulls on a kernel change stays a few megabytes."""
    size = packed_open_payload_size(compiled_modules(release, "open"), release, "amd64", tmp_path)
    assert size <= 6 * 2**20, f"modules-open.tar.zst for {release} is {size / 2**20:.1f} MiB"
