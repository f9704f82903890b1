#!/usr/bin/env bash
# Every GPU row of the MusicGen decoding bench (issue 18) in one command, meant to take under 8 minutes on an
# H100/H200: plain generate against the engine's own loop (eager, static shapes, CUDA graphs) and its generate
# path, batches 1, 4 and 16, the musicgen-small and -medium architectures with random weights (fp16, SDPA), with
# the weight-read bound of each; then the CUDA-only equivalence test (graphs give the eager loop's tokens).
# From the repository root:
#   bash bench/gpu.sh > "$OUT/gpu.txt" 2>&1
# The device machine has its own python3 with torch and transformers and reaches no package index: packages it
# lacks (pydantic and pydantic-settings for beatforge's settings and contract) must be carried as wheels and
# installed first. Not yet run: no GPU was lent to the session that wrote it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
"$PY" -c "import torch, transformers, pydantic, pydantic_settings; assert torch.cuda.is_available(), 'no CUDA device'"
"$PY" -m pytest -q -p no:cacheprovider tests/generation/test_decode.py -k cuda_graphs 2>&1 | tail -3 || true
"$PY" bench/engine.py --arch small --device cuda --seconds 10 --batches 1 4 16 --decoding graphs loop generate --repeats 3
"$PY" bench/engine.py --arch medium --device cuda --seconds 10 --batches 1 4 --decoding graphs loop generate --repeats 2
