#!/usr/bin/env bash
# Builds the real tools the tests run, from the Go modules pinned under tools/, into a cache outside the
# work tree: actionlint (the fast tier's workflow lint); for the end-to-end tier the Pulumi CLI and a Python
# language host, the Kubernetes resource provider, and kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl. Nothing here is committed as a binary; what exists in the cache for the
# current pins is reused.
#
# Usage: tools/build.sh             build what is missing, then print the bin directory
#        tools/build.sh --locate    print the bin directory if everything is built, else exit 1 saying so
#        tools/build.sh --entries   print each tool set's name and cache entry for the current pins
#        tools/build.sh --only NAME build (or wait for) one tool set, print its own bin directory
#
# Each tool set has its own cache entry keyed on its pins (go.mod, go.sum), its own sources (the language
# host), its build function below and the Go version, so bumping the control plane never rebuilds the CLI.
# Concurrent runs wait on a lock per tool set.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
readonly ROOT="${HERE}/.."
readonly CACHE="${NVIDIA_INSTALLER_TOOLS_CACHE:-/var/tmp/nvidia-installer-tools}"
# The provider's repository tags only vX.Y.Z (not provider/vX.Y.Z), so the Go module proxy serves the
# release commit as a pseudo-version (tools/kubernetes-provider/go.mod).
readonly PROVIDER_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4
readonly PULUMI_SDK_MODULE=github.com/pulumi/pulumi/sdk/v3
readonly COMPONENT_BASE=k8s.io/component-base/version
readonly CLIENT_GO=k8s.io/client-go/pkg/version

export CGO_ENABLED=0
# No VCS stamping: the binaries depend on the pins, not on the state of this checkout.
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"

log() { printf 'tools/build: %s\n' "$*" >&2; }
die() { printf 'tools/build: error: %s\n' "$*" >&2; exit 1; }

# --- versions (each read from the one place that pins it) ---------------------------------------

