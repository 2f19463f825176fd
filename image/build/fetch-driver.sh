#!/usr/bin/env bash
# Gets NVIDIA's driver installer for one version and arch, checks its SHA-256 against the checksum file
# kept in the repository, and extracts it (`sh X.run -x`: extraction only, nothing is installed).
#
# Usage:
#   fetch-driver.sh fetch OUTPUT_DIR      download (us. mirror, then uk.), verify, extract to OUTPUT_DIR
#   fetch-driver.sh verify RUN_FILE       verify a local file (its name says version and arch)
# Environment: DRIVER_VERSION, ARCH (amd64|arm64) for fetch; CHECKSUM_FILE (default: the repository's);
#   NVIDIA_MIRRORS (space-separated base URLs, default NVIDIA's datacenter servers).
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

# Prints the expected checksum of a file name, or fails when the checksum file has no line for it.
_expected_sha256() {
    local name="$1" sum file
    [[ -r "${CHECKSUM_FILE}" ]] || die "checksum file ${CHECKSUM_FILE} is missing"
    while read -r sum file; do
        [[ -z "${sum}" || "${sum}" == \#* ]] && continue
        if [[ "${file#\*}" == "${name}" ]]; then
            printf '%s\n' "${sum}"
            return 0
        fi
    done <"${CHECKSUM_FILE}"
    return 1
}

_known_versions() {
    sed -n 's/^[0-9a-f]\{64\}[[:space:]]\+\*\{0,1\}NVIDIA-Linux-\(.*\)\.run$/\1/p' "${CHECKSUM_FILE}" | tr '\n' ' '
}

_require_known() {
    local name="$1" expected
    if ! expected=$(_expected_sha256 "${name}"); then
        die "no checksum for ${name} in ${CHECKSUM_FILE} (known: $(_known_versions)); add NVIDIA's published SHA-256 for it (docs/image.md) or pick a listed version"
    fi
    printf '%s\n' "${expected}"
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
    local output="${1:?usage: fetch-driver.sh fetch OUTPUT_DIR}"
    local version="${DRIVER_VERSION:?DRIVER_VERSION must be set}" arch name
    arch=$(nvidia_arch "${ARCH:?ARCH must be set}") || die "ARCH='${ARCH}' is not one of: amd64 arm64"
    name="NVIDIA-Linux-${arch}-${version}.run"
    # Refuse an unknown version before spending time on a download.
    _require_known "${name}" >/dev/null
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
        verify) _verify_file "${1:?usage: fetch-driver.sh verify RUN_FILE}" ;;
        *) die "usage: fetch-driver.sh fetch OUTPUT_DIR | verify RUN_FILE" ;;
    esac
}

main "$@"
