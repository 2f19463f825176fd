#!/usr/bin/env bash
# verdict.sh: decide from a load-check serial log whether NVIDIA modules load into their kernel.
#
# Usage: verdict.sh --log SERIAL_LOG --exports EXPORTS_FILE --release KERNEL_RELEASE [--vermagic STRING]
#                   [--qemu-exit STATUS]
#   SERIAL_LOG      the guest's serial console, as load-check.sh recorded it (CR LF or LF)
#   EXPORTS_FILE    symbols the NVIDIA modules of this set export, one a line (nm: __ksymtab_<name>)
#   KERNEL_RELEASE  the kernel the modules were built for; the guest must have booted exactly this one
#   --vermagic      the modules' vermagic (modinfo -F vermagic nvidia.ko); its first word must be the release
#   --qemu-exit     QEMU's exit status under `timeout` (124 or 137: stopped at the time limit)
# Prints LOAD_CHECK_VERDICT=pass|fail, LOAD_CHECK_KERNEL=<release>, LOAD_CHECK_DETAIL=<category>: <one line>
# on stdout. Exit 0 pass, 1 fail, 2 bad usage.
#
# Only what is recognised passes; every other outcome fails with its own category (docs/load-check.md):
#   pass                nvidia.ko failed with No such device (19) after "NVRM: No NVIDIA GPU found" (or
#                       loaded), the others loaded or failed only on symbols the NVIDIA modules export,
#                       nvidia-peermem also may refuse with Invalid argument (22): built without
#                       InfiniBand peer memory, as every upstream kernel is.
#   no-output, no-init, panic, timeout, wrong-kernel, oops, wrong-abi, wrong-series, invalid-format,
#   missing-dependency, dependency-failed, vermagic, unexpected
set -euo pipefail

# The project's one KEY=VALUE writer (image/lib/keyvalue.sh; beside this file in the image's load-check stage).
_KEYVALUE_LIB="$(dirname "${BASH_SOURCE[0]}")/keyvalue.sh"
[[ -f "${_KEYVALUE_LIB}" ]] || _KEYVALUE_LIB="$(dirname "${BASH_SOURCE[0]}")/../lib/keyvalue.sh"
# shellcheck source=image/lib/keyvalue.sh
source "${_KEYVALUE_LIB}"

# errno values busybox insmod returns as its exit status (include/uapi/asm-generic/errno-base.h).
readonly ENOENT=2  # an unknown symbol
readonly ENOEXEC=8 # invalid module format
readonly ENODEV=19 # module init found no device
readonly EINVAL=22 # module init refused its environment

