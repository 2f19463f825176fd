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

# The e_machine of an ELF file (elf(5): the 16-bit word at offset 18, little-endian on both our
# architectures), e.g. 62 for x86-64, 183 for aarch64; fails for a file that is not ELF.
elf_machine() {
    local file="$1" magic
    [[ -f "${file}" ]] || return 1
    magic=$(od -An -c -N4 "${file}" | tr -d ' ')
    [[ "${magic}" == '177ELF' ]] || return 1
    od -An -tu2 -j18 -N2 "${file}" | tr -d ' '
}

# What people call an e_machine value, for messages.
elf_machine_name() {
    case "$1" in
        62) printf 'x86-64\n' ;;
        183) printf 'aarch64\n' ;;
        3) printf 'i386\n' ;;
        40) printf '32-bit arm\n' ;;
        *) printf 'machine %s\n' "$1" ;;
    esac
}

# The e_machine of code for one of our architectures (Debian/OCI names).
arch_elf_machine() {
    case "$1" in
        amd64) printf '62\n' ;;
        arm64) printf '183\n' ;;
        *) return 1 ;;
    esac
}

# This machine's architecture in Debian/OCI naming.
host_arch() {
    case "$(uname -m)" in
        x86_64) printf 'amd64\n' ;;
        aarch64) printf 'arm64\n' ;;
        *) return 1 ;;
    esac
}

# Debian's GNU triplet of an architecture: its cross tools are <triplet>-gcc-12, <triplet>-strip.
gnu_triplet() {
    case "$1" in
        amd64) printf 'x86_64-linux-gnu\n' ;;
        arm64) printf 'aarch64-linux-gnu\n' ;;
        *) return 1 ;;
    esac
}
