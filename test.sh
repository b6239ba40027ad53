#!/usr/bin/env bash
# Build the image and prove it as the platforms run it: no network, no capabilities, read-only root
# file system, read-only input, limited memory, shared memory and processes.
#   1. INSTANCE layout: samples/input mounted at /input, masks to /predict; every mask must equal
#      samples/expected voxel for voxel, with identical geometry and pixel type.
#   2. grand-challenge layout: one case as /input/images/ct/<uuid>.mha with inputs.json, the weights
#      mounted read-only as /opt/ml/model; exactly one .mha must land in /output/images/<slug>/,
#      equal to the expected mask, with the input's geometry.
#
# Usage: ./test.sh [TAG]            TAG defaults to $TAG, else ich-segmentation:latest (the same default as
#                                  build.sh and export.sh, so ./export.sh after ./test.sh finds the image)
# Environment: BASE_IMAGE, WHEELS (passed to build.sh; for a build with no registry reachable),
#   SKIP_BUILD=1 (test an image already built), DEVICE (process.py --device, default cpu),
#   GPUS (e.g. all: adds --gpus), MEMORY (8g), SHM_SIZE (4g), PIDS_LIMIT (256),
#   OUTPUT_SLUG (intracranial-hemorrhage-segmentation).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="${1:-${TAG:-ich-segmentation:latest}}"
SLUG="${OUTPUT_SLUG:-intracranial-hemorrhage-segmentation}"
INPUT="$ROOT/samples/input"
EXPECTED="$ROOT/samples/expected"

compgen -G "$INPUT/*.nii.gz" >/dev/null || { echo "error: $INPUT holds no *.nii.gz case" >&2; exit 2; }
compgen -G "$EXPECTED/*.nii.gz" >/dev/null || { echo "error: $EXPECTED holds no *.nii.gz mask" >&2; exit 2; }
[[ "${SKIP_BUILD:-0}" == 1 ]] || "$ROOT/build.sh" "$TAG"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ich-test.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# The container runs as its own non-root user: folders it writes must be writable by anyone,
# folders it reads readable by anyone.
mkdir -p "$WORK"/{predict,gc-input,gc-output}
chmod 755 "$WORK"
chmod 777 "$WORK"/{predict,gc-input,gc-output}

run_flags=(--rm --network none --cap-drop=ALL --security-opt=no-new-privileges
           --read-only --tmpfs /tmp
           --memory "${MEMORY:-8g}" --shm-size "${SHM_SIZE:-4g}" --pids-limit "${PIDS_LIMIT:-256}")
[[ -z "${GPUS:-}" ]] || run_flags+=(--gpus "$GPUS")
app_args=(--device "${DEVICE:-cpu}" --precision fp32)  # samples/expected was made with fp32: no bf16 or fp16 path

# The checks run inside the image (SimpleITK is there), so this script needs only bash and docker;
# scripts/compare_masks.py is fed to the image's python on stdin.
checks() {
    docker run -i "${run_flags[@]}" --entrypoint python "$@" <"$ROOT/scripts/compare_masks.py"
}

echo "== INSTANCE layout: /input (read-only) -> /predict"
docker run "${run_flags[@]}" -v "$INPUT":/input:ro -v "$WORK/predict":/predict "$TAG" "${app_args[@]}"
checks -v "$EXPECTED":/expected:ro -v "$WORK/predict":/predict:ro "$TAG" - compare /expected /predict

echo "== grand-challenge layout: /input/images/ct/<uuid>.mha + inputs.json, model at /opt/ml/model -> /output"
case_file="$(compgen -G "$INPUT/*.nii.gz" | sort | head -n 1)"
case_name="$(basename "$case_file")"
checks -v "$INPUT":/cases:ro -v "$WORK/gc-input":/prepare "$TAG" - prepare-gc "/cases/$case_name" /prepare
docker run "${run_flags[@]}" -v "$WORK/gc-input":/input:ro -v "$WORK/gc-output":/output \
    -v "$ROOT/weights":/opt/ml/model:ro "$TAG" "${app_args[@]}"
grep -q '"weights": "/opt/ml/model"' "$WORK/gc-output/results.json" \
    || { echo "FAIL: results.json does not name /opt/ml/model as the weights used" >&2; exit 1; }
echo "ok   weights taken from /opt/ml/model"
input_mha="$(cd "$WORK/gc-input" && compgen -G "images/ct/*.mha")"
checks -v "$EXPECTED":/expected:ro -v "$WORK/gc-input":/input:ro -v "$WORK/gc-output":/output:ro "$TAG" \
    - compare-gc "/output/images/$SLUG" "/expected/$case_name" "/input/$input_mha"

docker image inspect --format "image $TAG: {{.Size}} bytes" "$TAG"
echo "container test: all checks passed"