log() { printf 'verdict: %s\n' "$*" >&2; }
die() {
    printf 'verdict: %s\n' "$*" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------------
# state filled by _read_log

ANY_OUTPUT=0
PANIC_LINE=""
OOPS_LINE=""
OOPS_MODULE=""
BEGIN_KERNEL=""
SAW_END=0
CURRENT=""
MALFORMED=""
LAST_LINE=""
declare -a ORDER=()
declare -A KIND=()
declare -A STATUS=()
declare -A LINES=()
declare -A EXPORTED=()

_read_exports() {
    local symbol
    while IFS= read -r symbol || [[ -n "${symbol}" ]]; do
        if [[ -n "${symbol}" ]]; then
            EXPORTED[${symbol}]=1
        fi
    done <"$1"
}

_record_marker() {
    local line="$1"
    if [[ "${line}" =~ ^LOAD_CHECK\ BEGIN\ kernel=([^ ]+)\ machine=([^ ]+)$ ]]; then
        BEGIN_KERNEL="${BASH_REMATCH[1]}"
    elif [[ "${line}" == 'LOAD_CHECK END' ]]; then
        SAW_END=1
    elif [[ "${line}" =~ ^LOAD_CHECK\ LOAD\ kind=(dep|nvidia)\ name=([A-Za-z0-9_-]+)$ ]]; then
        CURRENT="${BASH_REMATCH[2]}"
        KIND[${CURRENT}]="${BASH_REMATCH[1]}"
        ORDER+=("${CURRENT}")
        LINES[${CURRENT}]=""
    elif [[ "${line}" =~ ^LOAD_CHECK\ STATUS\ kind=(dep|nvidia)\ name=([A-Za-z0-9_-]+)\ status=([0-9]+)$ ]] &&
        [[ "${BASH_REMATCH[2]}" == "${CURRENT}" ]]; then
        STATUS[${CURRENT}]="${BASH_REMATCH[3]}"
        CURRENT=""
    else
        [[ -n "${MALFORMED}" ]] || MALFORMED="${line}"
    fi
}

_clean_log() {
    # Drop terminal control sequences (SeaBIOS and the kernel clear the screen: ESC c, ESC [ ... J)
    # and carriage returns, so markers start at the beginning of their line.
    LC_ALL=C sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b[A-Za-z]//g' -e 's/\r$//' "$1"
}

_read_log() {
    local line
    while IFS= read -r line || [[ -n "${line}" ]]; do
        [[ "${line}" =~ [^[:space:]] ]] || continue
        ANY_OUTPUT=1
        LAST_LINE="${line}"
        if [[ "${line}" == LOAD_CHECK\ * ]]; then
            _record_marker "${line}"
            continue
        fi
        # A marker glued to other console output cannot be trusted to mean what it says.
        if [[ -z "${MALFORMED}" && "${line}" == *'LOAD_CHECK '* ]]; then
            MALFORMED="${line}"
        fi
        if [[ -z "${PANIC_LINE}" && "${line}" == *'Kernel panic - not syncing'* ]]; then
            PANIC_LINE="${line}"
        fi
        if [[ -z "${OOPS_LINE}" && "${line}" =~ (BUG:|Oops:|general\ protection\ fault|Unable\ to\ handle\ kernel|WARNING:\ CPU:) ]]; then
            OOPS_LINE="${line}"
            OOPS_MODULE="${CURRENT:-boot}"
        fi
        if [[ -n "${CURRENT}" ]]; then
            LINES[${CURRENT}]+="${line}"$'\n'
        fi
    done < <(_clean_log "$1")
}

# ---------------------------------------------------------------------------------------------------
# helpers over one module's lines

_first_line_matching() {
    # $1 module, $2 extended regex; prints the first matching line of that module (kernel timestamp cut).
    local line
    line=$(grep -E -m 1 -- "$2" <<<"${LINES[$1]}" || true)
    printf '%s\n' "${line#\[*\] }"
}

_unknown_symbols() {
    # Symbols of "<module>: Unknown symbol <sym> (err -2)" lines, one a line.
    sed -n 's/.*: Unknown symbol \([A-Za-z0-9_.]*\).*/\1/p' <<<"${LINES[$1]}" | sort -u
}

_is_only_nvidia_symbols() {
    # True when the module reported at least one unknown symbol and all are NVIDIA exports.
    local symbols symbol
    symbols=$(_unknown_symbols "$1")
    [[ -n "${symbols}" ]] || return 1
    while IFS= read -r symbol; do
        [[ -n "${EXPORTED[${symbol}]:-}" ]] || return 1
    done <<<"${symbols}"
}

_first_foreign_symbol() {
    local symbol
    while IFS= read -r symbol; do
        if [[ -n "${symbol}" && -z "${EXPORTED[${symbol}]:-}" ]]; then
            printf '%s\n' "${symbol}"
            return 0
        fi
    done <<<"$(_unknown_symbols "$1")"
}

_first_message() {
    # The module's most telling line for a failure detail: a kernel line, else insmod's own.
    local line
    line=$(grep -v -m 1 -e '^insmod:' -e 'taints kernel' -e 'module verification failed' <<<"${LINES[$1]}" || true)
    [[ -n "${line}" ]] || line=$(head -n 1 <<<"${LINES[$1]}")
    printf '%s\n' "${line#\[*\] }"
}

# ---------------------------------------------------------------------------------------------------
# judgements: each prints "category: detail" and returns 1 on failure, prints nothing and returns 0 on pass

_built_for() {
    # ", vermagic says <release>" when the caller passed the modules' vermagic.
    [[ -z "${VERMAGIC}" ]] || printf ', its vermagic says %s' "${VERMAGIC%% *}"
}

_judge_format() {
    # An insmod that failed with ENOEXEC: say which of the kernel's checks refused the module.
    local module="$1" line
    line=$(_first_line_matching "${module}" 'disagrees about version of symbol')
    if [[ -n "${line}" ]]; then
        printf 'wrong-abi: %s.ko was built for another kernel ABI than %s%s (%s): rebuild against the headers of exactly this kernel\n' \
            "${module}" "${RELEASE}" "$(_built_for)" "${line}"
        return 1
    fi
    line=$(_first_line_matching "${module}" 'struct module size|this_module section size')
    if [[ -n "${line}" ]]; then
        printf 'wrong-series: %s.ko was built for another kernel series than %s%s (%s): rebuild against the headers of exactly this kernel\n' \
            "${module}" "${RELEASE}" "$(_built_for)" "${line}"
        return 1
    fi
    printf 'invalid-format: %s.ko is not a valid module for %s (%s)\n' "${module}" "${RELEASE}" "$(_first_message "${module}")"
    return 1
}

_judge_dependency() {
    local module="$1" status="${STATUS[$1]:-}"
    [[ "${status}" == 0 ]] && return 0
    printf 'dependency-failed: in-kernel dependency %s did not load (insmod status %s: %s)\n' \
        "${module}" "${status}" "$(_first_message "${module}")"
    return 1
}

_judge_nvidia_core() {
    local status="${STATUS[nvidia]:-}" symbol
    case "${status}" in
        0) return 0 ;;
        "${ENODEV}")
            [[ -n "$(_first_line_matching nvidia 'NVRM: No NVIDIA GPU found')" ]] && return 0
            printf 'unexpected: nvidia.ko failed with No such device but without "NVRM: No NVIDIA GPU found" (%s)\n' \
                "$(_first_message nvidia)"
            ;;
        "${ENOEXEC}") _judge_format nvidia ;;
        "${ENOENT}")
            symbol=$(_unknown_symbols nvidia | head -n 1)
            if [[ -n "${symbol}" ]]; then
                printf 'missing-dependency: nvidia.ko needs symbol %s that the booted kernel does not provide: an in-kernel dependency (modinfo -F depends) was not loaded\n' \
                    "${symbol}"
            else
                printf 'unexpected: nvidia.ko failed with status %s without naming an unknown symbol (%s)\n' \
                    "${status}" "$(_first_message nvidia)"
            fi
            ;;
        *)
            printf 'unexpected: nvidia.ko insmod status %s (%s)\n' "${status}" "$(_first_message nvidia)"
            ;;
    esac
    return 1
}

