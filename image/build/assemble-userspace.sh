#!/usr/bin/env bash
# Lays out the kernel-independent half of the driver from an extracted driver tree:
#   OUTPUT/bin/       nvidia-smi nvidia-modprobe nvidia-persistenced [nvidia-cuda-mps-*] [nv-fabricmanager]
#   OUTPUT/lib/       lib*.so.<ver> with their soname links (read from each library's DT_SONAME)
#   OUTPUT/firmware/nvidia/<ver>/gsp_*.bin   (the open modules load these at GPU init)
# Usage: assemble-userspace.sh DRIVER_TREE OUTPUT_DIR      Environment: DRIVER_VERSION.
# It depends on the driver only, never on a kernel: images for several kernels share this layer.
set -euo pipefail

LOG_PREFIX=assemble-userspace
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly VERSION="${DRIVER_VERSION:?DRIVER_VERSION must be set}"
readonly REQUIRED_BINARIES=(nvidia-smi nvidia-modprobe nvidia-persistenced)
# MPS is used by GPU sharing; fabric manager exists only where NVIDIA ships it with the driver tree.
readonly OPTIONAL_BINARIES=(nvidia-cuda-mps-control nvidia-cuda-mps-server nv-fabricmanager)
readonly REQUIRED_LIBRARIES=(libcuda libnvidia-ml)

_copy_binaries() {
    local tree="$1" out="$2" name
    for name in "${REQUIRED_BINARIES[@]}"; do
        [[ -f "${tree}/${name}" ]] || die "driver tree ${tree} has no ${name}"
        install -m 0755 "${tree}/${name}" "${out}/bin/${name}"
    done
    for name in "${OPTIONAL_BINARIES[@]}"; do
        [[ -f "${tree}/${name}" ]] && install -m 0755 "${tree}/${name}" "${out}/bin/${name}"
    done
    return 0
}

# Prints nothing for a file without DT_SONAME (or not ELF at all).
_soname_of() {
    local dynamic
    dynamic=$(readelf -d "$1" 2>/dev/null) || return 0
    sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p' <<<"${dynamic}"
}

# Only the tree's top level: the .run keeps 32-bit copies under 32/, which a 64-bit node never uses.
_copy_libraries() {
    local tree="$1" out="$2" lib name soname
    for lib in "${tree}"/lib*.so."${VERSION}"; do
        [[ -f "${lib}" ]] || continue
        name="${lib##*/}"
        install -m 0755 "${lib}" "${out}/lib/${name}"
        soname=$(_soname_of "${lib}")
        if [[ -n "${soname}" && "${soname}" != "${name}" ]]; then
            ln -sf "${name}" "${out}/lib/${soname}"
        fi
    done
    for name in "${REQUIRED_LIBRARIES[@]}"; do
        [[ -f "${out}/lib/${name}.so.${VERSION}" ]] || die "driver tree ${tree} has no ${name}.so.${VERSION}"
    done
}

_copy_firmware() {
    local tree="$1" out="$2" target="$2/firmware/nvidia/${VERSION}"
    local -a blobs=("${tree}"/firmware/gsp_*.bin)
    [[ -f "${blobs[0]}" ]] || die "driver tree ${tree} has no firmware/gsp_*.bin (the open modules need it)"
    mkdir -p "${target}"
    install -m 0644 "${blobs[@]}" "${target}/"
}

main() {
    local tree="${1:?usage: assemble-userspace.sh DRIVER_TREE OUTPUT_DIR}"
    local out="${2:?usage: assemble-userspace.sh DRIVER_TREE OUTPUT_DIR}"
    mkdir -p "${out}/bin" "${out}/lib"
    _copy_binaries "${tree}" "${out}"
    _copy_libraries "${tree}" "${out}"
    _copy_firmware "${tree}" "${out}"
    log "user space of ${VERSION}: $(find "${out}" -type f | wc -l) files in ${out}"
}

main "$@"
