#!/usr/bin/env bash
# Write the two upload files for grand-challenge.org (docs/container.md):
#   <OUT_DIR>/<name>.tar.gz   the image, `docker save | gzip` (the algorithm image upload)
#   <OUT_DIR>/model.tar.gz    the weights folder (the separate model upload, extracted to /opt/ml/model)
#
# Usage: ./export.sh [TAG]          TAG defaults to $TAG, else ich-segmentation:latest, the default of
#                                  build.sh and test.sh too (build it first with either)
# Environment: OUT_DIR (default ./export, which git ignores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="${1:-${TAG:-ich-segmentation:latest}}"
OUT_DIR="${OUT_DIR:-$ROOT/export}"
NAME="$(echo "$TAG" | tr '/:' '__')"

docker image inspect "$TAG" >/dev/null 2>&1 || {
    echo "error: image $TAG not found; build it first: ./build.sh $TAG (or ./test.sh $TAG, which builds and tests it)" >&2
    exit 2
}
[[ -f "$ROOT/weights/manifest.json" ]] || { echo "error: weights/manifest.json is missing" >&2; exit 2; }
mkdir -p "$OUT_DIR"

# Write to a partial file and rename, so an interrupted export never leaves a truncated upload.
docker save "$TAG" | gzip -6 >"$OUT_DIR/$NAME.tar.gz.partial"
mv "$OUT_DIR/$NAME.tar.gz.partial" "$OUT_DIR/$NAME.tar.gz"
tar -czf "$OUT_DIR/model.tar.gz.partial" -C "$ROOT/weights" .
mv "$OUT_DIR/model.tar.gz.partial" "$OUT_DIR/model.tar.gz"
ls -l "$OUT_DIR/$NAME.tar.gz" "$OUT_DIR/model.tar.gz"
