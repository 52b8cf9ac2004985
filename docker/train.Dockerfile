# syntax=docker/dockerfile:1.7
# Training image: the full stack (`.[train,dvc]`, torch included), entrypoint `mlfactory`.
#
#   docker build -f docker/train.Dockerfile -t mlfactory-train .
#   docker run --rm -v "$PWD/work:/workspace" mlfactory-train train digits trainer.max_epochs=3
#   docker run --rm --gpus all -v "$PWD/work:/workspace" mlfactory-train train mushrooms \
#       data.source=/workspace/mushrooms trainer.devices=1
#
# Build args:
#   TORCH_INDEX_URL  extra pip index for torch, e.g. https://download.pytorch.org/whl/cpu for a
#                    small CPU-only image (default: PyPI's torch, which bundles CUDA).
#   APT_PACKAGES     Debian packages to add, e.g. "tuxpaint-stamps-default sonic-pi-samples"
#                    for the offline stand-in data sets.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ARG APT_PACKAGES=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: bundles record the commit they were trained from (when the workspace is a checkout), and
# `dvc:` sources read data versioned in a Git repository.
# hadolint ignore=DL3008  # Debian stable only takes security fixes; pins would rot.
# safe.directory '*': the image runs as root on a checkout mounted from the host, which another
# user owns; Git (and DVC, through libgit2) would refuse to read it (docs/deployment.md).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ${APT_PACKAGES} \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system --add safe.directory '*'

WORKDIR /opt/mlfactory
COPY pyproject.toml README.md ./
COPY requirements/lock.txt requirements/lock.txt
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        ".[train,dvc]" -c requirements/lock.txt \
    && mlfactory --help >/dev/null

# Runs, the data cache (.mlfactory/) and the local MLflow store (mlruns.db) go here.
WORKDIR /workspace
VOLUME ["/workspace"]
ENTRYPOINT ["mlfactory"]
CMD ["--help"]
