#!/usr/bin/env bash
# Gets NVIDIA's driver installer for one version and arch, checks its SHA-256 against the checksum file
# kept in the repository, and extracts it (`sh X.run -x`: extraction only, nothing is installed).
#
# Usage:
#   fetch-driver.sh fetch OUTPUT_DIR      download (us. mirror, then uk.), verify, extract to OUTPUT_DIR
#   fetch-driver.sh check                 refuse DRIVER_VERSION/ARCH as fetch would, download nothing;
#                                         prints the expected `<sha256>  <file name>`
#   fetch-driver.sh verify RUN_FILE       verify a local file (its name says version and arch)
#   fetch-driver.sh list                  the checksum file's entries as `<sha256>  <file name>`
# Environment: DRIVER_VERSION, ARCH (amd64|arm64) for fetch and check; CHECKSUM_FILE (default: the
#   repository's); NVIDIA_MIRRORS (space-separated base URLs, default NVIDIA's datacenter servers).
# The rules are the Pulumi preview's (components/versions.py, components/checksums.py): a version it
# accepts is one this script fetches, and tests/test_contracts.py keeps the two sides equal.
set -euo pipefail

LOG_PREFIX=fetch-driver
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${HERE}/lib.sh"

readonly CHECKSUM_FILE="${CHECKSUM_FILE:-${HERE}/../checksums/nvidia-driver.sha256}"
# Datacenter ("tesla") driver downloads; uk. serves the same files when us. is unreachable.
WORK=""
readonly NVIDIA_MIRRORS="${NVIDIA_MIRRORS:-https://us.download.nvidia.com/tesla https://uk.download.nvidia.com/tesla}"

# The checksum file's entries as `<sha256> <file name>` lines, the first line of a name only. A line is
# `<64 lowercase hex>  [*]NVIDIA-Linux-<x86_64|aarch64>-<version>.run` (CRLF, surrounding blanks and
# `#` comments allowed); other lines are not entries.
_checksum_entries() {
    local line sum file seen=" "
    [[ -r "${CHECKSUM_FILE}" ]] || die "checksum file ${CHECKSUM_FILE} is missing"
    while IFS= read -r line || [[ -n "${line}" ]]; do
        line="${line%$'\r'}"
        IFS=$' \t' read -r sum file <<<"${line}" || true
        file="${file#\*}"
        [[ "${sum}" =~ ^[0-9a-f]{64}$ && "${file}" =~ ^NVIDIA-Linux-(x86_64|aarch64)-[0-9.]+\.run$ ]] || continue
        [[ "${seen}" == *" ${file} "* ]] && continue
        seen+="${file} "
        printf '%s %s\n' "${sum}" "${file}"
    done <"${CHECKSUM_FILE}"
}

# Prints the expected checksum of a file name, or fails when the checksum file has no entry for it.
_expected_sha256() {
    local name="$1" entries sum file
    entries=$(_checksum_entries) || exit 1
    while read -r sum file; do
        if [[ "${file}" == "${name}" ]]; then
            printf '%s\n' "${sum}"
            return 0
        fi
    done <<<"${entries}"
    return 1
}

_known_versions() {
    _checksum_entries | sed -n 's/^[0-9a-f]* NVIDIA-Linux-\(.*\)\.run$/\1/p' | tr '\n' ' '
}

_require_known() {
    local name="$1" expected
    if ! expected=$(_expected_sha256 "${name}"); then
        die "no checksum for ${name} in ${CHECKSUM_FILE} (known: $(_known_versions)); add NVIDIA's published SHA-256 for it (docs/image.md) or pick a listed version"
    fi
    printf '%s\n' "${expected}"
}

# MAJOR.MINOR.PATCH as NVIDIA numbers its drivers (580.159.04, 535.154.05): a three-digit branch, one
# to three digits, two digits. The preview's rule (components/versions.py).
_is_driver_version() {
    [[ "$1" =~ ^[1-9][0-9]{2}\.[0-9]{1,3}\.[0-9]{2}$ ]]
}

# NVIDIA's file name for DRIVER_VERSION and ARCH; dies on a version the preview would refuse.
_requested_name() {
    local version="${DRIVER_VERSION:?DRIVER_VERSION must be set}" arch
    arch=$(nvidia_arch "${ARCH:?ARCH must be set}") || die "ARCH='${ARCH}' is not one of: amd64 arm64"
    _is_driver_version "${version}" ||
        die "DRIVER_VERSION='${version}' is not an NVIDIA driver version MAJOR.MINOR.PATCH (like 580.159.04)"
    printf 'NVIDIA-Linux-%s-%s.run\n' "${arch}" "${version}"
}

cmd_check() {
    local name expected
    name=$(_requested_name) || exit 1
    expected=$(_require_known "${name}") || exit 1
    printf '%s  %s\n' "${expected}" "${name}"
}

_verify_file() {
    local file="$1" name expected actual
    name="${file##*/}"
    expected=$(_require_known "${name}")
    [[ -f "${file}" ]] || die "${file} does not exist"
    actual=$(sha256sum "${file}" | cut -d' ' -f1)
    if [[ "${actual}" != "${expected}" ]]; then
        die "checksum mismatch for ${name}: expected ${expected} (from ${CHECKSUM_FILE}), got ${actual}; the download is corrupt or not NVIDIA's file"
    fi
    log "checksum ok: ${name}"
}

_download() {
    local name="$1" version="$2" target="$3" mirror
    for mirror in ${NVIDIA_MIRRORS}; do
        log "downloading ${mirror}/${version}/${name}"
        if curl -fsSL --retry 3 --connect-timeout 20 -o "${target}" "${mirror}/${version}/${name}"; then
            return 0
        fi
        warn "download from ${mirror} failed"
    done
    die "could not download ${name} from any of: ${NVIDIA_MIRRORS}"
}

cmd_fetch() {
    local output="${1:?usage: fetch-driver.sh fetch OUTPUT_DIR}" version name
    # Refuse a malformed or unknown version before spending time on a download.
    name=$(_requested_name) || exit 1
    _require_known "${name}" >/dev/null || exit 1
    version="${DRIVER_VERSION}"
    WORK=$(mktemp -d)
    # A failed download or a mismatch leaves nothing behind (the installer is hundreds of MB).
    trap 'rm -rf "${WORK}"' EXIT
    _download "${name}" "${version}" "${WORK}/${name}"
    _verify_file "${WORK}/${name}"
    log "extracting ${name}"
    (cd "${WORK}" && sh "./${name}" -x >/dev/null)
    rm -rf "${output}"
    mv "${WORK}/${name%.run}" "${output}"
}

main() {
    local command="${1:-}"
    shift || true
    case "${command}" in
        fetch) cmd_fetch "$@" ;;
        check) cmd_check ;;
        verify) _verify_file "${1:?usage: fetch-driver.sh verify RUN_FILE}" ;;
        list) _checksum_entries | sed 's/ /  /' ;;
        *) die "usage: fetch-driver.sh fetch OUTPUT_DIR | check | verify RUN_FILE | list" ;;
    esac
}

main "$@"
