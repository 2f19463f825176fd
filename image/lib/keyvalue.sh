#!/usr/bin/env bash
# The project's KEY=VALUE data files (manifest.env, build.env, verdict-*.env, the node's readiness file and
# cache stamps): one line per key, KEY matches [A-Z][A-Z0-9_]*, VALUE runs to the end of the line, one pair
# of surrounding double quotes is removed when present (older payloads wrote KEY="VALUE"). The files are
# data: read them with these functions, never source them. Sourced (never run) by the build scripts and
# the node installer.
set -euo pipefail

# kv_write FILE KEY VALUE [KEY VALUE...]: writes the pairs to FILE.tmp.<pid>, then renames it onto FILE,
# so a reader sees the old file or the new one. Refuses keys that are not KEY-shaped and values with a
# newline (they would end the line).
kv_write() {
    local file="$1" tmp="$1.tmp.$$" i
    shift
    (($# % 2 == 0)) || { printf 'kv_write: odd number of arguments for %s\n' "${file}" >&2; return 2; }
    for ((i = 1; i < $#; i += 2)); do
        if [[ ! "${!i}" =~ ^[A-Z][A-Z0-9_]*$ ]]; then
            printf 'kv_write: refusing key %q for %s\n' "${!i}" "${file}" >&2
            return 2
        fi
    done
    for ((i = 2; i <= $#; i += 2)); do
        if [[ "${!i}" == *$'\n'* ]]; then
            printf 'kv_write: refusing a value with a newline for %s\n' "${file}" >&2
            return 2
        fi
    done
    # A full or read-only filesystem: no half file, no shell noise; the caller reports the failure.
    if ! { printf '%s=%s\n' "$@" >"${tmp}"; } 2>/dev/null || ! mv -f -- "${tmp}" "${file}" 2>/dev/null; then
        rm -f -- "${tmp}"
        return 1
    fi
}

# kv_load FILE ARRAY: fills the associative array named ARRAY (declared by the caller with `declare -A`)
# with FILE's pairs; a key given twice keeps its last value. Blank lines, comments and lines without a
# KEY-shaped name are skipped. Returns 1 when FILE cannot be read.
kv_load() {
    local file="$1" line key value
    local -n _kv_into="$2"
    [[ -f "${file}" && -r "${file}" ]] || return 1
    while IFS= read -r line || [[ -n "${line}" ]]; do
        [[ "${line}" == *=* ]] || continue
        key="${line%%=*}"
        [[ "${key}" =~ ^[A-Z][A-Z0-9_]*$ ]] || continue
        value="${line#*=}"
        if [[ ${#value} -ge 2 && "${value}" == \"*\" ]]; then
            value="${value:1:${#value}-2}"
        fi
        _kv_into["${key}"]="${value}"
    done <"${file}"
}

# kv_get FILE KEY: prints KEY's value (the last one); returns 1 when FILE or KEY is missing.
kv_get() {
    local -A _kv_one=()
    kv_load "$1" _kv_one || return 1
    [[ -v "_kv_one[$2]" ]] || return 1
    printf '%s\n' "${_kv_one[$2]}"
}
