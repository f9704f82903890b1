"""Sampling with one random stream per take, so a take's seed reproduces it whether it ran alone or in a batch.

transformers samples every row of a batch from torch's one global stream, so a take's tokens depend on what
else was in the batch. :class:`SeededSampler` runs as the first logits processor: it applies classifier-free
guidance, temperature, top-k and top-p itself, draws each take's tokens from that take's own
``torch.Generator``, and hands ``generate`` scores where only the drawn token is possible, which greedy decoding
then picks (the built-in guidance step that follows maps those scores onto themselves).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from beatforge.contract import MAX_SEED

#: The score of every token but the drawn one: far below any real logit, finite so guidance arithmetic stays finite.
IMPOSSIBLE = -1e4
_GOLDEN = 0x9E3779B1  # spreads consecutive take numbers over the seed range


def take_seed(seed: int, take: int) -> int:
    """Take ``take``'s seed: take 0 is the request's seed itself, so one take equals a plain request."""
    return seed if take == 0 else (seed + take * _GOLDEN) % (MAX_SEED + 1)


class SeededSampler(LogitsProcessor):
    """Draws the next token of every codebook of every take from that take's generator.

    Rows are ordered take-major (take 0's codebooks, then take 1's, ...), as MusicGen lays out its batch; with
    guidance on, ``scores`` has the conditional rows first and the unconditional ones after them.
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        *,
        num_codebooks: int,
        guidance_scale: float,
        temperature: float,
        top_k: int,
        top_p: float,
    ) -> None:
        self.generators, self.num_codebooks = list(generators), num_codebooks
        self.guidance_scale, self.temperature, self.top_k, self.top_p = guidance_scale, temperature, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = input_ids.shape[0]
        logits = scores.float()
        if logits.shape[0] == 2 * rows:
            cond, uncond = logits.split(rows, dim=0)
            logits = uncond + (cond - uncond) * self.guidance_scale
        probs = torch.softmax(filter_logits(logits / self.temperature, top_k=self.top_k, top_p=self.top_p), dim=-1)
        tokens = torch.cat(
            [
                torch.multinomial(probs[i * self.num_codebooks : (i + 1) * self.num_codebooks], 1, generator=g)
                for i, g in enumerate(self.generators)
            ]
        )
        chosen = torch.full_like(scores, IMPOSSIBLE)
        return chosen.scatter_(1, tokens.repeat(scores.shape[0] // rows, 1), 0.0)  # type: ignore[return-value]


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


def generators_for(seeds: Sequence[int], device: str | torch.device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
