# syntax=docker/dockerfile:1
# Two targets from one file: `bot` (slim, no torch) and `worker` (torch + transformers, runs on the GPU).
# Python 3.11: basic-pitch (MIDI export) does not install on 3.12 yet.
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg libsndfile1 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md alembic.ini ./
COPY beatforge beatforge
COPY cli cli
COPY bot bot
COPY generation generation
COPY storage storage
COPY migrations migrations

FROM base AS bot
RUN pip install '.[bot]'
CMD ["beatforge", "bot"]

FROM base AS worker
# PyPI's Linux torch wheels bundle CUDA, so the GPU works with the NVIDIA container toolkit alone.
# basic-pitch without its declared TensorFlow: beatforge runs the ONNX model shipped in its wheel.
RUN pip install '.[worker]' && pip install --no-deps basic-pitch==0.4.0
ENV HF_HOME=/hf-cache
CMD ["beatforge", "worker"]
