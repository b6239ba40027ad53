#!/usr/bin/env bash
# Fill a folder with every wheel the container needs (CPython 3.11, linux x86_64), so that
# `WHEELS=<folder> ./build.sh` installs with `pip install --no-index` and no registry is reached.
#
# Contents: torch==${TORCH_VERSION} (for a base image without torch, such as the one
# docker/make_local_base.sh makes), requirements.txt's pins, and all their dependencies.
#
# Which torch: this script does not choose a CPU build. pip takes whatever torch==${TORCH_VERSION}
# wheel it finds first: a CPU wheel only where one lies in a --find-links folder configured for pip
# (PIP_FIND_LINKS=DIR, or pip.conf); otherwise the registry's default Linux wheel, the CUDA build,
# which pulls about 3 GB of nvidia-* wheels. The script says at the end which one it got.
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
if compgen -G "$DIR/nvidia_*.whl" >/dev/null; then
    echo "torch: the CUDA build (nvidia-* wheels downloaded); for a CPU-only image put the CPU torch wheel" \
         "in a folder and rerun with PIP_FIND_LINKS=<folder>" >&2
else
    echo "torch: $(cd "$DIR" && compgen -G "torch-*.whl" || echo 'none') (no nvidia-* wheels: a CPU build)"
fi
du -sh "$DIR"
