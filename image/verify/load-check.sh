#!/usr/bin/env bash
# load-check.sh: prove that built NVIDIA modules load into the kernel they were built for, without a GPU
# and without loading anything on this machine. It boots the exact target kernel under QEMU (TCG software
# emulation) with a tiny busybox initramfs that insmods the modules, records the serial console and lets
# verdict.sh decide. See docs/load-check.md for what this proves and what each failure means.
#
# Usage:
#   load-check.sh run MODULES_DIR KERNEL_RELEASE VERDICT_FILE [options]
#       MODULES_DIR     directory holding the stripped nvidia*.ko (nvidia.ko required)
#       KERNEL_RELEASE  e.g. 6.1.0-50-amd64 (what `uname -r` says on the node)
#       VERDICT_FILE    written on pass and on fail: LOAD_CHECK_VERDICT=pass|fail, LOAD_CHECK_KERNEL=<release>,
#                       LOAD_CHECK_DETAIL=<one line> (values are raw to the end of the line: parse, not source)
#     options:
#       --kernel-dir DIR       an extracted linux-image package (has boot/vmlinuz-REL and lib/modules/REL);
#                              default: `apt-get download` the package into a temp dir and `dpkg-deb -x` it
#       --kernel-cache DIR     download/extract into DIR/<package>/ once and reuse it on later runs
#       --kernel-package NAME  package to download (default linux-image-KERNEL_RELEASE)
#       --arch amd64|arm64     guest architecture (default: this machine's)
#       --serial-log FILE      keep the serial console log here (default: beside VERDICT_FILE, .serial.log)
#       --exports FILE         symbols the NVIDIA modules export, one a line (default: computed with nm)
#       --timeout SECONDS      wall-clock limit for the guest (default 240)
#       --without-deps         leave the in-kernel dependencies out (negative control for the tests)
#   load-check.sh initramfs MODULES_DIR KERNEL_RELEASE OUT_FILE --kernel-dir DIR [--arch A] [--without-deps]
#       only build the initramfs (gzip'd newc cpio), for inspection and tests
#
# Exit status: 0 pass; 1 the modules did not load as expected (one line on stderr, verdict file written);
# 2 bad usage, a missing input or tool, or a step that could not run (kernel download, nm, modinfo):
# one line on stderr, no verdict file.
# Needs: bash, coreutils, qemu-system-<arch>, busybox-static, cpio, gzip, kmod (modinfo), xz-utils or
# busybox's xzcat for .ko.xz, binutils (nm) unless --exports is given, apt-get + dpkg-deb to fetch a kernel.
set -euo pipefail
# Step functions run inside $(...) and `|| exit` contexts, where bash ignores errexit: every fallible
# step below checks its own status, and inherit_errexit covers plain substitutions.
shopt -s inherit_errexit

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
readonly VERDICT_PROGRAM="${LOAD_CHECK_VERDICT_PROGRAM:-${HERE}/verdict.sh}"
readonly DEFAULT_TIMEOUT=240
# Load order matters: nvidia-uvm, -modeset and -peermem need nvidia.ko's symbols, nvidia-drm needs
# nvidia-modeset's (NVIDIA's own kernel-open/Kbuild lists the same set).
readonly NVIDIA_MODULES=(nvidia nvidia-uvm nvidia-modeset nvidia-drm nvidia-peermem)

log() { printf 'load-check: %s\n' "$*" >&2; }
warn() { printf 'load-check: warning: %s\n' "$*" >&2; }
die() {
    printf 'load-check: %s\n' "$*" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------------
# architecture switch: the only place that knows per-arch names

_set_arch() {
    case "$1" in
        amd64)
            QEMU_BINARY=qemu-system-x86_64
            QEMU_MACHINE_ARGS=()
            GUEST_CONSOLE=ttyS0
            ELF_MACHINE=62 # EM_X86_64
            ;;
        arm64)
            QEMU_BINARY=qemu-system-aarch64
            # max: every feature TCG emulates (pointer authentication, BTI...), as on the Armv9 cores of
            # NVIDIA's Grace; pauth-impdef=on computes the PAC with QEMU's cheap hash instead of the
            # architected QARMA, which dominates the boot under TCG (5-7 s instead of 13-24 s here).
            # The guest kernel still enables and uses pointer authentication (docs/load-check.md).
            QEMU_MACHINE_ARGS=(-M virt -cpu "max,pauth-impdef=on")
            GUEST_CONSOLE=ttyAMA0
            ELF_MACHINE=183 # EM_AARCH64
            ;;
        *) die "unsupported --arch '$1': use amd64 or arm64" ;;
    esac
    GUEST_ARCH="$1"
}

