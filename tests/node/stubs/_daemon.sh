# Sourced by the daemon stubs: log the start, write a pid file, stop (and say so) on SIGTERM.
# shellcheck shell=bash
_run_daemon() {
    local name="$1" child
    printf '%s\n' "$$" >"${STUB_STATE:?}/${name}.pid"
    trap 'printf "%s stopped\n" "${name}" >>"${STUB_LOG}"; kill "${child}" 2>/dev/null; exit 0' TERM
    sleep 60 &
    child=$!
    wait "${child}"
}
