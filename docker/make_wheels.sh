#!/usr/bin/env bash
# Fill a folder with every wheel the container needs (CPython 3.11, linux x86_64), so that
# `WHEELS=<folder> ./build.sh` installs with `pip install --no-index` and no registry is reached.
#
# Contents: torch==${TORCH_VERSION} (for a base image without torch, such as the one
# docker/make_local_base.sh makes), requirements.txt's pins, and all their dependencies.
# pip takes torch from any --find-links folder configured for it (a local CPU wheel wins over the
# registry's CUDA one, which would pull GBs of nvidia-* wheels); set PIP_FIND_LINKS to point at one.
#
# Usage: docker/make_wheels.sh DIR          (run from anywhere; DIR is created)
set -euo pipefail

DIR="${1:?usage: docker/make_wheels.sh DIR}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$DIR"

# Target tags stated explicitly so the folder is right whatever machine runs this.
"$PYTHON" -m pip download --dest "$DIR" --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform linux_x86_64 \
    "torch==${TORCH_VERSION}" -r "$ROOT/requirements.txt"

echo "wheels in $DIR: $(find "$DIR" -maxdepth 1 -name '*.whl' | wc -l)"
du -sh "$DIR"
