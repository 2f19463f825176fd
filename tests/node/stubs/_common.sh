# Sourced by every stub: records the stub's name and argv, one line per call, in STUB_LOG.
# shellcheck shell=bash
set -euo pipefail
: "${STUB_LOG:?stubs need STUB_LOG}"
_record_call() {
    local line="$1"
    shift
    if (($#)); then line+="$(printf ' %q' "$@")"; fi
    printf '%s\n' "${line}" >>"${STUB_LOG}"
}
