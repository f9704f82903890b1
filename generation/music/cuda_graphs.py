"""A decoding step captured as a CUDA graph: its kernels launched by one call instead of one by one.

At batch 1, musicgen-small's step is hundreds of small kernels whose launches take longer than their work, so
plain eager decoding leaves the GPU mostly idle. A graph records the kernels once, on fixed memory, and replays
them; the step must therefore read and write only tensors that live as long as the graph (the loop's static
buffers) and never wait on the host. PyTorch's recipe (``torch.cuda.graphs``): warm up on a side stream so that
lazy initialisation (cuBLAS handles, the caching allocator) happens outside the capture, capture, replay.

Only ever built on CUDA. If the capture fails, the step runs eagerly, with a warning: slower, the same tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

#: Eager calls before the capture: the first call initialises cuBLAS and the allocator's pools, which a capture
#: must not do (PyTorch's examples warm up three times).
WARMUP = 3


class GraphedStep:
    """``step()`` replayed from a CUDA graph captured at the first call.

    The step must be idempotent for its inputs (the warm-up calls run it for real): the decoding step is, it
    writes this position's keys and values, which the replay writes again.
    """

    def __init__(self, step: Callable[[], torch.Tensor]) -> None:
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        self.failed = False

    def __call__(self) -> torch.Tensor:
        if self.failed:
            return self.step()
        if self.graph is None:
            try:
                self.graph, self.output = self._capture()
            except RuntimeError as exc:
                log.warning("CUDA graph capture failed; decoding eagerly", extra={"error": str(exc)[:300]})
                self.failed = True
                return self.step()
        assert self.output is not None
        self.graph.replay()
        return self.output

    def _capture(self) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.step()
        return graph, output
