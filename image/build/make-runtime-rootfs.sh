#!/usr/bin/env bash
# Copies the few Debian packages the node-side entrypoint uses, plus the shared libraries their
# programs (and the driver's own binaries) link against, from the target's runtime base into a fresh
# root for a `FROM scratch` stage: no compiler, no package manager, no shell besides bash.
# Usage: make-runtime-rootfs.sh ROOTFS [ELF...]     (ELF: extra programs whose libraries must exist)
# Environment: TARGET_ROOT  the runtime base's root (default /; the image mounts it at /target)
#              ARCH         the target's architecture (default: this machine's)
# Nothing of the target runs, so the stage runs on the build platform for any target (docs/image.md,
# "arm64"): a package's files come from the target's dpkg database (dpkg-query --admindir), a program's
# libraries from its ELF headers (readelf: the interpreter and the NEEDED entries, resolved inside
# TARGET_ROOT as the target's loader would, recursively). Packages the target lacks are downloaded for
# ARCH with the builder's apt sources (what they need is resolved against the target's dpkg status)
# and unpacked with dpkg-deb -x into a staging root, never installed.
set -euo pipefail

LOG_PREFIX=make-runtime-rootfs
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# What image/node/nvidia-installer calls: bash and coreutils, kmod (modprobe, depmod, rmmod, lsmod),
# tar + zstd for the payload, util-linux (flock), mount, findutils, grep, sed, hostname, curl (its node
# state report to the API server; the cluster's CA comes with the pod's token, so no ca-certificates).
readonly PACKAGES=(bash coreutils kmod tar zstd util-linux mount findutils grep sed hostname curl
    libc-bin base-files)
TARGET="${TARGET_ROOT:-/}"
TARGET="${TARGET%/}"
readonly TARGET
TARGET_ARCH="${ARCH:-$(host_arch)}"
readonly TARGET_ARCH
# Packages the target lacks: unpacked here, with one file list per package (lists/<package>).
STAGING=""

# ---- paths inside another root ----

