"""How well each take of a beat matches its words (CLAP), and best of N: the takes that match best, best first.

The CLAP model (``BEATFORGE_CLAP_MODEL``) is loaded once per worker, on the worker's device, the first time a
beat needs it (a worker that never makes a beat never loads it), then kept. A model that cannot be loaded is
remembered as such: a best-of-N beat fails with the reason, any other beat is delivered without scores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from generation.errors import ModelUnavailable
from generation.music.engine import GeneratedAudio

if TYPE_CHECKING:
    from generation.evaluation.clap import ClapScorer

log = logging.getLogger(__name__)

#: Why a worker without CLAP refuses best of N (the bot refuses it first when its own settings have none).
NO_CLAP = (
    "best_of needs a CLAP model to pick the takes that best match your words, and this worker has none "
    "(an admin sets BEATFORGE_CLAP_MODEL)"
)


@dataclass(frozen=True, slots=True)
class ScoredTake:
    """A generated take and how well it matches its words (None: no CLAP score)."""

    audio: GeneratedAudio
    text_match: float | None


class TextMatch:
    """The worker's CLAP scorer: loaded lazily and once, used by one job at a time."""

    def __init__(self, source: str | None, *, device: str) -> None:
        self.source, self.device = source, device
        self._scorer: ClapScorer | None = None
        self._failure: str | None = None
        # Jobs that arrive together wait for one load, not one each.
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return self.source is not None

    async def scores(self, text: str, takes: Sequence[GeneratedAudio]) -> list[float] | None:
        """Each take's CLAP similarity to ``text``, in [-1, 1]; None when no CLAP model is configured.

        Raises:
            ModelUnavailable: the configured model cannot be loaded (now, or when it was first tried).
        """
        if self.source is None or not takes:
            return None
        async with self._lock:
            scorer = await self._loaded(self.source)
            rate = takes[0].sample_rate
            from generation.evaluation.clap import clap_scores

            return await asyncio.to_thread(clap_scores, scorer, [text], [t.samples for t in takes], rate)

    async def _loaded(self, source: str) -> ClapScorer:
        if self._scorer is not None:
            return self._scorer
        if self._failure is not None:
            raise ModelUnavailable(self._failure)
        from generation.evaluation.clap import ClapScorer

        try:
            self._scorer = await asyncio.to_thread(ClapScorer.load, source, device=self.device)
        except ModelUnavailable as exc:
            self._failure = str(exc)
            log.error("CLAP model unavailable", extra={"model": source, "error": str(exc)})
            raise
        log.info("CLAP model loaded", extra={"model": source, "device": self.device})
        return self._scorer


def refuse_best_of(best_of: int | None, text_match: TextMatch) -> None:
    """The worker's own check (the bot checks first): best of N without a CLAP model fails with the reason.

    Raises:
        ModelUnavailable: ``best_of`` is asked for and no CLAP model is configured.
    """
    if best_of is not None and not text_match.configured:
        raise ModelUnavailable(NO_CLAP)


async def scored_takes(
    text_match: TextMatch, text: str, made: Sequence[GeneratedAudio], *, keep: int, best_of: int | None
) -> list[ScoredTake]:
    """The takes to deliver: with ``best_of``, the ``keep`` that match ``text`` best, best first (ties keep the
    order they were made in); otherwise every take, in order. Each carries its score when CLAP is configured.

    Raises:
        ModelUnavailable: ``best_of`` is asked for and the CLAP model cannot be loaded (without ``best_of`` the
            takes are delivered without scores instead).
    """
    try:
        scores = await text_match.scores(text, made)
    except ModelUnavailable:
        if best_of is not None:
            raise
        scores = None  # the beat itself is fine: deliver it without scores (the failure is logged once)
    if scores is None:
        if best_of is not None:
            raise ModelUnavailable(NO_CLAP)
        return [ScoredTake(audio, None) for audio in made]
    takes = [ScoredTake(audio, score) for audio, score in zip(made, scores, strict=True)]
    if best_of is None:
        return takes
    from generation.evaluation.clap import best_first

    return [takes[i] for i in best_first(scores, keep)]