_judge_nvidia_other() {
    # nvidia-uvm/-modeset/-drm/-peermem: nvidia.ko never stays loaded without a GPU, so their NVIDIA
    # symbols stay unresolved; anything else unresolved is a real missing dependency.
    local module="$1" status="${STATUS[$1]:-}" symbol
    case "${status}" in
        0) return 0 ;;
        "${ENOENT}")
            _is_only_nvidia_symbols "${module}" && return 0
            symbol=$(_first_foreign_symbol "${module}")
            if [[ -n "${symbol}" ]]; then
                printf 'missing-dependency: %s.ko needs symbol %s that neither the booted kernel nor the NVIDIA modules export: an in-kernel dependency was not loaded\n' \
                    "${module}" "${symbol}"
            else
                printf 'unexpected: %s.ko failed with status %s without naming an unknown symbol (%s)\n' \
                    "${module}" "${status}" "$(_first_message "${module}")"
            fi
            ;;
        "${EINVAL}")
            # nvidia-peermem's init refuses when built without the InfiniBand peer-memory API, which
            # only MLNX_OFED kernels carry (NVIDIA's kernel-open/nvidia-peermem/nvidia-peermem.c).
            if [[ "${module}" == nvidia-peermem &&
                -n "$(_first_line_matching "${module}" 'compiled without IB peer memory symbols')" ]]; then
                return 0
            fi
            printf 'unexpected: %s.ko insmod status %s (%s)\n' "${module}" "${status}" "$(_first_message "${module}")"
            ;;
        "${ENOEXEC}") _judge_format "${module}" ;;
        *)
            printf 'unexpected: %s.ko insmod status %s (%s)\n' "${module}" "${status}" "$(_first_message "${module}")"
            ;;
    esac
    return 1
}

_judge_run() {
    # Whole-run checks, strongest evidence first.
    if [[ -n "${PANIC_LINE}" ]]; then
        printf 'panic: the guest kernel panicked (%s)\n' "${PANIC_LINE#\[*\] }"
        return 1
    fi
    if ((SAW_END == 0)) && [[ "${QEMU_EXIT}" == 124 || "${QEMU_EXIT}" == 137 ]]; then
        printf 'timeout: QEMU was stopped at the time limit before the end marker%s (last line: %s)\n' \
            "${CURRENT:+ while loading ${CURRENT}}" "${LAST_LINE:-none}"
        return 1
    fi
    if ((ANY_OUTPUT == 0)); then
        printf 'no-output: the guest printed nothing on the serial console: the kernel did not start (wrong kernel image or console for this architecture?)\n'
        return 1
    fi
    if [[ -z "${BEGIN_KERNEL}" && -n "${MALFORMED}" ]]; then
        printf 'unexpected: a load-check marker is not at the start of its line (console output interleaved: %s)\n' \
            "${MALFORMED}"
        return 1
    fi
    if [[ -z "${BEGIN_KERNEL}" ]]; then
        printf 'no-init: the guest never ran the load-check /init (last line: %s)\n' "${LAST_LINE}"
        return 1
    fi
    if ((SAW_END == 0)); then
        printf 'timeout: the guest stopped or hung before the end marker%s (last line: %s)\n' \
            "${CURRENT:+ while loading ${CURRENT}}" "${LAST_LINE}"
        return 1
    fi
    if [[ -n "${MALFORMED}" ]]; then
        printf 'unexpected: unrecognised load-check marker (%s)\n' "${MALFORMED}"
        return 1
    fi
    if [[ "${BEGIN_KERNEL}" != "${RELEASE}" ]]; then
        printf 'wrong-kernel: the guest booted %s, not %s: wrong kernel package?\n' "${BEGIN_KERNEL}" "${RELEASE}"
        return 1
    fi
    if [[ -n "${OOPS_LINE}" ]]; then
        printf 'oops: the kernel reported a fault while loading %s (%s)\n' "${OOPS_MODULE}" "${OOPS_LINE#\[*\] }"
        return 1
    fi
}

