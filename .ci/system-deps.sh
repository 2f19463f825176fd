#!/usr/bin/env bash
# Installs the Debian packages the slow test tier needs: container tooling, a local registry,
# QEMU, and NVIDIA's module sources and kernel headers from Debian's contrib/non-free/backports.
# Idempotent; run as root. Pins live in tests/pins.env (one place).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
# shellcheck source=tests/pins.env
source "${HERE}/../tests/pins.env"

log() { printf 'system-deps: %s\n' "$*" >&2; }

_add_debian_components() {
    local file=/etc/apt/sources.list.d/nvidia-installer-ci.sources
    [[ -f "${file}" ]] && return 0
    log "adding contrib/non-free/backports sources"
    cat >"${file}" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

_block_service_starts() {
    # docker-registry's post-install would start a service; 101 = "action forbidden".
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
}

_install_packages() {
    log "apt-get update"
    apt-get update -qq
    log "installing tools, headers and NVIDIA sources"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        podman buildah skopeo docker-registry debootstrap runc uidmap fuse-overlayfs \
        qemu-system-x86 busybox-static cpio kmod xz-utils zstd binutils file \
        build-essential \
        "linux-headers-${KERNEL_61}-amd64" "linux-headers-${KERNEL_61}-cloud-amd64" \
        "linux-headers-${KERNEL_612}-amd64" "linux-headers-${KERNEL_61_BROKEN}-amd64" \
        "nvidia-open-kernel-source=${NVIDIA_DEBIAN_VERSION}" \
        "nvidia-kernel-source=${NVIDIA_DEBIAN_VERSION}" \
        >/dev/null
}

main() {
    _add_debian_components
    _block_service_starts
    _install_packages
    log "done"
}

main "$@"
