# syntax=docker/dockerfile:1
# The scoring worker and the replay tool: the base install only, no TensorFlow.
#
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t fraudstream-worker .
# The model is not baked in: mount a directory written by fraud-train and pass
# --model (or FRAUD_MODEL_DIR), as docker-compose.yml and deploy/k8s do.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY trainer ./trainer
COPY worker ./worker
COPY bench ./bench
# Wheels of fraudstream and of every runtime dependency, so the final stage needs
# neither the sources nor a compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FRAUD_METRICS_HOST=0.0.0.0 \
    FRAUD_METRICS_PORT=9108
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl \
    && useradd --system --uid 10001 --no-create-home fraud
USER 10001
EXPOSE 9108
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2)"]
# SIGTERM makes the worker finish its batch, flush, commit and exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["fraud-worker"]
