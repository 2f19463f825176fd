#!/usr/bin/env bash
# Turns a failed module build's log (tens of KB) into what a person needs: ONE line naming the
# driver, the kernel and the first compiler error, then a short excerpt around that error.
# Usage: condense-log.sh LOG DRIVER_VERSION KERNEL_NAME MODULE_TYPE      (prints to stdout)
set -euo pipefail

LOG_PREFIX=condense-log
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly EXCERPT_BEFORE=5
readonly EXCERPT_AFTER=15
readonly TAIL_LINES=15

# gcc/clang diagnostics look like `path/file.c:12:3: error: message`; kbuild's own failures
# (modpost, missing headers) like `ERROR: modpost: ...` or `fatal error:`.
readonly COMPILER_ERROR='^[^[:space:]]+:[0-9]+(:[0-9]+)?: (fatal )?error: '
readonly OTHER_ERROR='(^ERROR: |fatal error: |[[:space:]]error: )'

_first_error_line_number() {
    local log="$1" number
    number=$(grep -m 1 -n -E "${COMPILER_ERROR}" "${log}" | cut -d: -f1 || true)
    [[ -n "${number}" ]] || number=$(grep -m 1 -n -E "${OTHER_ERROR}" "${log}" | cut -d: -f1 || true)
    [[ -n "${number}" ]] || return 1
    printf '%s\n' "${number}"
}

# `/long/build/path/nvidia/nv-pci.c:123:5: error: msg` -> `nvidia/nv-pci.c:123: msg`; gcc's typographic
# quotes (a UTF-8 locale) become ASCII ones, so the line reads and greps the same everywhere.
_summarize_error() {
    local line
    line=$(sed -e "s/\xe2\x80\x98/'/g" -e "s/\xe2\x80\x99/'/g" <<<"$1")
    if [[ "${line}" =~ ^([^[:space:]:]+):([0-9]+)(:[0-9]+)?:\ (fatal\ )?error:\ (.*)$ ]]; then
        local path="${BASH_REMATCH[1]}" file
        file="$(basename "$(dirname "${path}")")/$(basename "${path}")"
        printf '%s:%s: %s\n' "${file}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[5]}"
        return 0
    fi
    printf '%s\n' "${line}" | sed -e 's/^[[:space:]]*//'
}

main() {
    [[ $# -eq 4 ]] || die "usage: condense-log.sh LOG DRIVER_VERSION KERNEL_NAME MODULE_TYPE"
    local log="$1" driver="$2" kernel="$3" type="$4"
    [[ -r "${log}" ]] || die "build log ${log} is missing or unreadable"

    local what="building the ${type} modules of NVIDIA driver ${driver} for kernel ${kernel} failed"
    local number
    if ! number=$(_first_error_line_number "${log}"); then
        printf '%s: no compiler error in the log; its last %s lines:\n' "${what}" "${TAIL_LINES}"
        tail -n "${TAIL_LINES}" "${log}"
        return 0
    fi
    local first
    first=$(sed -n "${number}p" "${log}")
    printf '%s: %s\n' "${what}" "$(_summarize_error "${first}")"
    local from=$((number > EXCERPT_BEFORE ? number - EXCERPT_BEFORE : 1))
    local to=$((number + EXCERPT_AFTER))
    printf -- '--- log lines %s-%s of %s ---\n' "${from}" "${to}" "$(wc -l <"${log}")"
    sed -n "${from},${to}p" "${log}"
}

main "$@"
