# syntax=docker/dockerfile:1
# Two targets from one file: `bot` (slim, no torch) and `worker` (torch + transformers, runs on the GPU).
# Python 3.11: what pyproject.toml's requires-python allows.
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
RUN pip install '.[bot,postgres]'  # asyncpg: BEATFORGE_DATABASE_URL=postgresql+asyncpg://... (scale profile)
CMD ["beatforge", "bot"]

FROM base AS worker
# PyPI's Linux torch wheels bundle CUDA, so the GPU works with the NVIDIA container toolkit alone.
# MIDI needs nothing more: basic-pitch's ONNX note model ships inside the package (generation/midi/models/).
RUN pip install '.[worker,postgres]'
ENV HF_HOME=/hf-cache
CMD ["beatforge", "worker"]