_detect_arch() {
    if command -v dpkg >/dev/null 2>&1; then
        dpkg --print-architecture
        return 0
    fi
    case "$(uname -m)" in
        x86_64) printf 'amd64\n' ;;
        aarch64) printf 'arm64\n' ;;
        *) printf '%s\n' "$(uname -m)" ;;
    esac
}

# ---------------------------------------------------------------------------------------------------
# predicates

_is_elf_for_arch() {
    # e_machine is the little-endian 16-bit word at offset 18 of an ELF header (both arches are LE).
    local file="$1" magic machine
    magic=$(od -An -c -N4 "${file}" | tr -d ' ')
    [[ "${magic}" == '177ELF' ]] || return 1
    machine=$(od -An -tu2 -j18 -N2 "${file}" | tr -d ' ')
    [[ "${machine}" == "${ELF_MACHINE}" ]]
}

_is_static_binary() {
    # A dynamically linked busybox cannot be the initramfs' only binary (the guest would panic with
    # "No working init found"). Dynamic ELF files have a PT_INTERP (type 3) program header; read the
    # 64-bit little-endian header: e_phoff at 32, e_phentsize at 54, e_phnum at 56 (elf(5)).
    local file="$1" phoff phentsize phnum i type
    phoff=$(od -An -tu8 -j32 -N8 "${file}" | tr -d ' ')
    phentsize=$(od -An -tu2 -j54 -N2 "${file}" | tr -d ' ')
    phnum=$(od -An -tu2 -j56 -N2 "${file}" | tr -d ' ')
    for ((i = 0; i < phnum; i++)); do
        type=$(od -An -tu4 -j$((phoff + i * phentsize)) -N4 "${file}" | tr -d ' ')
        [[ "${type}" != 3 ]] || return 1
    done
}

_is_builtin() {
    local kernel_modules="$1" name="$2"
    [[ -f "${kernel_modules}/modules.builtin" ]] || return 1
    sed -e 's#.*/##' -e 's#\.ko$##' -e 's#-#_#g' "${kernel_modules}/modules.builtin" | grep -qx "${name//-/_}"
}

# ---------------------------------------------------------------------------------------------------
# inputs

_require_tools() {
    local tool
    for tool in "$@"; do
        command -v "${tool}" >/dev/null 2>&1 || die "'${tool}' not found: install it (Debian: qemu-system-x86 or qemu-system-arm, busybox-static, cpio, kmod, binutils)"
    done
}

_find_busybox() {
    local candidate
    for candidate in "${LOAD_CHECK_BUSYBOX:-}" /bin/busybox /usr/bin/busybox; do
        [[ -n "${candidate}" && -x "${candidate}" ]] || continue
        printf '%s\n' "${candidate}"
        return 0
    done
    return 1
}

_check_modules_dir() {
    local dir="$1" ko
    [[ -d "${dir}" ]] || die "modules directory '${dir}' does not exist: pass the directory holding nvidia*.ko"
    [[ -f "${dir}/nvidia.ko" ]] || die "no nvidia.ko in '${dir}': pass the directory holding the built nvidia*.ko"
    for ko in "${dir}"/nvidia*.ko; do
        _is_elf_for_arch "${ko}" || die "${ko} is not an ELF module for ${GUEST_ARCH}: built for another architecture?"
    done
}

_kernel_modules_dir() {
    local kernel_dir="$1" release="$2" candidate
    for candidate in "${kernel_dir}/lib/modules/${release}" "${kernel_dir}/usr/lib/modules/${release}"; do
        if [[ -d "${candidate}" ]]; then
            printf '%s\n' "${candidate}"
            return 0
        fi
    done
    return 1
}

_check_kernel_dir() {
    local kernel_dir="$1" release="$2"
    [[ -f "${kernel_dir}/boot/vmlinuz-${release}" ]] ||
        die "no boot/vmlinuz-${release} in '${kernel_dir}': pass the extracted linux-image-${release} package"
    _kernel_modules_dir "${kernel_dir}" "${release}" >/dev/null ||
        die "no lib/modules/${release} in '${kernel_dir}': pass the extracted linux-image-${release} package"
}

# ---------------------------------------------------------------------------------------------------
# kernel fetch

