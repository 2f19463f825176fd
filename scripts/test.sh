#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian 12 machine, then runs pytest.
# Usage: scripts/test.sh [pytest args]   e.g. scripts/test.sh -m "not slow and not e2e"   (fast tier, < 1 min)
# The slow tier needs root for apt (kernel headers, NVIDIA sources, podman, QEMU); the e2e tier needs the
# tools tools/build.sh builds from pinned Go modules (cached outside the work tree); the fast tier neither.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT

log() { printf 'test: %s\n' "$*" >&2; }

_wants_slow_tier() {
    [[ " $* " != *"not slow"* ]]
}

_wants_e2e_tier() {
    [[ " $* " != *"not e2e"* ]]
}

_install_system_deps() {
    if [[ "$(id -u)" -ne 0 ]]; then
        log "not root: skipping Debian packages; slow tests will report what is missing"
        return 0
    fi
    "${ROOT}/.ci/system-deps.sh"
}

main() {
    if _wants_slow_tier "$@"; then
        _install_system_deps
    fi
    "${ROOT}/scripts/setup-venv.sh" requirements-dev.txt
    if _wants_e2e_tier "$@"; then
        "${ROOT}/tools/build.sh" >/dev/null
    fi
    cd "${ROOT}"
    exec "${ROOT}/.venv/bin/python" -m pytest "$@"
}

main "$@"
