#!/usr/bin/env bash
# Packs the kernel-specific payload (the image's last, small layer):
#   PAYLOAD_DIR/modules-<type>.tar.zst   the stripped *.ko of each built type
#   PAYLOAD_DIR/manifest.env             KEY=VALUE lines (docs/architecture.md lists the keys)
#   PAYLOAD_DIR/SHA256SUMS               sha256 of every file above; the node checks it first
# Usage: pack-payload.sh MODULES_DIR PAYLOAD_DIR
#   MODULES_DIR holds build.env and <type>/*.ko (compile-modules.sh's output) and, unless the load check
#   was skipped, verdict.env (LOAD_CHECK_VERDICT, LOAD_CHECK_KERNEL, LOAD_CHECK_DETAIL).
# Environment: GL_VERSION.
set -euo pipefail

LOG_PREFIX=pack-payload
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly GL="${GL_VERSION:?GL_VERSION must be set}"

# kmodbuild guarantees no compressor beyond what build-essential pulls in: bring zstd.
_ensure_zstd() {
    command -v zstd >/dev/null && return 0
    log "installing zstd"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zstd >/dev/null
}

# Same bytes for the same modules: sorted names, fixed owner and time, so unchanged input gives the
# same layer digest.
_pack_type() {
    local dir="$1" target="$2"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "${dir}" -cf - . |
        zstd -19 -q -T0 -o "${target}"
}

# The manifest: KEY VALUE pairs from build.env (and GL_VERSION) and verdict.env, in a fixed order.
_manifest_pairs() {
    local build_env="$1" verdict_env="$2" key
    for key in DRIVER_VERSION KERNEL_NAME MODULE_TYPES; do
        printf '%s\n%s\n' "${key}" "$(kv_get "${build_env}" "${key}")"
    done
    printf '%s\n%s\n' GL_VERSION "${GL}"
    for key in ARCH KERNEL_FLAVOUR; do
        printf '%s\n%s\n' "${key}" "$(kv_get "${build_env}" "${key}")"
    done
    for key in LOAD_CHECK_VERDICT LOAD_CHECK_KERNEL LOAD_CHECK_DETAIL; do
        printf '%s\n%s\n' "${key}" "$(kv_get "${verdict_env}" "${key}" || true)"
    done
}

main() {
    local modules="${1:?usage: pack-payload.sh MODULES_DIR PAYLOAD_DIR}"
    local payload="${2:?usage: pack-payload.sh MODULES_DIR PAYLOAD_DIR}"
    local build_env="${modules}/build.env" verdict_env="${modules}/verdict.env"
    [[ -f "${build_env}" ]] || die "${build_env} is missing: run compile-modules.sh first"
    [[ -f "${verdict_env}" ]] || die "${verdict_env} is missing: the load check stage wrote no verdict"

    _ensure_zstd
    local types type
    types=$(kv_get "${build_env}" MODULE_TYPES) || die "${build_env} has no MODULE_TYPES"
    mkdir -p "${payload}"
    for type in ${types}; do
        [[ -f "${modules}/${type}/nvidia.ko" ]] || die "${modules}/${type}/nvidia.ko is missing"
        _pack_type "${modules}/${type}" "${payload}/modules-${type}.tar.zst"
    done
    local -a pairs=()
    mapfile -t pairs < <(_manifest_pairs "${build_env}" "${verdict_env}")
    kv_write "${payload}/manifest.env" "${pairs[@]}" || die "manifest values must be one line each: ${pairs[*]}"
    (cd "${payload}" && sha256sum -- manifest.env modules-*.tar.zst >SHA256SUMS)
    log "payload for $(kv_get "${build_env}" KERNEL_NAME): $(du -sh "${payload}" | cut -f1)"
}

main "$@"
