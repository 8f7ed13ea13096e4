# syntax=docker/dockerfile:1.7
#
# The screening image: the package and its dependencies at the versions CI tests (constraints.txt) on Python 3.11,
# run as a non-root user. One Dockerfile, two variants:
#
#   VARIANT=cuda (default)  PyTorch 2.13.0's CUDA 13.0 build, for GPU worker groups
#   VARIANT=cpu             PyTorch 2.13.0's CPU build, for small clusters (a fraction of the size)
#
#   docker build -t REGISTRY/screening:0.1.0 .
#   docker build --build-arg VARIANT=cpu -t REGISTRY/screening:0.1.0-cpu .
#   docker push REGISTRY/screening:0.1.0 && docker push REGISTRY/screening:0.1.0-cpu
#
# The CUDA base is the PyTorch wheel itself: torch 2.13.0 on PyPI for Linux x86_64 *is* the CUDA 13.0
# build and brings the CUDA runtime, cuDNN 9 and NCCL as wheels (its metadata requires
# cuda-toolkit==13.0.3, nvidia-cudnn-cu13, nvidia-nccl-cu13), so no nvidia/cuda base is needed. The node
# supplies only the driver, through the NVIDIA device plugin: CUDA 13.0 needs driver >= 580.
#
# Versions: PYTHON_VERSION, TORCH_VERSION and RAY_VERSION must equal the pins in constraints.txt, which
# pyproject.toml's ranges admit (tests/test_deploy.py checks it); the build fails if the installed ones differ.
# Kubernetes ignores HEALTHCHECK (KubeRay adds its own probes); it is for plain `docker run`.

ARG PYTHON_VERSION=3.11
ARG VARIANT=cuda

# --- the Python base shared by both variants ----------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# wget: KubeRay's probes and job submitter run `wget ... | grep success` inside the Ray container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# uid/gid 1000: numeric, so `runAsNonRoot` can verify it.
RUN groupadd --gid 1000 screening \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash screening

# --- PyTorch: CUDA or CPU build, picked by VARIANT -------------------------------------------------
FROM python-base AS torch-cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
# The NVIDIA container runtime mounts the driver's compute libraries only when asked to.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM python-base AS torch-cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# --- the package ------------------------------------------------------------------------------------
FROM torch-${VARIANT} AS runtime
ARG PYTHON_VERSION
ARG VARIANT
ARG TORCH_VERSION=2.13.0
ARG RAY_VERSION=2.60.0
WORKDIR /opt/screening/src
COPY pyproject.toml README.md constraints.txt ./
COPY screening ./screening
COPY workers ./workers
# torch is already installed at the pinned version, so the pin in constraints.txt is satisfied as is
# (2.13.0 and 2.13.0+cpu both match torch==2.13.0) and pip keeps the variant's build; everything else
# comes at its constraints.txt pin, torch's own dependencies included.
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -c "import sys, torch, ray; \
v = '%d.%d' % sys.version_info[:2]; t = torch.__version__.split('+')[0]; \
assert v == '${PYTHON_VERSION}', f'python {v} != ${PYTHON_VERSION}'; \
assert t == '${TORCH_VERSION}', f'torch {t} != ${TORCH_VERSION}'; \
assert ray.__version__ == '${RAY_VERSION}', f'ray {ray.__version__} != ${RAY_VERSION}'" \
    && rm -rf /opt/screening/src
COPY deploy/docker/healthcheck.py /opt/screening/healthcheck.py

LABEL org.opencontainers.image.title="screening" \
      org.opencontainers.image.description="In-silico perturbation screens of sequence-to-3D-genome models on Ray" \
      io.screening.variant="${VARIANT}"

USER 1000:1000
ENV HOME=/home/screening \
    MPLCONFIGDIR=/tmp/matplotlib \
    RAY_SERVE_DEFAULT_HTTP_HOST=0.0.0.0
WORKDIR /home/screening
EXPOSE 8000 8265 6379 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "/opt/screening/healthcheck.py"]
# Standalone: the API on port 8000, configured by SCREENING_* environment variables. On Kubernetes the
# KubeRay operator replaces this command with `ray start` and deploys the API from serveConfigV2.
CMD ["serve", "run", "screening.service.app:build_app"]
