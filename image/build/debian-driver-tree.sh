#!/usr/bin/env bash
# Test seam: assembles the same tree layout that `sh NVIDIA-Linux-<arch>-<ver>.run -x` gives, from
# Debian's packages of the same driver, for builds that cannot reach NVIDIA's servers (the tests).
#   kernel-open/, kernel/         from nvidia-open-kernel-source / nvidia-kernel-source tarballs
#   lib*.so.<ver>, nvidia-smi ... flat at the top, like the .run
#   firmware/gsp_*.bin            from firmware-nvidia-gsp
# Usage: debian-driver-tree.sh OUTPUT_DIR
# Environment: DRIVER_VERSION (e.g. 535.261.03), ARCH (the target's, default this machine's: another
# architecture's packages are fetched as such, `dpkg --add-architecture` in the throw-away stage).
# Needs apt sources with contrib, non-free and non-free-firmware (the stand-in base carries them).
set -euo pipefail

LOG_PREFIX=debian-driver-tree
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly VERSION="${DRIVER_VERSION:?DRIVER_VERSION must be set}"
TARGET_ARCH="${ARCH:-$(host_arch)}"
readonly TARGET_ARCH
# Built from Debian's nvidia-graphics-drivers source at exactly the driver version.
readonly VERSIONED_PACKAGES=(nvidia-open-kernel-source nvidia-kernel-source nvidia-smi libcuda1
    libnvidia-ml1 firmware-nvidia-gsp)
# Separate Debian sources with their own versions: whatever the archive offers.
readonly UNVERSIONED_PACKAGES=(nvidia-modprobe nvidia-persistenced)

# The package of the target's architecture: `nvidia-smi:arm64` on an amd64 builder.
_for_target() {
    if [[ "${TARGET_ARCH}" == "$(host_arch)" ]]; then
        printf '%s\n' "$1"
    else
        printf '%s:%s\n' "$1" "${TARGET_ARCH}"
    fi
}

# Debian appends a revision (535.261.03-1); security updates would otherwise win, so pick it exactly.
_debian_version() {
    local package="$1" found
    found=$(apt-cache madison "$(_for_target "${package}")" | awk -F'|' -v v="${VERSION}" \
        '{gsub(/ /, "", $2)} index($2, v "-") == 1 {print $2; exit}')
    [[ -n "${found}" ]] || return 1
    printf '%s\n' "${found}"
}

_download_packages() {
    local debs="$1" package version
    local -a wanted=()
    for package in "${VERSIONED_PACKAGES[@]}"; do
        version=$(_debian_version "${package}") ||
            die "Debian's archive has no ${package} at driver version ${VERSION}: pick a version Debian packages (apt-cache madison ${package})"
        wanted+=("$(_for_target "${package}")=${version}")
    done
    for package in "${UNVERSIONED_PACKAGES[@]}"; do
        wanted+=("$(_for_target "${package}")")
    done
    log "downloading ${wanted[*]}"
    (cd "${debs}" && apt-get download -q "${wanted[@]}" >/dev/null)
}

_unpack_packages() {
    local debs="$1" root="$2" deb
    for deb in "${debs}"/*.deb; do
        dpkg-deb -x "${deb}" "${root}"
    done
}

_lay_out_tree() {
    local root="$1" out="$2" file
    mkdir -p "${out}/firmware" "${out}/unpack"
    tar -xJf "${root}/usr/src/nvidia-open-kernel.tar.xz" -C "${out}/unpack"
    tar -xJf "${root}/usr/src/nvidia-kernel.tar.xz" -C "${out}/unpack"
    mv "${out}/unpack/modules/nvidia-open-kernel" "${out}/kernel-open"
    mv "${out}/unpack/modules/nvidia-kernel" "${out}/kernel"
    rm -rf "${out}/unpack"
    while IFS= read -r file; do
        cp -a "${file}" "${out}/"
    done < <(find "${root}" -type f \( -name "lib*.so.${VERSION}" -o -name nvidia-smi \
        -o -name nvidia-modprobe -o -name nvidia-persistenced \))
    cp -a "${root}/lib/firmware/nvidia/${VERSION}"/gsp_*.bin "${out}/firmware/"
}

# Fresh package lists (a base image may ship none) and xz for the source tarballs.
_prepare_apt() {
    if [[ "${TARGET_ARCH}" != "$(host_arch)" ]]; then
        log "adding ${TARGET_ARCH} to dpkg's architectures (this stage's only)"
        dpkg --add-architecture "${TARGET_ARCH}"
    fi
    log "apt-get update"
    apt-get update -qq
    command -v xz >/dev/null && return 0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends xz-utils >/dev/null
}

main() {
    local out="${1:?usage: debian-driver-tree.sh OUTPUT_DIR}" work
    _prepare_apt
    work=$(mktemp -d)
    mkdir -p "${work}/debs" "${work}/root"
    _download_packages "${work}/debs"
    _unpack_packages "${work}/debs" "${work}/root"
    rm -rf "${out}"
    _lay_out_tree "${work}/root" "${out}"
    rm -rf "${work}"
    log "driver tree ${VERSION} from Debian packages in ${out}"
}

main "$@"
