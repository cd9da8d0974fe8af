# syntax=docker/dockerfile:1
#
# Targets:
#   runtime  (default) the service, no torch. With ONNXRUNTIME_FLAVOR=gpu (default):
#            onnxruntime-gpu and NVIDIA's CUDA 12 / cuDNN 9 pip wheels, needing only the NVIDIA
#            driver and container toolkit on the host; with ONNXRUNTIME_FLAVOR=cpu: onnxruntime.
#   train    the training package (torch) that re-trains and re-exports models.
#
# CUDA libraries come from NVIDIA's pip wheels (onnxruntime-gpu[cuda,cudnn]) rather than an
# nvidia/cuda base image: one pinned requirement set decides every version, the image is based
# on the same slim Python as the CPU target, and CI replays exactly these install steps.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG ONNXRUNTIME_FLAVOR=gpu

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# ---------------------------------------------------------------------------------------------
# Dependencies first (cache-friendly: code changes do not re-install them).
FROM base AS deps-cpu
COPY requirements/ /tmp/requirements/
RUN pip install --no-cache-dir -r /tmp/requirements/cpu.txt

FROM base AS deps-gpu
COPY requirements/ /tmp/requirements/
RUN pip install --no-cache-dir -r /tmp/requirements/gpu.txt

# ---------------------------------------------------------------------------------------------
# The package itself, without its dependencies (they are pinned above). A C compiler here, and
# only here, builds the package's C encoder (service/contract/_fastbpe.c) into the wheel.
FROM base AS package
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY service/ service/
COPY training/ training/
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS train-base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY requirements/ /tmp/requirements/
# torch from PyPI is the CUDA build on x86-64 Linux; the CPU onnxruntime verifies exports.
RUN pip install --no-cache-dir -r /tmp/requirements/cpu.txt -r /tmp/requirements/train.txt

FROM train-base AS train
COPY --from=package /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels \
    && groupadd --system --gid 10001 dnabert \
    && useradd --system --uid 10001 --gid dnabert --home-dir /app --shell /usr/sbin/nologin dnabert \
    && mkdir -p /app/runs /app/jobs && chown dnabert:dnabert /app/runs /app/jobs
WORKDIR /app
COPY --chown=dnabert:dnabert models/ /app/models/
ENV DNABERT_SHARED_DIR=/shared
USER 10001:10001
ENTRYPOINT ["dnabert-train"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------
# Last, so that a plain `docker build .` gives the (GPU) service.
# hadolint ignore=DL3006
FROM deps-${ONNXRUNTIME_FLAVOR} AS runtime
COPY --from=package /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels \
    && groupadd --system --gid 10001 dnabert \
    && useradd --system --uid 10001 --gid dnabert --home-dir /app --shell /usr/sbin/nologin dnabert \
    && mkdir -p /app/jobs && chown dnabert:dnabert /app/jobs
WORKDIR /app
# The embedded models; mount another folder over /app/models (or set DNABERT_MODELS_DIR) to serve others.
COPY --chown=dnabert:dnabert models/ /app/models/
ENV DNABERT_MODELS_DIR=/app/models \
    DNABERT_JOBS_DIR=/app/jobs \
    DNABERT_HOST=0.0.0.0 \
    DNABERT_PORT=8000 \
    DNABERT_DEVICE=auto \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('DNABERT_PORT', '8000')}/readyz\", timeout=4).status != 200)"]
ENTRYPOINT ["dnabert-serve"]
CMD ["serve"]
