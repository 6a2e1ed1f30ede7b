# syntax=docker/dockerfile:1
# The training job: fraudstream with the `train` extra (TensorFlow CPU, tf2onnx).
#
# Build from the repository root:
#   docker build -f deploy/docker/trainer.Dockerfile -t fraudstream-trainer .
# Run with an output directory mounted, e.g.
#   docker run --rm -v "$PWD/out:/out" fraudstream-trainer --synthetic 200000 --out /out/model
# A real data file is mounted read-only and passed with --data.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY trainer ./trainer
COPY worker ./worker
COPY bench ./bench
RUN pip install --no-cache-dir ".[train]" \
    && rm -rf /src \
    && useradd --system --uid 10001 --create-home fraud
WORKDIR /home/fraud
USER 10001
ENTRYPOINT ["fraud-train"]
