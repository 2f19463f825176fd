#!/usr/bin/env bash
# Creates a venv and installs the Python requirements; reinstalls only when a requirements file changed.
# Usage: scripts/setup-venv.sh [requirements file] [venv dir]   (default: requirements-dev.txt .venv)
# checkov has a venv of its own (its pins conflict with the project's): requirements-checkov.txt .venv-checkov
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly REQUIREMENTS="${1:-requirements-dev.txt}"
readonly VENV="${ROOT}/${2:-.venv}"

log() { printf 'setup-venv: %s\n' "$*" >&2; }

_requirements_digest() {
    cat "${ROOT}/requirements.txt" "${ROOT}/${REQUIREMENTS}" | sha256sum | cut -d' ' -f1
}

_is_current() {
    [[ -x "${VENV}/bin/python" && -f "${VENV}/.requirements-${REQUIREMENTS}.sha256" ]] &&
        [[ "$(cat "${VENV}/.requirements-${REQUIREMENTS}.sha256")" == "$(_requirements_digest)" ]]
}

main() {
    if _is_current; then
        return 0
    fi
    if [[ ! -x "${VENV}/bin/python" ]]; then
        log "creating ${VENV}"
        python3 -m venv "${VENV}"
    fi
    log "installing ${REQUIREMENTS} (first run takes about a minute)"
    "${VENV}/bin/pip" install --quiet --disable-pip-version-check -r "${ROOT}/${REQUIREMENTS}"
    _requirements_digest >"${VENV}/.requirements-${REQUIREMENTS}.sha256"
}

main "$@"
