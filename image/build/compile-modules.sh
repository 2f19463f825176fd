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
#   CROSS_COMPILE   tool prefix; default: none when ARCH is this machine's, else Debian's triplet
#                   (aarch64-linux-gnu- for ARCH=arm64 on amd64). Headers that force one win (6.12).
# Before the build (minutes) it checks in seconds that the compiler makes ARCH's objects, that the
# kbuild helpers (fixdep, modpost) run on this machine and that NVIDIA's prebuilt objects
# (*.o_binary) are for ARCH; each mismatch is one line naming the file and both machines.
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

# ---- toolchain: which compiler and strip, and are they, the helpers and the blobs for the right machine ----

# Debian's headers name their compiler in .kernelvariables (`CC = ... $(CROSS_COMPILE)gcc-12`), and
# 6.12's force the prefix (`override CROSS_COMPILE = aarch64-linux-gnu-`). Sets CROSS, COMPILER, STRIP.
_set_toolchain() {
    local host variables="${HEADERS_DIR}/.kernelvariables" forced="" cc_name=""
    host=$(host_arch) || die "this machine ($(uname -m)) is neither amd64 nor arm64"
    if [[ -n "${CROSS_COMPILE+set}" ]]; then
        CROSS="${CROSS_COMPILE}"
    elif [[ "${host}" != "${ARCH}" ]]; then
        CROSS="$(gnu_triplet "${ARCH}")-"
    else
        CROSS=""
    fi
    # shellcheck disable=SC2016 # the Makefile's literal $(CROSS_COMPILE)
    if [[ -f "${variables}" ]]; then
        forced=$(sed -n 's/^override CROSS_COMPILE = \([^$()]*\)$/\1/p' "${variables}" | head -n 1)
        cc_name=$(sed -n 's/^CC = .*$(CROSS_COMPILE)\([^ ]*\).*$/\1/p' "${variables}" | head -n 1)
    fi
    COMPILER="${forced:-${CROSS}}${cc_name:-gcc}"
    # The host's strip cannot read another machine's objects ("file format not recognized").
    STRIP="${forced:-${CROSS}}strip"
}

_check_compiler() {
    local want="$1" probe machine
    command -v "${COMPILER}" >/dev/null 2>&1 ||
        die "compiler ${COMPILER} (what the headers of ${KERNEL_NAME} build with) is not installed: install it (ARCH=arm64 on amd64: gcc-aarch64-linux-gnu) or set CROSS_COMPILE"
    command -v "${STRIP}" >/dev/null 2>&1 || die "${STRIP} is not installed: it comes with the compiler's binutils"
    probe=$(mktemp "${TMPDIR:-/tmp}/compiler-probe.XXXXXX")
    if ! printf 'int nvidia_installer_probe;\n' | "${COMPILER}" -x c -c -o "${probe}" - 2>/dev/null; then
        rm -f "${probe}"
        die "compiler ${COMPILER} cannot compile a one-line C file"
    fi
    machine=$(elf_machine "${probe}") || machine=none
    rm -f "${probe}"
    [[ "${machine}" == "${want}" ]] ||
        die "compiler ${COMPILER} makes $(elf_machine_name "${machine}") objects, but ARCH=${ARCH} needs $(elf_machine_name "${want}"): set CROSS_COMPILE to the ${ARCH} cross compiler's prefix (e.g. $(gnu_triplet "${ARCH}")-)"
}

# fixdep and modpost run during the build: they must be programs of this machine, whatever ARCH is
# (Debian's arm64 linux-kbuild has arm64 ones: unpack the amd64 linux-kbuild beside the arm64 headers).
_check_kbuild_helpers() {
    local host="$1" helper path machine
    for helper in basic/fixdep mod/modpost; do
        path="${HEADERS_DIR}/scripts/${helper}"
        [[ -e "${path}" ]] ||
            die "kbuild helper ${path} is missing: unpack the headers' linux-kbuild package beside them"
        machine=$(elf_machine "${path}") || die "kbuild helper ${path} is not an ELF program"
        [[ "${machine}" == "${host}" ]] ||
            die "kbuild helper ${path} is an $(elf_machine_name "${machine}") program, but it runs on this $(elf_machine_name "${host}") machine: take the headers' linux-kbuild package for this machine's architecture (docs/image.md, \"arm64\")"
    done
}

# NVIDIA ships prebuilt objects (nv-kernel.o_binary, nv-modeset-kernel.o_binary) per architecture:
# another architecture's fail the final link ("Relocations in generic ELF").
_check_blobs() {
    local type="$1" want="$2" src blob machine
    src=$(_source_dir_for "${type}")
    [[ -d "${src}" ]] || die "driver tree ${DRIVER_TREE} has no ${src##*/}/ for the ${type} modules"
    while IFS= read -r blob; do
        machine=$(elf_machine "${blob}") || die "NVIDIA's prebuilt ${blob} is not an ELF object: corrupt driver tree?"
        [[ "${machine}" == "${want}" ]] ||
            die "NVIDIA's prebuilt ${blob} is for $(elf_machine_name "${machine}"), not ${ARCH}: the driver tree is another architecture's; take NVIDIA-Linux-$(nvidia_arch "${ARCH}")-<version>.run (or Debian's ${ARCH} package)"
    done < <(find "${src}" -name '*.o_binary' -type f | LC_ALL=C sort)
}

_preflight() {
    local want host type
    _set_toolchain
    want=$(arch_elf_machine "${ARCH}")
    host=$(arch_elf_machine "$(host_arch)")
    _check_compiler "${want}"
    _check_kbuild_helpers "${host}"
    for type in "$@"; do
        _check_blobs "${type}" "${want}"
    done
    log "toolchain: ${COMPILER}, ${STRIP}${CROSS:+, CROSS_COMPILE=${CROSS}} (ARCH=${ARCH} on $(host_arch))"
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
    [[ -z "${CROSS}" ]] || make_args+=("CROSS_COMPILE=${CROSS}")
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
        "${STRIP}" --strip-debug -o "${OUTPUT_DIR}/${type}/${ko##*/}" "${ko}"
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
    _preflight "${types[@]}"
    mkdir -p "${OUTPUT_DIR}"
    local type
    for type in "${types[@]}"; do
        _build_type "${type}" "${version}" || exit 1
    done
    _write_build_env "${version}" "${types[@]}"
    log "done: ${types[*]} modules of ${version} for ${KERNEL_NAME} in ${OUTPUT_DIR}"
}

main "$@"