_judge_modules() {
    local module
    [[ -n "${STATUS[nvidia]:-}" ]] || {
        printf 'unexpected: the log has no result for nvidia.ko\n'
        return 1
    }
    for module in "${ORDER[@]}"; do
        [[ -n "${STATUS[${module}]:-}" ]] || {
            printf 'unexpected: the log has no result for %s\n' "${module}"
            return 1
        }
        if [[ "${KIND[${module}]}" == dep ]]; then
            _judge_dependency "${module}" || return 1
        fi
    done
    _judge_nvidia_core || return 1
    for module in "${ORDER[@]}"; do
        if [[ "${KIND[${module}]}" == nvidia && "${module}" != nvidia ]]; then
            _judge_nvidia_other "${module}" || return 1
        fi
    done
}

_judge_vermagic() {
    [[ -z "${VERMAGIC}" ]] && return 0
    [[ "${VERMAGIC%% *}" == "${RELEASE}" ]] && return 0
    printf 'vermagic: the modules say they are for %s (vermagic "%s"), not %s\n' "${VERMAGIC%% *}" "${VERMAGIC}" "${RELEASE}"
    return 1
}

_pass_detail() {
    local module others=""
    for module in "${ORDER[@]}"; do
        [[ "${KIND[${module}]}" == nvidia && "${module}" != nvidia ]] || continue
        others+="${others:+ }${module}=${STATUS[${module}]}"
    done
    if [[ "${STATUS[nvidia]}" == 0 ]]; then
        printf 'loaded: nvidia.ko loaded into %s (others: %s)\n' "${RELEASE}" "${others:-none}"
    else
        printf 'loads: nvidia.ko passed the version and symbol checks of %s and stopped at "No NVIDIA GPU found" as expected without a GPU; others only missed NVIDIA symbols (insmod status: %s)\n' \
            "${RELEASE}" "${others:-none}"
    fi
}

# ---------------------------------------------------------------------------------------------------

_sanitise() {
    # One line, no characters that could break KEY=VALUE consumers.
    tr -d '\n\r"`$\134' <<<"$1"
}

_emit() {
    local verdict="$1" detail="$2"
    kv_print LOAD_CHECK_VERDICT "${verdict}" LOAD_CHECK_KERNEL "${RELEASE}" LOAD_CHECK_DETAIL "$(_sanitise "${detail}")"
}

_parse_args() {
    LOG_FILE=""
    EXPORTS_FILE=""
    RELEASE=""
    VERMAGIC=""
    QEMU_EXIT=""
    while (($# > 0)); do
        (($# >= 2)) || die "$1 needs a value"
        case "$1" in
            --log) LOG_FILE="$2" ;;
            --exports) EXPORTS_FILE="$2" ;;
            --release) RELEASE="$2" ;;
            --vermagic) VERMAGIC="$2" ;;
            --qemu-exit) QEMU_EXIT="$2" ;;
            *) die "unknown option '$1': usage: verdict.sh --log FILE --exports FILE --release REL [--vermagic STR] [--qemu-exit N]" ;;
        esac
        shift 2
    done
    [[ -n "${LOG_FILE}" && -n "${EXPORTS_FILE}" && -n "${RELEASE}" ]] ||
        die "usage: verdict.sh --log FILE --exports FILE --release REL [--vermagic STR] [--qemu-exit N]"
    [[ -f "${LOG_FILE}" ]] || die "serial log '${LOG_FILE}' does not exist"
    [[ -f "${EXPORTS_FILE}" ]] || die "exports file '${EXPORTS_FILE}' does not exist"
}

main() {
    local detail
    _parse_args "$@"
    _read_exports "${EXPORTS_FILE}"
    _read_log "${LOG_FILE}"
    if detail=$(_judge_run) && detail=$(_judge_modules) && detail=$(_judge_vermagic); then
        _emit pass "$(_pass_detail)"
        return 0
    fi
    _emit fail "${detail}"
    return 1
}

main "$@"
