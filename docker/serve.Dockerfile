# syntax=docker/dockerfile:1.7
# Serving image: one bundle behind FastAPI + ONNX Runtime. Installs only `.[serve]`: no torch.
#
#   mlfactory train digits                       # writes runs/digits/bundle
#   docker build -f docker/serve.Dockerfile --build-arg BUNDLE=runs/digits/bundle \
#       -t mlfactory-digits:1 .
#   docker run --rm -p 8080:8080 mlfactory-digits:1
#   curl -F files=@seven.png http://127.0.0.1:8080/v1/predict
#
# Build args:
#   BUNDLE          the bundle folder inside the build context (model.onnx + bundle.json).
#   EXTRA_PACKAGES  more pip requirements, e.g. "psycopg[binary]" for a Postgres prediction log.
# Runtime env: PORT (default 8080; Cloud Run sets it), MLFACTORY_* settings (docs/serving.md).
# The prediction log defaults to SQLite in /var/lib/mlfactory: mount a volume there to keep it,
# or set MLFACTORY_LOG_URL to a database server.
FROM python:3.11-slim

ARG BUNDLE=runs/digits/bundle
ARG EXTRA_PACKAGES=""

# XDG_CACHE_HOME: the user has no home, and ONNX Runtime keeps its telemetry device id in this
# cache (else "Failed to persist telemetry device ID" at every start); /tmp is writable, an
# emptyDir under Kubernetes' read-only root filesystem.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080 \
    MLFACTORY_LOG_URL=sqlite:////var/lib/mlfactory/predictions.db \
    XDG_CACHE_HOME=/tmp/.cache

WORKDIR /opt/mlfactory
COPY pyproject.toml README.md ./
COPY requirements/lock.txt requirements/lock.txt
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".[serve]" ${EXTRA_PACKAGES} -c requirements/lock.txt \
    && python -c "import mlfactory.serving.app" \
    && if python -c "import torch" 2>/dev/null; then echo "torch leaked into the serving image" >&2; exit 1; fi

RUN groupadd --system --gid 10001 mlfactory \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin mlfactory \
    && install -d -o 10001 -g 10001 /var/lib/mlfactory
COPY --chown=root:root ${BUNDLE} /bundle

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# Fail the build, not the first request, when BUNDLE is not a bundle: load it and run its model
# on a test input as `mlfactory serve` does at start (tests/deploy/test_serve_image.py runs this).
RUN python - <<'CHECK' && rm -rf /tmp/.cache
import sys
from pathlib import Path

from mlfactory.errors import MlfactoryError
from mlfactory.serving.admin import load_predictor
from mlfactory.serving.settings import ServingSettings

try:
    load_predictor(Path("/bundle"), ServingSettings())
except MlfactoryError as exc:
    sys.exit(f"error: BUNDLE is no bundle that serves: {exc}")
CHECK
WORKDIR /var/lib/mlfactory
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=4)"]
# A shell form so ${PORT} is expanded at start; exec hands signals to the server.
CMD ["sh", "-c", "exec mlfactory serve /bundle --host 0.0.0.0 --port ${PORT:-8080}"]
