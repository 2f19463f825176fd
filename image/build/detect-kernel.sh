#!/usr/bin/env bash
# Finds the one kernel whose headers match a flavour and architecture, and prints KEY=VALUE lines:
#   KERNEL_NAME=6.1.0-50-cloud-amd64
#   HEADERS_DIR=/usr/src/linux-headers-6.1.0-50-cloud-amd64   (SYSOUT: the flavour's build tree)
#   COMMON_DIR=/usr/src/linux-headers-6.1.0-50-common         (SYSSRC: the shared sources)
# Debian (and Garden Linux, whose kernel packaging is Debian's) split the headers into a `-common`
# directory and one directory per flavour whose Makefile includes the common one
# (`include /usr/src/linux-headers-<v>-common/Makefile`); cloud is `*-cloud-<arch>`, metal is `*-<arch>`.
#
# Environment: KERNEL_FLAVOUR (cloud|metal), ARCH (amd64|arm64), HEADERS_ROOT (default /usr/src),
# KERNEL_VERSION (optional: only kernels named `<KERNEL_VERSION>-...`, for machines with several ABIs).
set -euo pipefail

LOG_PREFIX=detect-kernel
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly FLAVOUR="${KERNEL_FLAVOUR:?KERNEL_FLAVOUR must be cloud or metal}"
readonly TARGET_ARCH="${ARCH:?ARCH must be amd64 or arm64}"
readonly HEADERS_ROOT="${HEADERS_ROOT:-/usr/src}"
readonly KERNEL_VERSION="${KERNEL_VERSION:-}"

_is_flavour_match() {
    local name="$1"
    case "${FLAVOUR}" in
        cloud) [[ "${name}" == *-cloud-"${TARGET_ARCH}" ]] ;;
        metal) [[ "${name}" == *-"${TARGET_ARCH}" && "${name}" != *-cloud-* && "${name}" != *-rt-* ]] ;;
        *) return 1 ;;
    esac
}

_is_version_match() {
    local name="$1"
    [[ -z "${KERNEL_VERSION}" || "${name}" == "${KERNEL_VERSION}"-* ]]
}

_list_candidates() {
    local dir name
    for dir in "${HEADERS_ROOT}"/linux-headers-*; do
        [[ -d "${dir}" ]] || continue
        name="${dir##*/linux-headers-}"
        if _is_flavour_match "${name}" && _is_version_match "${name}"; then
            printf '%s\n' "${name}"
        fi
    done
}

# The flavour directory's Makefile names the common directory; an unsplit tree is its own common dir.
_find_common_dir() {
    local headers_dir="$1" included
    included=$(sed -n 's|^include[[:space:]]\+\(.*\)/Makefile[[:space:]]*$|\1|p' "${headers_dir}/Makefile" | head -n 1)
    if [[ -z "${included}" ]]; then
        printf '%s\n' "${headers_dir}"
        return 0
    fi
    # The path is absolute for the image's /usr/src; re-root it when the headers live elsewhere (tests).
    if [[ ! -d "${included}" && -d "${HEADERS_ROOT}/${included##*/}" ]]; then
        included="${HEADERS_ROOT}/${included##*/}"
    fi
    [[ -d "${included}" ]] || return 1
    printf '%s\n' "${included}"
}

# vermagic comes from UTS_RELEASE; a directory named differently would build modules for another name.
_check_release() {
    local name="$1" headers_dir="$2" header release
    header="${headers_dir}/include/generated/utsrelease.h"
    [[ -f "${header}" ]] || return 0
    release=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"$/\1/p' "${header}")
    [[ "${release}" == "${name}" ]] ||
        die "headers directory ${headers_dir} is for kernel '${release}', not '${name}': reinstall the headers"
}

main() {
    [[ "${FLAVOUR}" == cloud || "${FLAVOUR}" == metal ]] ||
        die "KERNEL_FLAVOUR='${FLAVOUR}' is not one of: cloud metal"
    nvidia_arch "${TARGET_ARCH}" >/dev/null || die "ARCH='${TARGET_ARCH}' is not one of: amd64 arm64"

    local -a candidates
    mapfile -t candidates < <(_list_candidates)
    local wanted="flavour ${FLAVOUR}, arch ${TARGET_ARCH}${KERNEL_VERSION:+, version ${KERNEL_VERSION}}"
    if [[ "${#candidates[@]}" -eq 0 ]]; then
        local present
        present=$(find "${HEADERS_ROOT}" -maxdepth 1 -name 'linux-headers-*' -printf '%f ' 2>/dev/null || true)
        die "no kernel headers for ${wanted} under ${HEADERS_ROOT} (present: ${present:-none}); install linux-headers for that flavour or pick another KERNEL_FLAVOUR"
    fi
    if [[ "${#candidates[@]}" -gt 1 ]]; then
        die "several kernels match ${wanted} under ${HEADERS_ROOT}: ${candidates[*]}; set KERNEL_VERSION to pick one"
    fi

    local name="${candidates[0]}" headers_dir common_dir
    headers_dir="${HEADERS_ROOT}/linux-headers-${name}"
    common_dir=$(_find_common_dir "${headers_dir}") ||
        die "the common headers that ${headers_dir}/Makefile includes are missing: install linux-headers-*-common"
    _check_release "${name}" "${headers_dir}"
    kv_print KERNEL_NAME "${name}" HEADERS_DIR "${headers_dir}" COMMON_DIR "${common_dir}"
}

main "$@"
