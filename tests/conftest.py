"""Session fixtures shared by the tiers and the hook that runs the e2e tier last. The helpers behind the
fixtures are plain modules (tests/image/compile_cache.py), which the benchmarks import too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.image.compile_cache import CompiledModules, cached_driver_tree, modules_factory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The e2e tier runs last: scripts/test.sh builds its tools in the background meanwhile."""
    e2e_dir = Path(__file__).parent / "e2e"
    items.sort(key=lambda item: Path(str(item.fspath)).is_relative_to(e2e_dir))


@pytest.fixture(scope="session")
def debian_driver_tree() -> Path:
    """NVIDIA's kernel-open/ and kernel/ trees as Debian packages them (version PINS NVIDIA_VERSION)."""
    return cached_driver_tree()


@pytest.fixture(scope="session")
def compiled_modules(debian_driver_tree: Path) -> CompiledModules:
    """Factory: `compiled_modules(kernel_release, module_type) -> Path`.

    Returns a directory holding the stripped `.ko` files of one module type (`open` or
    `proprietary`) built for `kernel_release` (e.g. `6.1.0-50-cloud-amd64`), plus `build.env`
    (DRIVER_VERSION, KERNEL_NAME, MODULE_TYPES, KERNEL_FLAVOUR, ARCH, HEADERS_DIR),
    `logs/<type>.log` and `compile.seconds`. Compiled once per cache key; fails the test with the
    build's own report.
    """
    return modules_factory(debian_driver_tree)
