#!/usr/bin/env bash
# Build the container image.
#
# Usage: ./build.sh [TAG]                      TAG defaults to $TAG, else ich-segmentation:latest
#                                              (test.sh and export.sh have the same default)
# Environment:
#   BASE_IMAGE  base image (default: the Dockerfile's PyTorch CUDA runtime image)
#   WHEELS      a local folder of wheels (docker/make_wheels.sh) to install from with no registry;
#               the build context is then staged in a temporary folder with the wheels inside it
#   DOCKER_BUILD_FLAGS  extra flags for `docker build` (word-split), e.g. "--no-cache"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="${1:-${TAG:-ich-segmentation:latest}}"
args=(--tag "$TAG")
[[ -z "${BASE_IMAGE:-}" ]] || args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[[ -f "$ROOT/weights/manifest.json" ]] || echo "warning: weights/manifest.json is missing; the image will have no built-in model" >&2

context="$ROOT"
if [[ -n "${WHEELS:-}" ]]; then
    compgen -G "$WHEELS/*.whl" >/dev/null || { echo "error: WHEELS=$WHEELS holds no *.whl files" >&2; exit 2; }
    context="$(mktemp -d "${TMPDIR:-/tmp}/ich-build.XXXXXX")"
    trap 'rm -rf "$context"' EXIT
    cp -a "$ROOT"/{Dockerfile,.dockerignore,requirements.txt,process.py,model,weights} "$context"/
    # Hard links cost no space; a copy is the fallback across file systems.
    cp -al "$WHEELS" "$context/wheels" 2>/dev/null || { rm -rf "$context/wheels"; cp -a "$WHEELS" "$context/wheels"; }
    echo '!wheels/' >>"$context/.dockerignore"
    args+=(--build-arg WHEELS=wheels)
fi

# shellcheck disable=SC2086  # DOCKER_BUILD_FLAGS is a list of flags on purpose
docker build ${DOCKER_BUILD_FLAGS:-} "${args[@]}" "$context"
docker image inspect --format "built $TAG: {{.Size}} bytes, user {{.Config.User}}, entrypoint {{.Config.Entrypoint}}" "$TAG"
