#!/usr/bin/env bash
# Shared helpers for the build-time scripts (sourced, never run). One log prefix per script:
# each script sets LOG_PREFIX before sourcing.
set -euo pipefail

log() { printf '%s: %s\n' "${LOG_PREFIX:-build}" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "${LOG_PREFIX:-build}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${LOG_PREFIX:-build}" "$*" >&2
    exit 1
}

# env_value FILE KEY: the last KEY=VALUE of a data file (build.env, verdict.env), surrounding double
# quotes removed. These files are data: read them this way, never source them.
env_value() {
    local value
    value=$(sed -n "s/^$2=//p" "$1" | tail -n 1)
    value="${value#\"}"
    printf '%s\n' "${value%\"}"
}

# NVIDIA names the architectures differently from Debian and OCI (x86_64/aarch64 vs amd64/arm64).
nvidia_arch() {
    case "$1" in
        amd64) printf 'x86_64\n' ;;
        arm64) printf 'aarch64\n' ;;
        *) return 1 ;;
    esac
}
