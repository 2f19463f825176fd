#!/usr/bin/env bash
# Builds NVIDIA's kernel modules (open and/or proprietary) against one kernel's headers, strips
# their debug info and records what was built. Runs in the image's compile stage and, for the
# tests, directly on a machine with headers under /usr/src.
#
# Environment:
#   DRIVER_TREE     extracted driver tree with kernel-open/ and/or kernel/ (as `sh X.run -x` gives)
#   OUTPUT_DIR      receives <type>/*.ko (stripped), build.env, logs/<type>.log
#   MODULE_TYPE     auto (both) | open | proprietary                           (default auto)
#   KERNEL_FLAVOUR, ARCH, HEADERS_ROOT, KERNEL_VERSION   see detect-kernel.sh
#   DRIVER_VERSION  optional; when set it must match the tree's version
#   JOBS            parallel make jobs (default: nproc)
# A failed build ends with one line naming driver, kernel and first compiler error, then an excerpt.
set -euo pipefail

LOG_PREFIX=compile-modules
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${HERE}/lib.sh"

readonly DRIVER_TREE="${DRIVER_TREE:?DRIVER_TREE must name the extracted driver tree}"
readonly OUTPUT_DIR="${OUTPUT_DIR:?OUTPUT_DIR must name the output directory}"
readonly MODULE_TYPE="${MODULE_TYPE:-auto}"
readonly JOBS="${JOBS:-$(nproc)}"

# The modules NVIDIA's Makefiles build (nvidia-peermem only where the kernel offers peer memory).
readonly REQUIRED_MODULES=(nvidia nvidia-uvm nvidia-modeset nvidia-drm)

_module_types() {
    case "${MODULE_TYPE}" in
        auto) printf 'open\nproprietary\n' ;;
        open | proprietary) printf '%s\n' "${MODULE_TYPE}" ;;
        *) return 1 ;;
    esac
}

_source_dir_for() {
    case "$1" in
        open) printf '%s/kernel-open\n' "${DRIVER_TREE}" ;;
        proprietary) printf '%s/kernel\n' "${DRIVER_TREE}" ;;
    esac
}

# Kbuild carries `-DNV_VERSION_STRING=\"<ver>\"` in both the .run tree and Debian's source tarballs.
_read_tree_version() {
    local kbuild="$1/Kbuild" version
    [[ -f "${kbuild}" ]] || return 1
    version=$(sed -n 's/.*-DNV_VERSION_STRING=\\"\([0-9.]*\)\\".*/\1/p' "${kbuild}" | head -n 1)
    [[ -n "${version}" ]] || return 1
    printf '%s\n' "${version}"
}

_detect_kernel() {
    local out
    local -A found=()
    out=$("${HERE}/detect-kernel.sh") || return 1
    kv_parse found <<<"${out}"
    KERNEL_NAME="${found[KERNEL_NAME]:-}" HEADERS_DIR="${found[HEADERS_DIR]:-}" COMMON_DIR="${found[COMMON_DIR]:-}"
}

_build_type() {
    local type="$1" version="$2" src scratch log
    src=$(_source_dir_for "${type}")
    [[ -d "${src}" ]] || die "driver tree ${DRIVER_TREE} has no ${src##*/}/ for the ${type} modules"
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/nvidia-${type}.XXXXXX")
    # make writes objects into the source tree: build a copy so the tree stays reusable.
    cp -a "${src}/." "${scratch}/"
    log="${OUTPUT_DIR}/logs/${type}.log"
    mkdir -p "${OUTPUT_DIR}/logs"
    # NVIDIA's Makefile reads ARCH (x86_64 or arm64, its default is `uname -m`); ours says amd64.
    local make_arch=x86_64
    [[ "${ARCH}" == arm64 ]] && make_arch=arm64
    local -a make_args=(-C "${scratch}" -j "${JOBS}" modules "ARCH=${make_arch}"
        "SYSSRC=${COMMON_DIR}" "SYSOUT=${HEADERS_DIR}")
    # Headers-only trees sometimes lack Module.symvers; NVIDIA's Kbuild refuses then unless told.
    [[ -f "${HEADERS_DIR}/Module.symvers" ]] || make_args+=(IGNORE_MISSING_MODULE_SYMVERS=1)
    log "building ${type} modules of ${version} for ${KERNEL_NAME} (make -j${JOBS}), log: ${log}"
    local started="${SECONDS}"
    # C locale: plain ASCII quotes in gcc's messages. The kernel's Makefile unexports LC_ALL, so LANG
    # and LC_MESSAGES/LC_CTYPE must say C as well.
    if ! LC_ALL=C LANG=C LC_CTYPE=C LC_MESSAGES=C make "${make_args[@]}" >"${log}" 2>&1; then
        "${HERE}/condense-log.sh" "${log}" "${version}" "${KERNEL_NAME}" "${type}" >&2
        rm -rf "${scratch}"
        return 1
    fi
    log "built ${type} modules in $((SECONDS - started)) s"
    _collect_modules "${type}" "${scratch}"
    rm -rf "${scratch}"
}

_collect_modules() {
    local type="$1" scratch="$2" name ko
    mkdir -p "${OUTPUT_DIR}/${type}"
    for name in "${REQUIRED_MODULES[@]}"; do
        [[ -f "${scratch}/${name}.ko" ]] || die "make succeeded but ${name}.ko is missing for ${type}"
    done
    for ko in "${scratch}"/*.ko; do
        # Debug info is 90% of the size (262 MB -> 17 MB for one driver); nodes never need it.
        strip --strip-debug -o "${OUTPUT_DIR}/${type}/${ko##*/}" "${ko}"
    done
}

_write_build_env() {
    local version="$1"
    shift
    kv_write "${OUTPUT_DIR}/build.env" DRIVER_VERSION "${version}" KERNEL_NAME "${KERNEL_NAME}" \
        MODULE_TYPES "$*" KERNEL_FLAVOUR "${KERNEL_FLAVOUR}" ARCH "${ARCH}" HEADERS_DIR "${HEADERS_DIR}" ||
        die "cannot write ${OUTPUT_DIR}/build.env"
}

main() {
    local -a types
    mapfile -t types < <(_module_types || true)
    [[ "${#types[@]}" -gt 0 ]] || die "MODULE_TYPE='${MODULE_TYPE}' is not one of: auto open proprietary"
    [[ -d "${DRIVER_TREE}" ]] || die "DRIVER_TREE ${DRIVER_TREE} is not a directory"

    local version
    version=$(_read_tree_version "$(_source_dir_for "${types[0]}")") ||
        die "cannot read the driver version from ${DRIVER_TREE}: not an NVIDIA driver tree?"
    if [[ -n "${DRIVER_VERSION:-}" && "${DRIVER_VERSION}" != "${version}" ]]; then
        die "driver tree ${DRIVER_TREE} is version ${version}, but DRIVER_VERSION=${DRIVER_VERSION}"
    fi

    _detect_kernel || exit 1
    mkdir -p "${OUTPUT_DIR}"
    local type
    for type in "${types[@]}"; do
        _build_type "${type}" "${version}" || exit 1
    done
    _write_build_env "${version}" "${types[@]}"
    log "done: ${types[*]} modules of ${version} for ${KERNEL_NAME} in ${OUTPUT_DIR}"
}

main "$@"