_download_kernel_deb() {
    local package="$1" dest="$2" out
    log "downloading ${package}"
    # apt-get download drops root to _apt and cannot when the target dir is not its own; it then warns
    # and downloads as root anyway. A stalled mirror must not hang the build: bound it.
    if ! out=$(cd "${dest}" && timeout 600 apt-get download -q "${package}" 2>&1); then
        out=$(printf '%s\n' "${out}" | grep -E '^E:' | head -n 1 || true)
        printf 'load-check: kernel package %s cannot be downloaded (gone from the archive or not in the apt sources? pin an available version): %s\n' \
            "${package}" "${out:-apt-get download failed or timed out}" >&2
        return 1
    fi
}

_extract_kernel_deb() {
    local deb="$1" dest="$2"
    mkdir -p "${dest}" && dpkg-deb -x "${deb}" "${dest}"
}

_fetch_kernel() {
    # Prints the extracted package directory. With a cache dir the extraction is kept and reused.
    local package="$1" cache="$2" workdir="$3" target debdir deb
    if [[ -n "${cache}" ]]; then
        target="${cache}/${package}"
        if [[ -f "${target}/.complete" ]]; then
            printf '%s\n' "${target}"
            return 0
        fi
        rm -rf "${target}"
    else
        target="${workdir}/kernel"
    fi
    debdir="${workdir}/deb"
    mkdir -p "${debdir}" && chmod 0755 "${workdir}" "${debdir}" || return 1
    _download_kernel_deb "${package}" "${debdir}" || return 1
    deb=$(find "${debdir}" -maxdepth 1 -name '*.deb' | head -n 1)
    if [[ -z "${deb}" ]]; then
        printf 'load-check: apt-get download %s left no .deb behind\n' "${package}" >&2
        return 1
    fi
    if ! _extract_kernel_deb "${deb}" "${target}"; then
        printf 'load-check: cannot unpack %s (disk full? corrupt download?)\n' "${deb##*/}" >&2
        return 1
    fi
    rm -f "${deb}"
    touch "${target}/.complete" || return 1
    printf '%s\n' "${target}"
}

# ---------------------------------------------------------------------------------------------------
# dependencies

_index_kernel_modules() {
    # "name path" lines, names normalised to underscores as the kernel does.
    local kernel_modules="$1" path name
    while IFS= read -r path; do
        name="${path##*/}"
        name="${name%%.ko*}"
        printf '%s %s\n' "${name//-/_}" "${path}"
    done < <(find "${kernel_modules}/kernel" "${kernel_modules}/updates" -name '*.ko*' 2>/dev/null)
}

_module_depends() {
    local file="$1" depends
    if ! depends=$(modinfo -F depends "${file}" 2>/dev/null); then
        printf 'load-check: modinfo cannot read %s: not a kernel module?\n' "${file}" >&2
        return 1
    fi
    printf '%s\n' "${depends//,/ }"
}

_resolve_kernel_deps() {
    # Prints the in-kernel modules the NVIDIA set needs, dependencies before dependants (post-order).
    local modules_dir="$1" kernel_modules="$2" index ko name dep depends
    index=$(_index_kernel_modules "${kernel_modules}") || return 1
    local -A seen=()
    local -a order=()
    _visit() {
        local dep="${1//-/_}" path sub subs
        [[ -n "${seen[${dep}]:-}" ]] && return 0
        seen[${dep}]=1
        # NVIDIA's own modules are loaded by name later; only kernel modules are dependencies here.
        [[ "${dep}" == nvidia* ]] && return 0
        path=$(awk -v n="${dep}" '$1 == n { print $2; exit }' <<<"${index}")
        if [[ -z "${path}" ]]; then
            _is_builtin "${kernel_modules}" "${dep}" && return 0
            printf 'load-check: in-kernel dependency %s is neither a module nor built into the kernel package: wrong kernel package?\n' "${dep}" >&2
            return 1
        fi
        subs=$(_module_depends "${path}") || return 1
        for sub in ${subs}; do
            _visit "${sub}" || return 1
        done
        order+=("${path}")
    }
    for name in "${NVIDIA_MODULES[@]}"; do
        ko="${modules_dir}/${name}.ko"
        [[ -f "${ko}" ]] || continue
        depends=$(_module_depends "${ko}") || return 1
        for dep in ${depends}; do
            _visit "${dep}" || return 1
        done
    done
    ((${#order[@]} == 0)) || printf '%s\n' "${order[@]}"
}

_decompress_module() {
    local src="$1" dest="$2" busybox="$3"
    case "${src}" in
        *.ko) cp "${src}" "${dest}" ;;
        *.ko.xz)
            if command -v xz >/dev/null 2>&1; then
                xz -dc "${src}" >"${dest}"
            else
                "${busybox}" xzcat "${src}" >"${dest}"
            fi
            ;;
        *.ko.gz) gzip -dc "${src}" >"${dest}" ;;
        *.ko.zst)
            command -v zstd >/dev/null 2>&1 || {
                printf 'load-check: %s is zstd-compressed: install zstd\n' "${src}" >&2
                return 1
            }
            zstd -qdc "${src}" >"${dest}"
            ;;
        *)
            printf 'load-check: unknown module compression: %s\n' "${src}" >&2
            return 1
            ;;
    esac
}

