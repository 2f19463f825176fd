#!/usr/bin/env bash
# The Pulumi commands of the delivery flow, in one place: the GitHub workflows (.github/workflows) and the
# end-to-end tests (tests/e2e/test_cluster.py) both run them through this script.
#
# Usage: scripts/stack.sh preview STACK [pulumi args]   diff of what `up` would do, policy pack applied
#        scripts/stack.sh up STACK [pulumi args]        apply, policy pack applied
#        scripts/stack.sh drift STACK [pulumi args]     refresh from the cluster; fails when it drifted
#        scripts/stack.sh stacks                        the cluster stacks as a JSON list (the dev stack,
#                                                       which only renders locally, is left out)
# Run from the project directory (where Pulumi.yaml is), with `pulumi` on PATH and the backend chosen by
# the environment (PULUMI_BACKEND_URL or `pulumi login`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly POLICY_PACK="${ROOT}/policy"
# Stacks that never reach a cluster (render mode only), so CI neither previews nor applies them.
readonly LOCAL_STACKS=" dev "

die() {
    printf 'stack.sh: error: %s\n' "$*" >&2
    exit 2
}

_preview() {
    pulumi preview --stack "$1" --diff --policy-pack "${POLICY_PACK}" --non-interactive "${@:2}"
}

_up() {
    pulumi up --stack "$1" --yes --diff --policy-pack "${POLICY_PACK}" --non-interactive "${@:2}"
}

_drift() {
    pulumi preview --stack "$1" --refresh --expect-no-changes --diff --non-interactive "${@:2}"
}

_stacks() {
    local file name first=1
    printf '['
    for file in "${ROOT}"/stacks/Pulumi.*.yaml; do
        name="${file##*/Pulumi.}"
        name="${name%.yaml}"
        [[ "${LOCAL_STACKS}" == *" ${name} "* ]] && continue
        ((first)) || printf ','
        printf '"%s"' "${name}"
        first=0
    done
    printf ']\n'
}

main() {
    local command="${1:-}"
    case "${command}" in
    preview | up | drift)
        [[ $# -ge 2 ]] || die "usage: scripts/stack.sh ${command} STACK [pulumi args]"
        shift
        "_${command}" "$@"
        ;;
    stacks) _stacks ;;
    *) die "usage: scripts/stack.sh preview|up|drift STACK [pulumi args] | stacks" ;;
    esac
}

main "$@"