_module_version() { # DIR MODULE: the version DIR's go.mod selects for MODULE
    (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

_pulumi_kubernetes_version() {
    # The provider must be exactly the release the Python package asks for: requirements.txt pins it.
    local version
    version="$(sed -n 's/^pulumi-kubernetes==\([0-9.]*\).*/\1/p' "${ROOT}/requirements.txt")"
    [[ -n "${version}" ]] || die "requirements.txt does not pin pulumi-kubernetes==X.Y.Z"
    printf '%s\n' "${version}"
}

# --- cache entries -------------------------------------------------------------------------------

_entry_key() { # NAME FILE...: hash of what decides NAME's binaries: pins, Go version, its build function
    local name="$1"
    shift
    { go env GOVERSION; cat "$@"; declare -f "_build_${name}"; } | sha256sum | cut -c1-16 | sed "s/^/${name}-/"
}

_is_built() { [[ -f "${CACHE}/$1/.complete" ]]; }

_prune_stale() { # NAME ENTRY: other pins' entries of NAME (100-300 MB each) go once ENTRY is built
    local stale
    for stale in "${CACHE}/${1}-"*; do
        if [[ -d "${stale}" && "${stale##*/}" != "$2" ]]; then
            log "removing ${stale##*/} (built for other pins)"
            rm -rf "${stale}"
        fi
    done
}

_publish() { # STAGING ENTRY: make a finished build visible in one rename
    touch "$1/.complete"
    rm -rf "${CACHE:?}/$2"
    mv "$1" "${CACHE}/$2"
}

# --- the tool sets -------------------------------------------------------------------------------

_build_pulumi() { # STAGING: the CLI and the Python language host at one pulumi/pulumi release
    local out="$1/bin" dir="${HERE}/pulumi" version sdk_dir
    version="$(_module_version "${dir}" github.com/pulumi/pulumi/pkg/v3)"
    log "building the Pulumi CLI ${version} and the Python language host of tools/pulumi (about 10 CPU-minutes cold)"
    mkdir -p "${out}"
    (cd "${dir}" && go build -tags osusergo,grpcnotrace -o "${out}/" \
        -ldflags "-s -w -X ${PULUMI_SDK_MODULE}/go/common/version.Version=${version}" \
        github.com/pulumi/pulumi/pkg/v3/cmd/pulumi ./cmd/pulumi-language-python)
    # The host refuses to start without this script beside it; it ships in the sdk module.
    sdk_dir="$(cd "${dir}" && go list -m -f '{{.Dir}}' "${PULUMI_SDK_MODULE}")"
    install -m 0755 "${sdk_dir}/python/cmd/pulumi-language-python-exec" "${out}/"
}

_build_provider() { # STAGING: pulumi-resource-kubernetes at the release requirements.txt pins
    local out="$1/bin" work="$1/src" version module_dir
    version="$(_pulumi_kubernetes_version)"
    log "building the Pulumi Kubernetes provider ${version} (about 5 CPU-minutes cold)"
    module_dir="$(cd "${HERE}/kubernetes-provider" && go mod download -json "${PROVIDER_MODULE}" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -d "${module_dir}" ]] || die "go mod download of ${PROVIDER_MODULE} gave no directory"
    # The module replaces its own sdk with ../sdk, which is not part of the module: take the published
    # sdk instead, and generate the two JSON files main.go embeds from the committed ones.
    cp -r "${module_dir}" "${work}"
    chmod -R u+w "${work}"
    (cd "${work}" &&
        go mod edit -dropreplace github.com/pulumi/pulumi-kubernetes/sdk/v4 &&
        GOFLAGS=-mod=mod go mod download github.com/pulumi/pulumi-kubernetes/sdk/v4 &&
        cd cmd/pulumi-resource-kubernetes && VERSION="${version}" GOFLAGS=-mod=mod go generate . &&
        cd ../.. && mkdir -p "${out}" &&
        GOFLAGS="-mod=mod -trimpath" go build -o "${out}/" \
            -ldflags "-s -w -X ${PROVIDER_MODULE}/pkg/version.Version=${version}" \
            ./cmd/pulumi-resource-kubernetes)
    rm -rf "${work}"
    printf '%s\n' "${version}" >"$1/VERSION"
}

_build_kubernetes() { # STAGING: the control plane and kubectl of one Kubernetes release
    local out="$1/bin" dir="${HERE}/kubernetes" version minor ldflags
    version="$(_module_version "${dir}" k8s.io/kubernetes)"
    minor="$(cut -d. -f2 <<<"${version}")"
    log "building kube-apiserver, kube-controller-manager, kube-scheduler and kubectl ${version}" \
        "(about 15 CPU-minutes cold)"
    # Without these the binaries report v0.0.0 and the Kubernetes provider refuses the cluster.
    ldflags="-s -w"
    local pkg
    for pkg in "${COMPONENT_BASE}" "${CLIENT_GO}"; do
        ldflags+=" -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
        ldflags+=" -X ${pkg}.gitTreeState=clean"
    done
    mkdir -p "${out}"
    (cd "${dir}" && go build -o "${out}/" -ldflags "${ldflags}" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
}

_build_lint() { # STAGING: actionlint, which checks .github/workflows (fast tier)
    local out="$1/bin" dir="${HERE}/lint" version
    version="$(_module_version "${dir}" github.com/rhysd/actionlint)"
    log "building actionlint ${version} (under a minute cold)"
    mkdir -p "${out}"
    (cd "${dir}" && go build -o "${out}/" \
        -ldflags "-s -w -X github.com/rhysd/actionlint.version=${version}" \
        github.com/rhysd/actionlint/cmd/actionlint)
}

# --- main ----------------------------------------------------------------------------------------

_entries() { # one line per tool set: NAME ENTRY (the quick lint set first)
    printf 'lint %s\n' "$(_entry_key lint "${HERE}/lint/go.mod" "${HERE}/lint/go.sum")"
    printf 'pulumi %s\n' "$(_entry_key pulumi "${HERE}/pulumi/go.mod" "${HERE}/pulumi/go.sum" \
        "${HERE}"/pulumi/cmd/*/*.go)"
    printf 'provider %s\n' "$(_entry_key provider "${HERE}/kubernetes-provider/go.mod" \
        "${HERE}/kubernetes-provider/go.sum" <(_pulumi_kubernetes_version))"
    printf 'kubernetes %s\n' "$(_entry_key kubernetes "${HERE}/kubernetes/go.mod" \
        "${HERE}/kubernetes/go.sum")"
}

_link_bin_dir() { # the union of the entries' bin directories, as one directory of symlinks (plugins/ apart)
    local bin="${CACHE}/bin" name entry file entries
    entries="$(_entries)"
    rm -rf "${bin}.tmp"
    mkdir -p "${bin}.tmp"
    while read -r name entry; do
        for file in "${CACHE}/${entry}/bin/"*; do
            # Providers stay off PATH: the CLI would take a provider on PATH whatever its version,
            # instead of the one installed with `pulumi plugin install ... --file`.
            if [[ "${file##*/}" == pulumi-resource-* ]]; then
                mkdir -p "${bin}.tmp/plugins"
                ln -s "${file}" "${bin}.tmp/plugins/"
            else
                ln -s "${file}" "${bin}.tmp/"
            fi
        done
    done <<<"${entries}"
    rm -rf "${bin}"
    mv "${bin}.tmp" "${bin}"
    printf '%s\n' "${bin}"
}

_locate() {
    local name entry entries
    entries="$(_entries)"
    while read -r name entry; do
        _is_built "${entry}" || die "the ${name} tools for the current pins are not built: run tools/build.sh"
    done <<<"${entries}"
    printf '%s\n' "${CACHE}/bin"
}

_build_one() { # NAME ENTRY: build it unless built; one lock per tool set, so a quick set never waits
    local name="$1" entry="$2" staging started
    exec 9>"${CACHE}/.lock-${name}"
    flock 9
    if ! _is_built "${entry}"; then
        staging="$(mktemp -d "${CACHE}/.staging-${name}.XXXXXX")"
        started="${SECONDS}"
        "_build_${name}" "${staging}"
        # Kept with the binaries: the e2e benchmark reports cold build times without rebuilding.
        printf '%s\n' "$((SECONDS - started))" >"${staging}/BUILD_SECONDS"
        _publish "${staging}" "${entry}"
        log "${name}: built in $((SECONDS - started)) s into ${CACHE}/${entry}"
        _prune_stale "${name}" "${entry}"
    fi
    exec 9>&-
}

_build_missing() { # build every set, then print the directory of links to all of them
    local name entry entries
    entries="$(_entries)"
    mkdir -p "${CACHE}"
    while read -r name entry; do
        _build_one "${name}" "${entry}"
    done <<<"${entries}"
    exec 8>"${CACHE}/.lock-bin"
    flock 8
    _link_bin_dir
}

_build_only() { # NAME: build (or wait for) that set alone, print its own bin directory
    local entry
    entry="$(_entries | awk -v name="$1" '$1 == name { print $2 }')"
    [[ -n "${entry}" ]] || die "no tool set named '$1' (see tools/build.sh --entries)"
    mkdir -p "${CACHE}"
    _build_one "$1" "${entry}"
    printf '%s\n' "${CACHE}/${entry}/bin"
}

main() {
    if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
        PATH="/usr/local/go/bin:${PATH}" # where Go lives on these machines, also when PATH lacks it
    fi
    command -v go >/dev/null || die "Go 1.26 or later is not installed (expected on PATH or in /usr/local/go/bin)"
    case "${1:-}" in
    --locate) _locate ;;
    --entries) _entries ;;
    --only)
        [[ $# -eq 2 ]] || die "usage: tools/build.sh --only NAME"
        _build_only "$2"
        ;;
    "") _build_missing ;;
    *) die "usage: tools/build.sh [--locate | --entries | --only NAME]" ;;
    esac
}

main "$@"