# ---------------------------------------------------------------------------------------------------
# initramfs

_write_init() {
    # $1: the init file; $2..: "kind name path-in-guest" load lines, in order.
    local init="$1" line kind name path
    shift
    {
        cat <<'HEAD'
#!/bin/busybox sh
# Generated by load-check.sh. Markers start with "LOAD_CHECK " and are read by verdict.sh.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "LOAD_CHECK $*"; }
load() {
    say "LOAD kind=$1 name=$2"
    insmod "$3" 2>&1
    rc=$?
    dmesg -c
    say "STATUS kind=$1 name=$2 status=$rc"
}
dmesg -c >/dev/null
# SeaBIOS's last line can lack its line end on the shared serial console: start the markers afresh.
echo
say "BEGIN kernel=$(uname -r) machine=$(uname -m)"
HEAD
        for line in "$@"; do
            read -r kind name path <<<"${line}"
            printf 'load %s %s %s\n' "${kind}" "${name}" "${path}"
        done
        cat <<'TAIL'
say "END"
sync
poweroff -f
TAIL
    } >"${init}"
    chmod 0755 "${init}"
}

_build_initramfs() {
    # $1 empty staging dir, $2 modules dir, $3 kernel dir, $4 release, $5 output file, $6 with deps (1/0),
    # $7 busybox. Returns non-zero (after one line on stderr) when a step fails.
    local root="$1" modules_dir="$2" kernel_dir="$3" release="$4" out="$5" with_deps="$6" busybox="$7"
    local kernel_modules deps dep name
    local -a loads=()
    mkdir -p "${root}"/{bin,dev,proc,sys,tmp,lib/modules/deps,lib/modules/nvidia} &&
        cp "${busybox}" "${root}/bin/busybox" || return 1
    if [[ "${with_deps}" == 1 ]]; then
        kernel_modules=$(_kernel_modules_dir "${kernel_dir}" "${release}") || return 1
        deps=$(_resolve_kernel_deps "${modules_dir}" "${kernel_modules}") || return 1
        while IFS= read -r dep; do
            [[ -n "${dep}" ]] || continue
            name="${dep##*/}"
            name="${name%%.ko*}"
            _decompress_module "${dep}" "${root}/lib/modules/deps/${name}.ko" "${busybox}" || return 1
            loads+=("dep ${name} /lib/modules/deps/${name}.ko")
        done <<<"${deps}"
    fi
    for name in "${NVIDIA_MODULES[@]}"; do
        [[ -f "${modules_dir}/${name}.ko" ]] || continue
        cp "${modules_dir}/${name}.ko" "${root}/lib/modules/nvidia/${name}.ko" || return 1
        loads+=("nvidia ${name} /lib/modules/nvidia/${name}.ko")
    done
    _write_init "${root}/init" "${loads[@]}" || return 1
    _pack_cpio "${root}" "${out}"
}