# The target-side path a program there would reach, every symlink resolved inside ROOT: an absolute
# link (Debian's /lib64/ld-linux-x86-64.so.2) means ROOT's /, never this machine's.
_resolve() {
    local root="$1" path="$2" resolved part link rest hops=0 i
    local -a parts
    while :; do
        IFS=/ read -r -a parts <<<"${path#/}"
        resolved=""
        for ((i = 0; i < ${#parts[@]}; i++)); do
            part="${parts[i]}"
            case "${part}" in
                "" | .) continue ;;
                ..)
                    resolved="${resolved%/*}"
                    continue
                    ;;
            esac
            if [[ -L "${root}${resolved}/${part}" ]]; then
                ((++hops <= 40)) || return 1
                link=$(readlink "${root}${resolved}/${part}")
                rest=$(IFS=/ && printf '%s' "${parts[*]:i+1}")
                [[ "${link}" == /* ]] || link="${resolved}/${link}"
                path="${link}${rest:+/${rest}}"
                continue 2
            fi
            resolved+="/${part}"
        done
        printf '%s\n' "${resolved:-/}"
        return 0
    done
}

# Copies PATH (a target-side path) from ROOT into ROOTFS: files and links only (dpkg lists directories
# too). Never creates a real /lib or /bin in ROOTFS (copying a lib/ directory over the /lib link
# replaces it and breaks every program): _make_skeleton links them to usr/ first, so these paths go
# through them into usr/.
_copy_path() {
    local root="$1" path="$2" rootfs="$3" dir source
    dir=$(_resolve "${root}" "$(dirname "${path}")") || return 0
    source="${root}${dir%/}/${path##*/}"
    [[ -e "${source}" || -L "${source}" ]] || return 0
    [[ -d "${source}" && ! -L "${source}" ]] && return 0
    mkdir -p "${rootfs}$(dirname "${path}")"
    cp -a "${source}" "${rootfs}${path}"
}

# ---- packages ----

_is_installed() {
    dpkg-query --admindir="${TARGET}/var/lib/dpkg" -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# An APT state of its own: the builder's sources, the target's architecture, the target's dpkg status
# (so only what the target lacks is fetched), own lists and cache. Prints the config file.
_apt_config() {
    local dir="$1"
    mkdir -p "${dir}/lists/partial" "${dir}/cache/archives/partial"
    cp "${TARGET}/var/lib/dpkg/status" "${dir}/status"
    cat >"${dir}/apt.conf" <<CONF
Dir::State::status "${dir}/status";
Dir::State::Lists "${dir}/lists";
Dir::Cache "${dir}/cache";
APT::Architecture "${TARGET_ARCH}";
APT::Architectures { "${TARGET_ARCH}"; };
Acquire::Languages "none";
APT::Sandbox::User "root";
CONF
    printf '%s\n' "${dir}/apt.conf"
}

_fetch_missing() {
    local -a missing=()
    local package deb name config
    for package in "${PACKAGES[@]}"; do
        _is_installed "${package}" || missing+=("${package}")
    done
    [[ "${#missing[@]}" -eq 0 ]] && return 0
    STAGING=$(mktemp -d)
    mkdir -p "${STAGING}/root" "${STAGING}/lists"
    log "the target lacks ${missing[*]}: fetching them for ${TARGET_ARCH} (unpacked, not installed)"
    config=$(_apt_config "${STAGING}/apt")
    APT_CONFIG="${config}" apt-get update -qq
    APT_CONFIG="${config}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only \
        --no-install-recommends "${missing[@]}" >/dev/null
    for deb in "${STAGING}/apt/cache/archives"/*.deb; do
        name=$(dpkg-deb -f "${deb}" Package)
        dpkg-deb -x "${deb}" "${STAGING}/root"
        dpkg-deb --fsys-tarfile "${deb}" | tar -t | sed 's|^\./|/|; s|/$||' >"${STAGING}/lists/${name}"
    done
}

# The files of one package and the root they are copied from.
_package_files() {
    local package="$1"
    if [[ -n "${STAGING}" && -f "${STAGING}/lists/${package}" ]]; then
        sed "s|^|${STAGING}/root\t|" "${STAGING}/lists/${package}"
    else
        dpkg-query --admindir="${TARGET}/var/lib/dpkg" -L "${package}" | sed "s|^|${TARGET}\t|"
    fi
}

_copy_packages() {
    local rootfs="$1" package root path
    for package in "${PACKAGES[@]}"; do
        while IFS=$'\t' read -r root path; do
            case "${path}" in
                /etc/skel/* | /usr/share/doc/* | /usr/share/man/* | /usr/share/info/* | /usr/share/locale/* | /usr/share/lintian/*) continue ;;
                /*) _copy_path "${root}" "${path}" "${rootfs}" ;;
            esac
        done < <(_package_files "${package}")
    done
}

# ---- libraries, from the ELF headers ----

# Where the target's loader looks (its ld.so.conf.d, then the multiarch and default directories).
_library_dirs() {
    local triplet
    triplet=$(gnu_triplet "${TARGET_ARCH}") || die "ARCH='${TARGET_ARCH}' is not one of: amd64 arm64"
    cat "${TARGET}"/etc/ld.so.conf.d/*.conf 2>/dev/null | sed -n 's/[[:space:]]*#.*//; /^\//p'
    printf '%s\n' "/lib/${triplet}" "/usr/lib/${triplet}" /lib /usr/lib
}

# The target-side path of a NEEDED library and the root holding it. Staged packages first: they are
# what installing the missing packages would have put over the target's (e.g. a newer libzstd1 that
# zstd depends on).
_find_library() {
    local name="$1" dir root resolved
    for root in ${STAGING:+"${STAGING}/root"} "${TARGET}"; do
        for dir in "${LIBRARY_DIRS[@]}"; do
            resolved=$(_resolve "${root}" "${dir}") || continue
            if [[ -e "${root}${resolved%/}/${name}" ]]; then
                printf '%s\t%s\n' "${root}" "${dir}/${name}"
                return 0
            fi
        done
    done
    return 1
}

# The interpreter and NEEDED entries of an ELF file (nothing for a script or a static program).
_elf_wants() {
    local elf="$1"
    readelf -l "${elf}" 2>/dev/null | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/@\1/p'
    readelf -d "${elf}" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p'
}

# Copies everything ELF needs, recursively (what ldd would list), each library and, when it is a link,
# the file it names. SEEN: names already handled.
declare -A SEEN=()
_copy_libraries_of() {
    local rootfs="$1" elf="$2" want found root path resolved
    while IFS= read -r want; do
        [[ -n "${want}" && -z "${SEEN[${want}]:-}" ]] || continue
        SEEN["${want}"]=1
        if [[ "${want}" == @* ]]; then
            path="${want#@}" root="${TARGET}"
        elif found=$(_find_library "${want}"); then
            IFS=$'\t' read -r root path <<<"${found}"
        else
            warn "${elf##*/} needs ${want}, which the target does not have"
            continue
        fi
        _copy_path "${root}" "${path}" "${rootfs}"
        resolved=$(_resolve "${root}" "${path}") || continue
        [[ "${resolved}" == "${path}" ]] || _copy_path "${root}" "${resolved}" "${rootfs}"
        _copy_libraries_of "${rootfs}" "${root}${resolved}"
    done < <(_elf_wants "${elf}")
}

_copy_all_libraries() {
    local rootfs="$1" elf
    shift
    mapfile -t LIBRARY_DIRS < <(_library_dirs)
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
        [[ -L "${TARGET}/${dir}" ]] && ln -sfn "$(readlink "${TARGET}/${dir}")" "${rootfs}/${dir}"
    done
    [[ -d "${TARGET}/usr/lib64" ]] && mkdir -p "${rootfs}/usr/lib64"
    cp -a "${TARGET}/etc/passwd" "${TARGET}/etc/group" "${rootfs}/etc/"
}

main() {
    local rootfs="${1:?usage: make-runtime-rootfs.sh ROOTFS [ELF...]}"
    shift
    [[ -f "${TARGET}/var/lib/dpkg/status" ]] ||
        die "${TARGET:-/} has no dpkg database (var/lib/dpkg/status): TARGET_ROOT must be a Debian-based root"
    _fetch_missing
    _make_skeleton "${rootfs}"
    _copy_packages "${rootfs}"
    _copy_all_libraries "${rootfs}" "$@"
    [[ -z "${STAGING}" ]] || rm -rf "${STAGING}"
    log "runtime root: $(du -sh "${rootfs}" | cut -f1)"
}

main "$@"
