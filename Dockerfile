# ICH segmentation container: `process.py` with the built-in weights, for grand-challenge.org and
# INSTANCE-style `docker run` (see docs/container.md). linux/amd64, non-root, needs no network.
#
# BASE_IMAGE: an official PyTorch CUDA runtime image (Python 3.11, CUDA 12.8 runs on T4 and A10G).
#   Any base with Python >= 3.11 on PATH as `python` works; one without torch gets
#   torch==TORCH_VERSION from pip (from the wheel folder when WHEELS is set).
# WHEELS: empty = install requirements.txt from the package registry (the normal build).
#   Non-empty = install with `pip install --no-index` from the build context's wheels/ folder
#   (build.sh stages it; docker/make_wheels.sh fills it), for builds where no registry is reachable.
ARG BASE_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime
FROM --platform=linux/amd64 ${BASE_IMAGE}

ARG WHEELS=""
ARG TORCH_VERSION=2.13.0
ARG APP_USER=algorithm
ARG APP_UID=1001

# The root filesystem may be read-only at run time: everything that might cache goes to /tmp.
# USER/LOGNAME let `docker run --user <any uid>` work: monai calls getpass.getuser() on import.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    USER=${APP_USER} \
    LOGNAME=${APP_USER} \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/.config/matplotlib \
    TORCH_HOME=/tmp/.cache/torch \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    CUDA_CACHE_PATH=/tmp/.cache/nv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The wildcard lets this COPY succeed whether or not the context holds a wheels/ folder.
COPY requirements.txt wheel[s] /tmp/install/
RUN set -eu; \
    python -c 'import sys; v = sys.version_info; assert v >= (3, 11), f"BASE_IMAGE has Python {v.major}.{v.minor}; 3.11+ is needed"'; \
    if [ -n "${WHEELS}" ]; then \
        ls /tmp/install/*.whl >/dev/null 2>&1 || { echo "WHEELS is set but the build context has no wheels/*.whl" >&2; exit 1; }; \
        set -- --no-index --find-links /tmp/install; \
    else \
        set --; \
    fi; \
    if ! python -c 'import torch' 2>/dev/null; then \
        python -m pip install "$@" "torch==${TORCH_VERSION}"; \
    fi; \
    python -m pip install "$@" -r /tmp/install/requirements.txt; \
    python -m pip check; \
    rm -rf /tmp/install /tmp/.cache

# No home folder and no login shell: the app reads /input and the weights, writes the output folder and /tmp.
RUN (getent group "${APP_USER}" >/dev/null || groupadd --gid "${APP_UID}" "${APP_USER}") && \
    useradd --uid "${APP_UID}" --gid "${APP_USER}" --home-dir /tmp --no-create-home \
            --shell /usr/sbin/nologin "${APP_USER}"

# Code and weights stay root-owned and read-only to the app user. No /output or /predict folder is
# created here: process.py writes to /predict only when /output is absent (INSTANCE's mount).
WORKDIR /opt/app
COPY requirements.txt process.py /opt/app/
COPY model/ /opt/app/model/
COPY weights/ /opt/app/weights/
RUN python -m compileall -q /opt/app && python -c 'import process'

USER ${APP_USER}
ENTRYPOINT ["python", "/opt/app/process.py"]