_pack_cpio() {
    # newc with root ownership, sorted for a reproducible archive; the kernel unpacks gzip natively.
    local root="$1" out="$2"
    if ! (cd "${root}" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) |
        gzip -1 >"${out}"; then
        printf 'load-check: packing the initramfs into %s failed\n' "${out}" >&2
        rm -f "${out}"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------------
# exports, boot, verdict

_list_exports() {
    # Symbols exported by the NVIDIA modules (EXPORT_SYMBOL leaves a __ksymtab_<name> entry), one a line.
    local modules_dir="$1" ko
    for ko in "${modules_dir}"/nvidia*.ko; do
        nm --defined-only "${ko}" | awk '$3 ~ /^__ksymtab_/ { sub(/^__ksymtab_/, "", $3); print $3 }'
    done | LC_ALL=C sort -u
}

_boot_guest() {
    # $1 kernel image, $2 initrd, $3 serial log, $4 timeout seconds. QEMU's own exit status is not the
    # verdict (a panic with -no-reboot exits 0 too): the serial log is.
    # Prints QEMU's exit status.
    local kernel="$1" initrd="$2" serial="$3" seconds="$4" rc=0
    # TCG explicitly: KVM aborts or hangs on these build machines although /dev/kvm exists.
    timeout -k 10 "${seconds}" "${QEMU_BINARY}" "${QEMU_MACHINE_ARGS[@]}" -accel tcg -m 2048 -smp 2 \
        -kernel "${kernel}" -initrd "${initrd}" \
        -append "console=${GUEST_CONSOLE} panic=-1 quiet loglevel=1" \
        -nographic -no-reboot -nic none \
        </dev/null >"${serial}" 2>"${serial}.qemu-stderr" || rc=$?
    if ((rc == 124 || rc == 137)); then
        warn "the guest did not power off within ${seconds}s"
    elif ((rc != 0)); then
        warn "${QEMU_BINARY} exited with status ${rc}: $(head -n 1 "${serial}.qemu-stderr")"
    fi
    printf '%s\n' "${rc}"
}

_now() {
    printf '%s\n' "${EPOCHREALTIME/,/.}"
}

_elapsed() {
    # seconds since $1 (an _now value), one decimal
    awk -v start="$1" -v end="$(_now)" 'BEGIN { printf "%.1f", end - start }'
}

_write_verdict_file() {
    local verdict_out="$1" file="$2"
    printf '%s\n' "${verdict_out}" >"${file}"
}

_detail_of() {
    sed -n 's/^LOAD_CHECK_DETAIL=//p' <<<"$1"
}

# ---------------------------------------------------------------------------------------------------
# entry points

_parse_args() {
    POSITIONAL=()
    KERNEL_DIR=""
    KERNEL_CACHE=""
    KERNEL_PACKAGE=""
    ARCH=""
    SERIAL_LOG=""
    EXPORTS_FILE=""
    TIMEOUT_SECONDS="${DEFAULT_TIMEOUT}"
    WITH_DEPS=1
    while (($# > 0)); do
        case "$1" in
            --kernel-dir | --kernel-cache | --kernel-package | --arch | --serial-log | --exports | --timeout)
                (($# >= 2)) || die "$1 needs a value"
                case "$1" in
                    --kernel-dir) KERNEL_DIR="$2" ;;
                    --kernel-cache) KERNEL_CACHE="$2" ;;
                    --kernel-package) KERNEL_PACKAGE="$2" ;;
                    --arch) ARCH="$2" ;;
                    --serial-log) SERIAL_LOG="$2" ;;
                    --exports) EXPORTS_FILE="$2" ;;
                    --timeout) TIMEOUT_SECONDS="$2" ;;
                esac
                shift 2
                ;;
            --without-deps)
                WITH_DEPS=0
                shift
                ;;
            -*) die "unknown option '$1' (see the usage at the top of load-check.sh)" ;;
            *)
                POSITIONAL+=("$1")
                shift
                ;;
        esac
    done
    [[ "${TIMEOUT_SECONDS}" =~ ^[1-9][0-9]*$ ]] || die "--timeout '${TIMEOUT_SECONDS}' is not a number of seconds"
    _set_arch "${ARCH:-$(_detect_arch)}"
}

_prepare_common() {
    # Checks shared by both entry points; sets BUSYBOX.
    local modules_dir="$1"
    _require_tools cpio gzip modinfo od
    BUSYBOX=$(_find_busybox) || die "busybox not found: install busybox-static"
    _is_elf_for_arch "${BUSYBOX}" || die "${BUSYBOX} is not built for ${GUEST_ARCH}: the initramfs needs the guest architecture's busybox-static"
    _is_static_binary "${BUSYBOX}" || die "${BUSYBOX} is dynamically linked: install busybox-static"
    _check_modules_dir "${modules_dir}"
}

