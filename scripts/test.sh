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

# The e2e tools (tools/build.sh: about 20 CPU-minutes cold, nothing when cached) build in the background at
# the lowest priority while the other tiers run: module compiles and QEMU boots leave a core idle much of
# the time. The e2e tests run last (tests/conftest.py) and wait for this build (tools/build.sh takes a lock).
TOOLS_BUILD_PID=""
readonly TOOLS_BUILD_LOG="${NVIDIA_INSTALLER_TOOLS_CACHE:-/var/tmp/nvidia-installer-tools}.build.log"

_start_tools_build() {
    log "building the e2e tools in the background (log: ${TOOLS_BUILD_LOG})"
    mkdir -p "$(dirname "${TOOLS_BUILD_LOG}")"
    nice -n 19 "${ROOT}/tools/build.sh" >"${TOOLS_BUILD_LOG}" 2>&1 &
    TOOLS_BUILD_PID=$!
    trap _stop_tools_build EXIT
}

_stop_tools_build() {
    # Normally finished: the e2e tests waited for it. Otherwise (interrupted, e2e deselected by -k) end it.
    if [[ -n "${TOOLS_BUILD_PID}" ]] && kill -0 "${TOOLS_BUILD_PID}" 2>/dev/null; then
        pkill -TERM -P "${TOOLS_BUILD_PID}" 2>/dev/null || true
        kill -TERM "${TOOLS_BUILD_PID}" 2>/dev/null || true
        wait "${TOOLS_BUILD_PID}" 2>/dev/null || true
    fi
    TOOLS_BUILD_PID=""
}

main() {
    if _wants_slow_tier "$@"; then
        _install_system_deps
    fi
    "${ROOT}/scripts/setup-venv.sh" requirements-dev.txt
    "${ROOT}/scripts/setup-venv.sh" requirements-checkov.txt .venv-checkov
    if _wants_e2e_tier "$@"; then
        _start_tools_build
    fi
    cd "${ROOT}"
    local status=0
    if ! _wants_slow_tier "$@" && ! _wants_e2e_tier "$@"; then
        _pytest_fast "$@" || status=$?
    elif ! _selects_tests "$@"; then
        # Everything: the fast tier first, spread over workers, then the slow and e2e tiers in one
        # process (pytest's exit code 5, "nothing collected", counts as success for a phase).
        _pytest_fast -m "not slow and not e2e" "$@" || status=$?
        if ((status == 5)); then status=0; fi
        local rest=0
        "${ROOT}/.venv/bin/python" -m pytest -m "slow or e2e" "$@" || rest=$?
        if ((rest != 0 && rest != 5 && status == 0)); then status="${rest}"; fi
    else
        "${ROOT}/.venv/bin/python" -m pytest "$@" || status=$?
    fi
    _stop_tools_build
    return "${status}"
}

# The fast tier spreads over pytest-xdist workers, two per core: its installer tests spend most of their
# time waiting on child processes, so twice the cores finishes sooner (node tests on 2 cores: 39 s with 4
# workers, 66 s with 2). The slow and e2e tiers share caches, a control plane and file locks, and the e2e
# tests must run last: they stay in one process.
_pytest_fast() {
    "${ROOT}/.venv/bin/python" -m pytest -n "$(($(nproc) * 2))" "$@"
}

# Did the arguments choose tests (a marker expression, -k, or paths/node ids)? Then run them as given.
_selects_tests() {
    local arg
    for arg in "$@"; do
        case "${arg}" in
            -m | -m* | -k | -k* | tests* | */*) return 0 ;;
        esac
    done
    return 1
}

main "$@"
