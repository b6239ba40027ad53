#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian/Python 3.11 machine (run as root):
# Debian's packages for the real head-CT sources, then the pinned Python packages (torch 2.13.0 CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends invesalius-examples >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# The brain template of the generator's `atlas` source is a file inside totalsegmentator; only the file is
# read, so none of that package's own (large) dependencies are installed.
python3 -m pip install -q --disable-pip-version-check --no-deps totalsegmentator==2.18.0
# Likewise the `mni` source reads only the MNI template's tissue maps that nilearn's wheel carries.
python3 -m pip install -q --disable-pip-version-check --no-deps nilearn==0.14.1
