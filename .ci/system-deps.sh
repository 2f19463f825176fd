#!/usr/bin/env bash
# Installs the Debian packages the slow test tier needs: container tooling, a local registry,
# QEMU, and NVIDIA's module sources and kernel headers from Debian's contrib/non-free/backports.
# For arm64 (cross compiled here, booted under qemu-system-aarch64) it installs the cross compiler and
# fetches Debian's arm64 packages into ARM64_ROOT with an APT configuration of its own, never into the
# host's dpkg (docs/image.md, "arm64"). Idempotent; run as root. Pins live in tests/pins.env (one place).
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
        build-essential gcc-aarch64-linux-gnu qemu-system-arm \
        "linux-headers-${KERNEL_61}-amd64" "linux-headers-${KERNEL_61}-cloud-amd64" \
        "linux-headers-${KERNEL_612}-amd64" "linux-headers-${KERNEL_61_BROKEN}-amd64" \
        "nvidia-open-kernel-source=${NVIDIA_DEBIAN_VERSION}" \
        "nvidia-kernel-source=${NVIDIA_DEBIAN_VERSION}" \
        >/dev/null
}

# ---- arm64: Debian's arm64 packages in a private directory (issue 13) ----

# What the arm64 slow tests compile against and boot: the headers of 6.1 (default and cloud flavours) and
# 6.12, the kernel images of those and of the negative control of another ABI, busybox for the guest and
# NVIDIA's arm64 module sources (their prebuilt nv-kernel.o_binary is per architecture).
_arm64_wanted() {
    printf '%s\n' "linux-headers-${KERNEL_61}-arm64" "linux-headers-${KERNEL_61}-cloud-arm64" \
        "linux-headers-${KERNEL_61}-common" "linux-headers-${KERNEL_612}-arm64" "linux-headers-${KERNEL_612}-common" \
        "linux-image-${KERNEL_61}-arm64" "linux-image-${KERNEL_61}-cloud-arm64" \
        "linux-image-${KERNEL_61_OLD}-arm64" "linux-image-${KERNEL_612}-arm64" \
        busybox-static:arm64 "nvidia-kernel-source:arm64=${NVIDIA_DEBIAN_VERSION}" \
        "nvidia-open-kernel-source:arm64=${NVIDIA_DEBIAN_VERSION}"
}

# A private APT state (own lists, status file and cache; both architectures), so nothing of the host's
# package state changes: the host keeps being amd64 only.
_arm64_apt_config() {
    local apt="${ARM64_ROOT}/apt"
    mkdir -p "${apt}/state/lists/partial" "${apt}/cache/archives/partial" "${apt}/sources.list.d"
    touch "${apt}/state/status"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg components="main contrib non-free non-free-firmware"
    local suite
    {
        for suite in bookworm bookworm-updates bookworm-backports; do
            printf 'deb [signed-by=%s] http://deb.debian.org/debian %s %s\n' "${keyring}" "${suite}" "${components}"
        done
        printf 'deb [signed-by=%s] http://deb.debian.org/debian-security bookworm-security %s\n' "${keyring}" "${components}"
    } >"${apt}/sources.list"
    cat >"${apt}/apt.conf" <<CONF
Dir::State "${apt}/state";
Dir::State::status "${apt}/state/status";
Dir::Cache "${apt}/cache";
Dir::Etc::SourceList "${apt}/sources.list";
Dir::Etc::SourceParts "${apt}/sources.list.d";
APT::Architecture "amd64";
APT::Architectures { "amd64"; "arm64"; };
Acquire::Languages "none";
APT::Sandbox::User "root";
CONF
    printf '%s\n' "${apt}/apt.conf"
}

# linux-kbuild-<series> of the headers' own version, for amd64: the arm64 package's fixdep and modpost
# are arm64 programs (Exec format error here); the headers' scripts/ and tools/ are relative links that
# find these once both are unpacked into one root.
_arm64_kbuild() {
    local config="$1" headers="$2" depends kbuild version
    depends=$(APT_CONFIG="${config}" apt-cache show --no-all-versions "${headers}" | sed -n 's/^Depends: //p')
    kbuild=$(grep -o 'linux-kbuild-[^ ,]*' <<<"${depends}" | head -n 1)
    version=$(APT_CONFIG="${config}" apt-cache show --no-all-versions "${headers}" | sed -n 's/^Version: //p')
    [[ -n "${kbuild}" && -n "${version}" ]] || {
        log "cannot tell which linux-kbuild ${headers} needs"
        return 1
    }
    printf '%s:amd64=%s\n' "${kbuild}" "${version}"
}

_arm64_unpack() {
    local debs="$1" deb name target
    rm -rf "${ARM64_ROOT}/headers" "${ARM64_ROOT}/kernels" "${ARM64_ROOT}/busybox" "${ARM64_ROOT}/nvidia"
    for deb in "${debs}"/*.deb; do
        name="${deb##*/}"
        name="${name%%_*}"
        case "${name}" in
            linux-headers-* | linux-kbuild-*) target="${ARM64_ROOT}/headers" ;;
            # The layout of load-check.sh --kernel-cache: <cache>/<package>/ with a .complete marker.
            linux-image-*) target="${ARM64_ROOT}/kernels/${name}" ;;
            busybox-static) target="${ARM64_ROOT}/busybox" ;;
            nvidia-*) target="${ARM64_ROOT}/nvidia" ;;
            *) continue ;;
        esac
        mkdir -p "${target}"
        dpkg-deb -x "${deb}" "${target}"
        [[ "${name}" != linux-image-* ]] || touch "${target}/.complete"
    done
}

_fetch_arm64() {
    local stamp="${ARM64_ROOT}/.complete" wanted config kbuild
    wanted=$(_arm64_wanted)
    if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${wanted}" ]]; then
        log "arm64 packages already in ${ARM64_ROOT}"
        return 0
    fi
    log "fetching arm64 packages into ${ARM64_ROOT} (private APT state; the host's dpkg is untouched)"
    rm -f "${stamp}"
    config=$(_arm64_apt_config)
    APT_CONFIG="${config}" apt-get update -qq
    # One linux-kbuild per kernel series (6.1, 6.12).
    kbuild=$(_arm64_kbuild "${config}" "linux-headers-${KERNEL_61}-arm64")
    kbuild+=" $(_arm64_kbuild "${config}" "linux-headers-${KERNEL_612}-arm64")"
    rm -rf "${ARM64_ROOT}/debs"
    mkdir -p "${ARM64_ROOT}/debs"
    local -a packages
    mapfile -t packages <<<"${wanted}"
    local -a kbuilds
    read -r -a kbuilds <<<"${kbuild}"
    (cd "${ARM64_ROOT}/debs" && APT_CONFIG="${config}" apt-get download -q "${packages[@]}" "${kbuilds[@]}" >/dev/null)
    _arm64_unpack "${ARM64_ROOT}/debs"
    rm -rf "${ARM64_ROOT}/debs"
    printf '%s\n' "${wanted}" >"${stamp}"
}

main() {
    _add_debian_components
    _block_service_starts
    _install_packages
    _fetch_arm64
    log "done"
}

main "$@"
