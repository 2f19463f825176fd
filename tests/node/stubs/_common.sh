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
# FAKE_HANG=<stub name>: that stub writes ${STUB_STATE}/<name>-running and blocks (a foreground child that
# inherits the caller's descriptors, like a hung kernel call), so a test can signal or kill mid-step.
_maybe_hang() {
    if [[ "${FAKE_HANG:-}" == "$1" ]]; then
        : >"${STUB_STATE:?}/$1-running"
        sleep 600
    fi
}
