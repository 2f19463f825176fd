#!/usr/bin/env bash
# The image's load-check stage (issue 4): boots the target kernel under QEMU with the freshly built
# modules of every built type (image/verify/load-check.sh does the work and judges the serial log) and
# writes MODULES_DIR/verdict.env for the payload. LOAD_CHECK=off records `skipped` instead.
# Usage: run-load-check.sh MODULES_DIR        (MODULES_DIR: compile-modules.sh's output)
# Environment: LOAD_CHECK (on|off, default on), ARCH, LOAD_CHECK_SCRIPT (default /verify/load-check.sh).
# A failed check fails the build: an image whose modules cannot load is never assembled or pushed.
# The stage runs on the build platform: for another architecture (arm64 on amd64) QEMU is the builder's
# (qemu-system-arm), the guest's kernel image and busybox-static are ARCH's packages, fetched with
# `dpkg --add-architecture` in this throw-away stage and unpacked, never run here.
set -euo pipefail

LOG_PREFIX=run-load-check
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly MODE="${LOAD_CHECK:-on}"
readonly LOAD_CHECK_SCRIPT="${LOAD_CHECK_SCRIPT:-/verify/load-check.sh}"

# The manifest quotes values in double quotes: keep characters out that would need escaping.
_clean() {
    tr -d "\n\r\"\$\`\\\\" <<<"$1"
}

_qemu_package() {
    case "$1" in
        amd64) printf 'qemu-system-x86\n' ;;
        arm64) printf 'qemu-system-arm\n' ;;
    esac
}

readonly GUEST_BUSYBOX_ROOT=/var/tmp/load-check-busybox

_is_foreign() {
    [[ "$1" != "$(host_arch)" ]]
}

# Tools come from the build base's own apt sources (Garden Linux's in kmodbuild), like the kernel.
_install_tools() {
    local arch="$1"
    local -a guest=(busybox-static)
    if _is_foreign "${arch}"; then
        log "adding ${arch} to dpkg's architectures (this stage's only): the guest's kernel and busybox"
        dpkg --add-architecture "${arch}"
        guest=()
    fi
    log "installing QEMU and initramfs tools"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "$(_qemu_package "${arch}")" "${guest[@]}" cpio kmod binutils xz-utils gzip >/dev/null
    _is_foreign "${arch}" || return 0
    _fetch_guest_busybox "${arch}"
}

# The guest's busybox-static, unpacked (the initramfs' only program, so it must be ARCH's).
_fetch_guest_busybox() {
    local arch="$1" debs
    debs=$(mktemp -d)
    (cd "${debs}" && apt-get download -q "busybox-static:${arch}" >/dev/null)
    mkdir -p "${GUEST_BUSYBOX_ROOT}"
    dpkg-deb -x "${debs}"/busybox-static_*.deb "${GUEST_BUSYBOX_ROOT}"
    rm -rf "${debs}"
    export LOAD_CHECK_BUSYBOX="${GUEST_BUSYBOX_ROOT}/bin/busybox"
}

# load-check.sh downloads the kernel package; another architecture's by its qualified name.
_kernel_package_args() {
    local arch="$1" kernel="$2"
    _is_foreign "${arch}" || return 0
    printf '%s\n' --kernel-package "linux-image-${kernel}:${arch}"
}

_write_verdict() {
    local out="$1" verdict="$2" kernel="$3" detail="$4"
    kv_write "${out}" LOAD_CHECK_VERDICT "${verdict}" LOAD_CHECK_KERNEL "${kernel}" \
        LOAD_CHECK_DETAIL "$(_clean "${detail}")" || die "cannot write ${out}"
}

main() {
    local modules="${1:?usage: run-load-check.sh MODULES_DIR}"
    local build_env="${modules}/build.env" kernel types arch
    [[ -f "${build_env}" ]] || die "${build_env} is missing: run compile-modules.sh first"
    kernel=$(kv_get "${build_env}" KERNEL_NAME) || die "${build_env} has no KERNEL_NAME"
    types=$(kv_get "${build_env}" MODULE_TYPES) || die "${build_env} has no MODULE_TYPES"
    arch="${ARCH:-$(kv_get "${build_env}" ARCH || true)}"

    case "${MODE}" in
        off)
            log "LOAD_CHECK=off: modules for ${kernel} are NOT proven to load"
            _write_verdict "${modules}/verdict.env" skipped "" "LOAD_CHECK=off at build time"
            return 0
            ;;
        on) ;;
        *) die "LOAD_CHECK='${MODE}' is not one of: on off" ;;
    esac

    _install_tools "${arch}"
    local type details=""
    local -a kernel_package
    mapfile -t kernel_package < <(_kernel_package_args "${arch}" "${kernel}")
    for type in ${types}; do
        log "load check: ${type} modules on kernel ${kernel}"
        # load-check.sh prints its one-line reason and exits non-zero on failure: the build stops here.
        # One kernel download for both module types (auto); kept outside MODULES_DIR, which later
        # stages copy.
        "${LOAD_CHECK_SCRIPT}" run "${modules}/${type}" "${kernel}" "${modules}/verdict-${type}.env" \
            --arch "${arch}" --kernel-cache /var/tmp/load-check-kernels "${kernel_package[@]}"
        details+="${details:+; }${type}: $(kv_get "${modules}/verdict-${type}.env" LOAD_CHECK_DETAIL || true)"
    done
    _write_verdict "${modules}/verdict.env" pass "${kernel}" "${details}"
    log "load check passed for ${types} on ${kernel}"
}

main "$@"
