"""✨ Enhanced prompts: the LLM's (against a real chat-completions server on loopback), the presets' without one,
and a worker that generates from the prompt it records."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import soundfile as sf
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import AudioMeta, BeatParams, JobStatus
from beatforge.queue import enqueue_job
from generation.prompts.enhance import enhance_prompt, template_prompt
from generation.prompts.llm import ChatClient
from generation.worker.settings import create_worker
from storage import jobs
from storage.artifacts import ArtifactStore
from tests.support.chat_server import ChatServer

RICH = (
    "melancholic trap beat in C minor, soft felt piano chords, deep sliding 808 bass, crisp rolling hi-hats, "
    "vinyl texture, wide reverb, 140 bpm, dark polished mix"
)


def _beat(**fields: Any) -> BeatParams:
    return BeatParams.model_validate({"prompt": "sad piano trap", "duration_s": 1.5, "seed": 4, **fields})


def _client(server: ChatServer) -> ChatClient:
    return ChatClient(server.url, "m", timeout_s=2, max_retries=0)


def test_the_llm_writes_the_prompt_at_the_requested_tempo(chat_server: ChatServer) -> None:
    chat_server.content = f'"{RICH}"'
    enhanced = enhance_prompt(_beat(bpm=100, mood="sad"), client=_client(chat_server))
    assert (enhanced.source, enhanced.note) == ("llm", None)
    assert enhanced.text == RICH.replace("140 bpm", "100 bpm")  # quotes stripped, the bpm option wins
    asked = chat_server.requests[0]["body"]["messages"][1]["content"]
    assert "Idea: sad piano trap" in asked and "exactly 100 bpm" in asked and "melancholic" in asked


@pytest.mark.parametrize(
    ("mode", "content", "why"),
    [
        ("error", "", "HTTP 500"),
        ("garbage", "", "not a chat completion"),
        ("ok", "Sure!", "at least 8 are needed"),
        ("too-long", "", "characters long"),
    ],
)
def test_a_failing_llm_falls_back_to_the_presets_and_says_why(
    chat_server: ChatServer, mode: str, content: str, why: str
) -> None:
    chat_server.mode, chat_server.content = mode, content
    enhanced = enhance_prompt(_beat(), client=_client(chat_server))
    assert enhanced.source == "template" and enhanced.note is not None and why in enhanced.note
    assert enhanced.text == template_prompt(_beat())


def test_without_an_llm_the_ideas_words_pick_the_presets() -> None:
    enhanced = enhance_prompt(_beat(), client=None)
    assert (enhanced.source, enhanced.note) == ("template", "no LLM is configured")
    text = enhanced.text
    assert text.startswith("sad piano trap, dark atmospheric trap beat, heavy distorted 808 bass")  # trap style
    assert "melancholic, sad, slow, sparse, minor key" in text and "72 bpm" in text  # the sad mood and its tempo


def test_the_users_own_presets_and_tempo_win_over_the_guesses() -> None:
    text = template_prompt(_beat(style="lofi", mood="happy", bpm=90))
    assert "lofi hip hop beat" in text and "upbeat, joyful" in text and "90 bpm" in text
    assert "distorted 808" not in text and "melancholic" not in text and "128 bpm" not in text


def test_an_idea_naming_no_preset_keeps_its_words() -> None:
    assert template_prompt(_beat(prompt="bagpipes and tabla")).startswith("bagpipes and tabla, clean punchy mix")


async def _queue(sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, params: BeatParams) -> int:
    async with sessions() as session:
        job = await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=None, channel_id=None)
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params)
    return job.id


async def test_the_worker_generates_from_the_prompt_it_records(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, chat_server: ChatServer
) -> None:
    chat_server.content = RICH
    settings = settings.model_copy(update={"llm_base_url": chat_server.url, "cover_mode": "off"})
    enhanced_id = await _queue(sessions, arq_redis, _beat(enhance=True))
    plain_id = await _queue(sessions, arq_redis, _beat())
    # The enhanced prompt typed in by hand, same seed: the same audio, if that is what MusicGen read.
    by_hand_id = await _queue(sessions, arq_redis, _beat(prompt=RICH))
    worker = create_worker(settings, burst=True, poll_delay=0, handle_signals=False, redis_pool=arq_redis)
    try:
        await worker.main()
    finally:
        await worker.close()

    store, audio = ArtifactStore(settings.artifact_dir), {}
    for job_id in (enhanced_id, plain_id, by_hand_id):
        async with sessions() as session:
            job = await jobs.get_job(session, job_id)
        assert job.status is JobStatus.DONE, job.error
        (take,) = job.artifacts
        audio[job_id] = sf.read(store.resolve(take.path))[0]
        meta = AudioMeta.model_validate(take.meta)
        if job_id == enhanced_id:
            assert (meta.prompt_used, meta.prompt_source, meta.prompt_note) == (RICH, "llm", None)
        else:
            assert meta.prompt_used is None and meta.prompt_source is None
    assert np.array_equal(audio[enhanced_id], audio[by_hand_id])
    assert not np.array_equal(audio[enhanced_id], audio[plain_id])
    assert len(chat_server.requests) == 1  # only the enhanced beat asked the LLM
