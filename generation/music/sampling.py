"""Sampling with one random stream per take, so a take's seed reproduces it whether it ran alone or in a batch.

transformers samples every row of a batch from torch's one global stream, so a take's tokens depend on what
else was in the batch. :class:`SeededSampler` runs as the first logits processor: it applies classifier-free
guidance, temperature, top-k and top-p itself, draws each take's tokens with that take's own random numbers,
and hands ``generate`` scores where only the drawn token is possible, which greedy decoding then picks (the
built-in guidance step that follows maps those scores onto themselves).

The random numbers are a counter-based hash of (take seed, step, codebook): one set of tensor operations for
the whole batch, whatever its size (a ``torch.Generator`` per take would cost a kernel launch per take and
step), and the same numbers on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from beatforge.bounds import MAX_SEED

#: The score of every token but the drawn one: far below any real logit, finite so guidance arithmetic stays finite.
IMPOSSIBLE = -1e4
_GOLDEN = 0x9E3779B1  # spreads consecutive take numbers over the seed range
_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # a 32-bit integer hash's multiplier; below 2**31, so products fit in int64


def take_seed(seed: int, take: int) -> int:
    """Take ``take``'s seed: take 0 is the request's seed itself, so one take equals a plain request."""
    return seed if take == 0 else (seed + take * _GOLDEN) % (MAX_SEED + 1)


def uniform(seeds: torch.Tensor, step: int, rows: torch.Tensor) -> torch.Tensor:
    """One number in (0, 1) per (seed, step, row), from a 32-bit integer hash: pure, vectorised, device-free."""
    return _uniform(_stream(seeds, rows), step)


def _stream(seeds: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The part of the hash's input that is the same at every step (a sampler computes it once)."""
    return seeds * 0x27D4EB2F + rows * 0x61C88647


def _uniform(stream: torch.Tensor, step: int) -> torch.Tensor:
    x = (stream + step * 0x165667B1) & _MASK32
    for _ in range(2):
        x = ((x ^ (x >> 16)) * _MIX) & _MASK32
    x = x ^ (x >> 16)
    return (x.double() + 0.5) / 2.0**32


class SeededSampler(LogitsProcessor):
    """Draws the next token of every codebook of every take from that take's own random numbers.

    Rows are ordered take-major (take 0's codebooks, then take 1's, ...), as MusicGen lays out its batch; with
    guidance on, ``scores`` has the conditional rows first and the unconditional ones after them. One sampler
    serves all windows of a generation, so its step counter keeps the random numbers moving across them.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        *,
        num_codebooks: int,
        guidance_scale: float,
        temperature: float,
        top_k: int,
        top_p: float,
        device: str | torch.device = "cpu",
    ) -> None:
        self.guidance_scale, self.temperature, self.top_k, self.top_p = guidance_scale, temperature, top_k, top_p
        self.seeds = torch.tensor(list(seeds), dtype=torch.int64, device=device).repeat_interleave(num_codebooks)
        self.codebooks = torch.arange(num_codebooks, dtype=torch.int64, device=device).repeat(len(seeds))
        self._stream = _stream(self.seeds, self.codebooks)
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        tokens = self.draw(scores)[:, None]
        chosen = torch.full_like(scores, IMPOSSIBLE)
        return chosen.scatter_(1, tokens.repeat(scores.shape[0] // input_ids.shape[0], 1), 0.0)  # type: ignore[return-value]

    def draw(self, scores: torch.Tensor) -> torch.Tensor:
        """Each row's next token, (rows,), from its scores (rows, vocab), or (2 x rows, vocab) with the conditional
        rows first when guidance doubled the batch."""
        rows = self.seeds.shape[0]
        logits = scores.float()
        if logits.shape[0] == 2 * rows:
            cond, uncond = torch.split(logits, rows, dim=0)
            logits = uncond + (cond - uncond) * self.guidance_scale
        probs = torch.softmax(filter_logits(logits / self.temperature, top_k=self.top_k, top_p=self.top_p), dim=-1)
        cdf = probs.double().cumsum(dim=-1)
        u = _uniform(self._stream, self.step) * cdf[:, -1]
        self.step += 1
        return torch.searchsorted(cdf, u[:, None]).clamp_(max=probs.shape[-1] - 1)[:, 0]


def filter_logits(logits: torch.Tensor, *, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the ``top_k`` most likely tokens (0: all), then the smallest set holding ``top_p`` of the mass (0: off)."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keeps the token that crosses it
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits
