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

# KEY=VALUE data (build.env, verdict files, manifest.env) is written and read only through
# image/lib/keyvalue.sh (kv_print, kv_write, kv_get, kv_parse): in the repository it is ../lib/ from
# here, in the image's build stages the Dockerfile copies it beside this file.
_KEYVALUE_LIB="$(dirname "${BASH_SOURCE[0]}")/keyvalue.sh"
[[ -f "${_KEYVALUE_LIB}" ]] || _KEYVALUE_LIB="$(dirname "${BASH_SOURCE[0]}")/../lib/keyvalue.sh"
# shellcheck source=image/lib/keyvalue.sh
source "${_KEYVALUE_LIB}"

# NVIDIA names the architectures differently from Debian and OCI (x86_64/aarch64 vs amd64/arm64).
nvidia_arch() {
    case "$1" in
        amd64) printf 'x86_64\n' ;;
        arm64) printf 'aarch64\n' ;;
        *) return 1 ;;
    esac
}
