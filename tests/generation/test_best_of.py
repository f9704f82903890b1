"""Best of N and text-match scores on the worker: the arq job against real redis and SQLite with the tiny MusicGen
and the tiny random CLAP (``debug``), checked against the same takes generated and scored on their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import ArtifactKind, AudioMeta, BeatParams, ErrorCode, JobStatus
from beatforge.queue import enqueue_job
from generation.evaluation.clap import ClapScorer, clap_scores
from generation.music.engine import items_for
from generation.music.musicgen import MusicGenEngine
from storage import jobs
from storage.jobs import JobView
from tests.support.arq_job import run_burst

PROMPT = {"prompt": "boom bap, dusty drums", "duration_s": 1.0, "seed": 4}


@pytest.fixture
def clap_settings(settings: Settings) -> Settings:
    """The worker's settings with the tiny CLAP; procedural covers keep these runs short."""
    return settings.model_copy(update={"clap_model": "debug", "cover_mode": "procedural"})


async def _run_beat(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, **params: Any
) -> tuple[BeatParams, JobView]:
    beat = BeatParams.model_validate({**PROMPT, **params})
    async with sessions() as session:
        job = await jobs.create_job(session, params=beat, user_id=1, user_name="u", guild_id=None, channel_id=None)
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=beat)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        return beat, await jobs.get_job(session, job.id)


def _takes(job: JobView) -> list[AudioMeta]:
    return [AudioMeta.model_validate(a.meta or {}) for a in job.artifacts if a.kind is ArtifactKind.AUDIO]


def _scores_alone(settings: Settings, beat: BeatParams) -> list[tuple[int, float]]:
    """(seed, score) of every take ``beat`` makes, each generated alone and scored by a CLAP loaded here."""
    engine = MusicGenEngine.load(settings.default_model)
    made = [
        engine.generate_batch([item], sampling=beat.sampling, fade_out_s=settings.fade_out_s)[0]
        for item in items_for(beat)
    ]
    scores = clap_scores(ClapScorer.load("debug"), [beat.music_text], [m.samples for m in made], made[0].sample_rate)
    return [(m.seed, score) for m, score in zip(made, scores, strict=True)]


async def test_best_of_keeps_the_take_that_matches_the_words_best(
    clap_settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    beat, job = await _run_beat(clap_settings, sessions, arq_redis, best_of=4)
    assert job.status is JobStatus.DONE, job.error
    (take,) = _takes(job)  # one take asked for: one posted, of the four made

    alone = _scores_alone(clap_settings, beat)
    assert len(alone) == 4 and len({round(score, 6) for _, score in alone}) == 4  # four different takes
    best_seed, best_score = max(alone, key=lambda pair: pair[1])
    assert best_seed != beat.seed  # the best is not the first take made: keeping take 1 would fail here
    assert (take.take, take.seed, take.best_of) == (1, best_seed, 4)
    assert take.text_match == pytest.approx(best_score, abs=1e-5)  # the takes' scores differ by ~1e-4
    (audio,) = (a for a in job.artifacts if a.kind is ArtifactKind.AUDIO)
    assert f"seed{best_seed}" in audio.path and "-take" not in audio.path  # named as the beat's only take


async def test_best_two_of_four_are_posted_best_first(
    clap_settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    beat, job = await _run_beat(clap_settings, sessions, arq_redis, best_of=4, takes=2)
    assert job.status is JobStatus.DONE, job.error
    kept = _takes(job)
    ranked = sorted(_scores_alone(clap_settings, beat), key=lambda pair: -pair[1])[:2]
    assert [(t.take, t.seed, t.best_of) for t in kept] == [(1, ranked[0][0], 4), (2, ranked[1][0], 4)]
    assert [t.text_match for t in kept] == pytest.approx([score for _, score in ranked], abs=1e-5)


async def test_with_clap_every_take_carries_its_score(
    clap_settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    beat, job = await _run_beat(clap_settings, sessions, arq_redis, takes=2)
    assert job.status is JobStatus.DONE, job.error
    takes = _takes(job)
    alone = _scores_alone(clap_settings, beat)
    assert [(t.take, t.seed, t.best_of) for t in takes] == [(1, alone[0][0], None), (2, alone[1][0], None)]
    assert [t.text_match for t in takes] == pytest.approx([score for _, score in alone], abs=1e-5)


async def test_without_clap_best_of_fails_with_the_reason_and_takes_have_no_score(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    settings = settings.model_copy(update={"cover_mode": "procedural"})
    assert settings.clap_model is None
    _, refused = await _run_beat(settings, sessions, arq_redis, best_of=3)
    assert refused.status is JobStatus.FAILED and refused.error_code is ErrorCode.MODEL_UNAVAILABLE
    assert "best_of needs a CLAP model" in (refused.error or "") and "BEATFORGE_CLAP_MODEL" in (refused.error or "")
    assert refused.artifacts == ()

    _, plain = await _run_beat(settings, sessions, arq_redis)
    assert plain.status is JobStatus.DONE, plain.error
    assert [(t.text_match, t.best_of) for t in _takes(plain)] == [(None, None)]


async def test_an_unloadable_clap_fails_best_of_but_not_a_plain_beat(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, tmp_path: Path
) -> None:
    empty = tmp_path / "no-clap-here"  # a folder without a model: fails at once, never asks the network
    empty.mkdir()
    settings = settings.model_copy(update={"clap_model": str(empty), "cover_mode": "procedural"})
    _, refused = await _run_beat(settings, sessions, arq_redis, best_of=2)
    assert refused.status is JobStatus.FAILED and refused.error_code is ErrorCode.MODEL_UNAVAILABLE
    assert "CLAP model" in (refused.error or "") and "could not be loaded" in (refused.error or "")

    _, plain = await _run_beat(settings, sessions, arq_redis)
    assert plain.status is JobStatus.DONE, plain.error
    assert [t.text_match for t in _takes(plain)] == [None]
