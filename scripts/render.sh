#!/usr/bin/env bash
# Renders every Kubernetes object a stack would apply, offline (no Pulumi CLI, cluster or registry).
# Usage: scripts/render.sh [STACK] [--out DIR]      (default stack: dev, default DIR: out/<stack>)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT

main() {
    local stack="${1:-dev}"
    [[ $# -gt 0 ]] && shift
    "${ROOT}/scripts/setup-venv.sh" requirements.txt
    cd "${ROOT}"
    if [[ " $* " != *" --out "* ]]; then
        set -- --out "out/${stack}" "$@"
    fi
    exec "${ROOT}/.venv/bin/python" -m components.render "${stack}" "$@"
}

main "$@"
