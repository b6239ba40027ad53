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
app_args=(--device "${DEVICE:-cpu}")

# The checks run inside the image (SimpleITK is there), so this script needs only bash and docker.
checks() {
    docker run -i "${run_flags[@]}" --entrypoint python "$@" <<'PY'
"""prepare-gc CASE DIR | compare EXPECTED_DIR OUTPUT_DIR | compare-gc SLUG_DIR EXPECTED_MASK INPUT_MHA"""
import json, sys, uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def geometry(image):
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def pixel(image):
    return image.GetPixelIDTypeAsString(), image.GetNumberOfComponentsPerPixel()


def differences(got, want, geometry_of):
    """Empty when `got` has `want`'s voxels and pixel type and `geometry_of`'s geometry, exactly."""
    problems = []
    if geometry(got) != geometry(geometry_of):
        problems.append(f"geometry {geometry(got)} != {geometry(geometry_of)}")
    if pixel(got) != pixel(want):
        problems.append(f"pixel type {pixel(got)} != {pixel(want)}")
    a, b = sitk.GetArrayViewFromImage(got), sitk.GetArrayViewFromImage(want)
    if a.shape != b.shape or not np.array_equal(a, b):
        problems.append(f"voxels differ ({int(np.sum(a != b)) if a.shape == b.shape else 'shape'})")
    return problems


mode, *args = sys.argv[1:]
if mode == "prepare-gc":
    case, folder = Path(args[0]), Path(args[1])
    (folder / "images" / "ct").mkdir(parents=True)
    image = sitk.ReadImage(str(case))
    for key in image.GetMetaDataKeys():  # NIfTI header fields have no place in a .mha upload
        image.EraseMetaData(key)
    sitk.WriteImage(image, str(folder / "images" / "ct" / f"{uuid.uuid4()}.mha"), True)
    interface = {"slug": "ct-image", "kind": "Image", "super_kind": "Image", "relative_path": "images/ct"}
    (folder / "inputs.json").write_text(json.dumps([{"interface": interface, "image": {"pk": str(uuid.uuid4()), "name": case.name}}]))
    sys.exit(0)

failures = 0
if mode == "compare":
    expected, output = Path(args[0]), Path(args[1])
    wanted = sorted(expected.glob("*.nii.gz"))
    extra = sorted(p.name for p in output.glob("*.nii.gz") if not (expected / p.name).exists())
    for name in extra:
        print(f"FAIL {name}: written but not in the expected masks")
    failures += len(extra)
    for want_path in wanted:
        got_path = output / want_path.name
        problems = ["missing"] if not got_path.exists() else differences(
            sitk.ReadImage(str(got_path)), want := sitk.ReadImage(str(want_path)), want)
        print(("FAIL " if problems else "ok   ") + want_path.name + (": " + "; ".join(problems) if problems else ""))
        failures += bool(problems)
elif mode == "compare-gc":
    slug_dir, want_path, input_mha = Path(args[0]), Path(args[1]), Path(args[2])
    files = sorted(p.name for p in slug_dir.iterdir()) if slug_dir.is_dir() else []
    if len(files) != 1 or not files[0].endswith(".mha"):
        print(f"FAIL {slug_dir}: expected exactly one .mha, found {files}")
        sys.exit(1)
    problems = differences(sitk.ReadImage(str(slug_dir / files[0])), sitk.ReadImage(str(want_path)),
                           sitk.ReadImage(str(input_mha)))
    print(("FAIL " if problems else "ok   ") + f"{slug_dir.name}/{files[0]}" + (": " + "; ".join(problems) if problems else ""))
    failures += bool(problems)
sys.exit(1 if failures else 0)
PY
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
