#!/usr/bin/env bash
# Sets every timestamp under a layer's root to 0 (1970-01-01), so the same files give the same layer
# digest whoever builds them and whenever: the user space, runtime root and installer layers of two
# kernels' images, built on different machines and days, are then shared by the nodes (docs/image.md).
# Usage: seal-layer.sh ROOT      (the stage then hands ROOT/ to the final image with COPY --from)
set -euo pipefail

LOG_PREFIX=seal-layer
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
    local root="${1:?usage: seal-layer.sh ROOT}"
    [[ -d "${root}" ]] || die "${root} is not a directory"
    # -h: a symlink's own time, not its target's.
    find "${root}" -exec touch -h -d @0 {} +
}

main "$@"