cmd_initramfs() {
    _parse_args "$@"
    ((${#POSITIONAL[@]} == 3)) || die "usage: load-check.sh initramfs MODULES_DIR KERNEL_RELEASE OUT_FILE --kernel-dir DIR"
    local modules_dir="${POSITIONAL[0]}" release="${POSITIONAL[1]}" out="${POSITIONAL[2]}" workdir
    [[ -n "${KERNEL_DIR}" ]] || die "initramfs needs --kernel-dir (an extracted linux-image package)"
    _prepare_common "${modules_dir}"
    _check_kernel_dir "${KERNEL_DIR}" "${release}"
    workdir=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: the trap must remove this run's directory
    trap "rm -rf '${workdir}'" EXIT
    _build_initramfs "${workdir}/root" "${modules_dir}" "${KERNEL_DIR}" "${release}" "${out}" "${WITH_DEPS}" \
        "${BUSYBOX}" || exit 2
}

cmd_run() {
    _parse_args "$@"
    ((${#POSITIONAL[@]} == 3)) || die "usage: load-check.sh run MODULES_DIR KERNEL_RELEASE VERDICT_FILE [options]"
    local modules_dir="${POSITIONAL[0]}" release="${POSITIONAL[1]}" verdict_file="${POSITIONAL[2]}"
    local workdir kernel_dir exports serial vermagic verdict_out started timings qemu_exit rc=0
    _prepare_common "${modules_dir}"
    _require_tools "${QEMU_BINARY}" timeout
    [[ -n "${EXPORTS_FILE}" ]] || _require_tools nm
    [[ -n "${KERNEL_DIR}" ]] || _require_tools apt-get dpkg-deb
    [[ -x "${VERDICT_PROGRAM}" ]] || die "verdict program ${VERDICT_PROGRAM} missing or not executable"
    mkdir -p "$(dirname "${verdict_file}")" || die "cannot create the directory of ${verdict_file}"
    workdir=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: the trap must remove this run's directory
    trap "rm -rf '${workdir}'" EXIT

    started=$(_now)
    if [[ -n "${KERNEL_DIR}" ]]; then
        kernel_dir="${KERNEL_DIR}"
    else
        kernel_dir=$(_fetch_kernel "${KERNEL_PACKAGE:-linux-image-${release}}" "${KERNEL_CACHE}" "${workdir}") || exit 2
    fi
    timings="fetch $(_elapsed "${started}")s"
    _check_kernel_dir "${kernel_dir}" "${release}"

    exports="${EXPORTS_FILE:-${workdir}/exports}"
    if [[ -z "${EXPORTS_FILE}" ]]; then
        _list_exports "${modules_dir}" >"${exports}" || die "nm cannot list the symbols of ${modules_dir}/nvidia*.ko"
    fi
    [[ -f "${exports}" ]] || die "exports file '${exports}' does not exist"
    vermagic=$(modinfo -F vermagic "${modules_dir}/nvidia.ko") || die "modinfo cannot read ${modules_dir}/nvidia.ko"

    log "building the initramfs for ${release} (${GUEST_ARCH})"
    started=$(_now)
    _build_initramfs "${workdir}/root" "${modules_dir}" "${kernel_dir}" "${release}" "${workdir}/initrd.gz" \
        "${WITH_DEPS}" "${BUSYBOX}" || exit 2
    timings+=", initramfs $(_elapsed "${started}")s"
    serial="${SERIAL_LOG:-${verdict_file%.*}.serial.log}"
    log "booting ${release} under ${QEMU_BINARY} (TCG, limit ${TIMEOUT_SECONDS}s)"
    started=$(_now)
    qemu_exit=$(_boot_guest "${kernel_dir}/boot/vmlinuz-${release}" "${workdir}/initrd.gz" "${serial}" \
        "${TIMEOUT_SECONDS}")
    timings+=", boot $(_elapsed "${started}")s"
    rm -f "${serial}.qemu-stderr"

    started=$(_now)
    verdict_out=$("${VERDICT_PROGRAM}" --log "${serial}" --exports "${exports}" --release "${release}" \
        --vermagic "${vermagic}" --qemu-exit "${qemu_exit}") || rc=$?
    ((rc <= 1)) || die "verdict program failed (status ${rc})"
    timings+=", verdict $(_elapsed "${started}")s"
    log "timings: ${timings}"
    _write_verdict_file "${verdict_out}" "${verdict_file}" || die "cannot write ${verdict_file}"
    if ((rc != 0)); then
        printf 'load-check: FAIL %s: %s\n' "${release}" "$(_detail_of "${verdict_out}")" >&2
        exit 1
    fi
    log "pass ${release}: $(_detail_of "${verdict_out}")"
}

main() {
    local command="${1:-}"
    (($# > 0)) && shift
    case "${command}" in
        run) cmd_run "$@" ;;
        initramfs) cmd_initramfs "$@" ;;
        *) die "usage: load-check.sh run|initramfs ... (see the top of load-check.sh)" ;;
    esac
}

main "$@"
