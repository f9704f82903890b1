#!/usr/bin/env bash
# Every GPU row of the MusicGen decoding bench (issue 18) in one command, under 8 minutes on an H100/H200:
# plain generate against the engine's own loop and its generate path, batches 1, 4 and 16, musicgen-small and
# -medium architectures with random weights (fp16, SDPA). Run from the repository root on the device machine:
#   bash bench/gpu.sh > $OUT/gpu.txt 2>&1
# It installs the project first when no venv is there (the device machine starts bare).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { python3.11 -m venv .venv && .venv/bin/pip install -q -e '.[worker]'; }
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
.venv/bin/python bench/engine.py --arch small --device cuda --seconds 10 --batches 1 4 16 --repeats 3
.venv/bin/python bench/engine.py --arch medium --device cuda --seconds 10 --batches 1 4 --repeats 2
