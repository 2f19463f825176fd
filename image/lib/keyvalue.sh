#!/usr/bin/env bash
# The project's KEY=VALUE data (build.env, detect-kernel.sh's output, verdict files, manifest.env, the node's
# readiness, lock-holder and cache stamp files): one line per key, KEY matches [A-Z][A-Z0-9_]*, VALUE runs
# to the end of the line, raw (no quoting, no escapes); a reader removes one pair of surrounding double
# quotes, so hand-written files may quote a value. These are data: read them with these functions, never
# source them. The one writer (kv_print, kv_write) and reader (kv_parse, kv_load, kv_get) in bash, sourced
# by image/build/lib.sh, image/verify/verdict.sh and image/node/nvidia-installer.
set -euo pipefail

# kv_print KEY VALUE [KEY VALUE...]: prints the pairs. Refuses (status 2, nothing printed) a key that is not
# KEY-shaped, and a value with a newline or carriage return (it would end the line) or wrapped in double
# quotes (a reader would unwrap it: it would not read back as written).
kv_print() {
    local i j key value
    (($# % 2 == 0)) || { printf 'kv_print: odd number of arguments\n' >&2; return 2; }
    for ((i = 1; i < $#; i += 2)); do
        j=$((i + 1))
        key="${!i}" value="${!j}"
        if [[ ! "${key}" =~ ^[A-Z][A-Z0-9_]*$ ]]; then
            printf 'kv_print: refusing key %q\n' "${key}" >&2
            return 2
        fi
        if [[ "${value}" == *[$'\n\r']* || ("${#value}" -ge 2 && "${value}" == \"*\") ]]; then
            printf 'kv_print: refusing the value of %s: %q\n' "${key}" "${value}" >&2
            return 2
        fi
    done
    printf '%s=%s\n' "$@"
}

# kv_write FILE KEY VALUE [KEY VALUE...]: kv_print into FILE.tmp.<pid>, then a rename onto FILE, so a
# reader sees the old file or the new one. On a full or read-only filesystem: status 1, no half file, no
# shell noise (the caller reports the failure).
kv_write() {
    local file="$1" tmp="$1.tmp.$$" text
    shift
    text="$(kv_print "$@")" || return 2
    if ! { printf '%s\n' "${text}" >"${tmp}"; } 2>/dev/null || ! mv -f -- "${tmp}" "${file}" 2>/dev/null; then
        rm -f -- "${tmp}"
        return 1
    fi
}

# kv_parse ARRAY: fills the associative array named ARRAY (declared by the caller with `declare -A`) from
# the lines on stdin; a key given twice keeps its last value. Blank lines, comments and lines without a
# KEY-shaped name are skipped.
kv_parse() {
    local line key value
    local -n _kv_into="$1"
    while IFS= read -r line || [[ -n "${line}" ]]; do
        [[ "${line}" == *=* ]] || continue
        key="${line%%=*}"
        [[ "${key}" =~ ^[A-Z][A-Z0-9_]*$ ]] || continue
        value="${line#*=}"
        if [[ ${#value} -ge 2 && "${value}" == \"*\" ]]; then
            value="${value:1:${#value}-2}"
        fi
        _kv_into["${key}"]="${value}"
    done
}

# kv_load FILE ARRAY: kv_parse of FILE; returns 1 when FILE is not a readable regular file.
kv_load() {
    [[ -f "$1" && -r "$1" ]] || return 1
    kv_parse "$2" <"$1"
}

# kv_get FILE KEY: prints KEY's value (the last one); returns 1 when FILE or KEY is missing.
kv_get() {
    local -A _kv_one=()
    kv_load "$1" _kv_one || return 1
    [[ -v "_kv_one[$2]" ]] || return 1
    printf '%s\n' "${_kv_one[$2]}"
}
