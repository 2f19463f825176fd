#!/usr/bin/env bash
# The compile stage runs on the build platform (image/Dockerfile): when ARCH is not the builder's
# architecture it needs Debian's cross compiler for ARCH (gcc-aarch64-linux-gnu on amd64: the compiler
# Debian's arm64 kernels are built with, and its binutils' strip). Installs it from the builder's apt
# sources when it is missing; does nothing for a native build. compile-modules.sh then finds it by the
# prefix the headers name (docs/image.md, "arm64").
# Usage: install-cross-compiler.sh      Environment: ARCH (amd64|arm64).
set -euo pipefail

LOG_PREFIX=install-cross-compiler
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly TARGET_ARCH="${ARCH:?ARCH must be amd64 or arm64}"

# Debian's package of the default cross compiler for a triplet: gcc-aarch64-linux-gnu, gcc-x86-64-linux-gnu.
_package_for() {
    local triplet="$1"
    printf 'gcc-%s\n' "${triplet//_/-}"
}

main() {
    local host triplet package
    host=$(host_arch) || die "this machine ($(uname -m)) is neither amd64 nor arm64"
    triplet=$(gnu_triplet "${TARGET_ARCH}") || die "ARCH='${TARGET_ARCH}' is not one of: amd64 arm64"
    if [[ "${host}" == "${TARGET_ARCH}" ]]; then
        return 0
    fi
    if command -v "${triplet}-gcc" >/dev/null 2>&1 && command -v "${triplet}-strip" >/dev/null 2>&1; then
        log "cross compiler for ${TARGET_ARCH} already installed"
        return 0
    fi
    package=$(_package_for "${triplet}")
    log "installing ${package} (ARCH=${TARGET_ARCH} on ${host})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${package}" >/dev/null
}

main "$@"
