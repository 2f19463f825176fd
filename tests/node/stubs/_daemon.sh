# Sourced by the daemon stubs: write a pid file, run until SIGTERM, record that it stopped.
# Short foreground sleeps (not one long background one) so that no child outlives a killed stub.
# shellcheck shell=bash
_run_daemon() {
    local name="$1"
    trap 'printf "stopped %s\n" "${name}" >>"${STUB_LOG}"; exit 0' TERM
    printf '%s\n' "$$" >"${STUB_STATE:?}/${name}.pid"
    while :; do
        sleep 0.05
    done
}
