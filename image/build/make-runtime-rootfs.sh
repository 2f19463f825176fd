#!/usr/bin/env bash
# Copies the few Debian packages the node-side entrypoint uses, plus the shared libraries their
# programs (and the driver's own binaries) link against, into a fresh root for a `FROM scratch` stage:
# no compiler, no package manager, no shell besides bash.
# Usage: make-runtime-rootfs.sh ROOTFS [ELF...]     (ELF: extra programs whose libraries must exist)
# Runs inside the RUNTIME_BASE stage (Debian-based, has dpkg); packages missing there are installed
# first with apt-get, which stays behind in that stage.
set -euo pipefail

LOG_PREFIX=make-runtime-rootfs
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# What image/node/nvidia-installer calls: bash and coreutils, kmod (modprobe, depmod, rmmod, lsmod),
# tar + zstd for the payload, util-linux (flock), mount, findutils, grep, sed, hostname, curl (its node
# state report to the API server; the cluster's CA comes with the pod's token, so no ca-certificates).
readonly PACKAGES=(bash coreutils kmod tar zstd util-linux mount findutils grep sed hostname curl
    libc-bin base-files)

_install_missing() {
    local -a missing=()
    local package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "${package}" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("${package}")
    done
    [[ "${#missing[@]}" -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# dpkg -L lists directories too: copy only files and links. Never create a real /lib or /bin in the
# root (copying a lib/ directory over the /lib link replaces it and breaks every program):
# _make_skeleton links them to usr/ before anything is copied.
_copy_path() {
    local path="$1" rootfs="$2"
    [[ -e "${path}" || -L "${path}" ]] || return 0
    [[ -d "${path}" && ! -L "${path}" ]] && return 0
    # The skeleton's bin/lib links exist first, so these paths go through them into usr/.
    mkdir -p "${rootfs}$(dirname "${path}")"
    cp -a "${path}" "${rootfs}${path}"
}

_copy_packages() {
    local rootfs="$1" package path
    for package in "${PACKAGES[@]}"; do
        while IFS= read -r path; do
            case "${path}" in
                /etc/skel/* | /usr/share/doc/* | /usr/share/man/* | /usr/share/info/* | /usr/share/locale/* | /usr/share/lintian/*) continue ;;
                *) _copy_path "${path}" "${rootfs}" ;;
            esac
        done < <(dpkg -L "${package}")
    done
}

_copy_libraries_of() {
    local rootfs="$1" elf="$2" lib
    while IFS= read -r lib; do
        _copy_path "${lib}" "${rootfs}"
        [[ -L "${lib}" ]] && _copy_path "$(realpath "${lib}")" "${rootfs}"
    done < <(ldd "${elf}" 2>/dev/null | grep -o '/[^ ]*' | sort -u)
}

_copy_all_libraries() {
    local rootfs="$1" elf
    shift
    while IFS= read -r elf; do
        _copy_libraries_of "${rootfs}" "${elf}"
    done < <(find "${rootfs}/usr/bin" "${rootfs}/usr/sbin" -type f; printf '%s\n' "$@")
}

_make_skeleton() {
    local rootfs="$1" dir
    mkdir -p "${rootfs}/usr/bin" "${rootfs}/usr/sbin" "${rootfs}/usr/lib" "${rootfs}/etc" \
        "${rootfs}/tmp" "${rootfs}/run" "${rootfs}/proc" "${rootfs}/sys" "${rootfs}/dev" "${rootfs}/var/tmp"
    chmod 1777 "${rootfs}/tmp" "${rootfs}/var/tmp"
    for dir in bin sbin lib lib64; do
        [[ -L "/${dir}" ]] && ln -sfn "$(readlink "/${dir}")" "${rootfs}/${dir}"
    done
    [[ -d /usr/lib64 ]] && mkdir -p "${rootfs}/usr/lib64"
    cp -a /etc/passwd /etc/group "${rootfs}/etc/"
}

main() {
    local rootfs="${1:?usage: make-runtime-rootfs.sh ROOTFS [ELF...]}"
    shift
    _install_missing
    _make_skeleton "${rootfs}"
    _copy_packages "${rootfs}"
    _copy_all_libraries "${rootfs}" "$@"
    log "runtime root: $(du -sh "${rootfs}" | cut -f1)"
}

main "$@"
