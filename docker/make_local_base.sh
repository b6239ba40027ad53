#!/usr/bin/env bash
# Make a local base image (Debian bookworm, Python 3.11 in a venv at /opt/venv) with standard tools,
# for building and testing the container where no image registry can be reached.
#
# The root filesystem comes from debootstrap (Debian's packages only) and is turned into an image with
# `docker import`. It has no torch: build with WHEELS=<folder from docker/make_wheels.sh>, and the
# Dockerfile installs torch from that folder because the base lacks it.
#
# Usage (as root; needs debootstrap and a running Docker engine):
#   docker/make_local_base.sh [TAG]            TAG defaults to ich-base:bookworm
# Environment: MIRROR (Debian mirror, default http://deb.debian.org/debian),
#              ROOTFS (work folder, default a fresh one under ${TMPDIR:-/tmp}; removed afterwards).
set -euo pipefail

TAG="${1:-ich-base:bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
[[ "$(id -u)" == 0 ]] || { echo "error: debootstrap needs root" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "error: debootstrap not found (apt-get install debootstrap)" >&2; exit 2; }
command -v docker >/dev/null || { echo "error: docker not found" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ich-rootfs.XXXXXX")"
ROOTFS="${ROOTFS:-$WORK/rootfs}"
trap 'rm -rf "$WORK"' EXIT

# minbase keeps the image small; passwd brings useradd for the Dockerfile's non-root user.
debootstrap --variant=minbase --arch=amd64 \
    --include=python3,python3-venv,passwd,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR"

# A venv gives `python` and `pip` on PATH like the PyTorch images, and sidesteps Debian's
# externally-managed system Python (PEP 668).
chroot "$ROOTFS" python3 -m venv /opt/venv
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
       "$ROOTFS"/usr/share/locale/* "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/log/*.log

tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python"]' \
    - "$TAG"
docker run --rm --network none "$TAG" python -c 'import sys; print("base ready:", sys.version.split()[0])'
echo "$TAG"
