"""Pack jobs (/pack) in the worker, against real redis and SQLite, in-process (burst mode).

The tiny random MusicGen makes noise, from which no loop can be cut: run as is, it shows how a pack with no
loop fails. For packs that succeed, its generate call is swapped for drum renders at the pack's tempo (one
per item, a silent one among them), so the cutting, the zip and the metadata run on audio with a beat.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import ErrorCode, JobStatus, PackMeta, PackParams
from beatforge.queue import enqueue_job
from generation.music.engine import GeneratedAudio, GenerationItem
from generation.music.musicgen import MusicGenEngine
from storage import jobs
from storage.artifacts import ArtifactStore
from tests.support.arq_job import run_burst
from tests.support.chat_server import ChatServer
from tests.support.synth import render_beat


async def _run_pack(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, params: PackParams
) -> jobs.JobView:
    async with sessions() as session:
        job = await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=None, channel_id=None)
    await enqueue_job(arq_redis, job_id=job.id, queue_job_id=job.queue_job_id, params=params)
    await run_burst(settings, arq_redis)
    async with sessions() as session:
        return await jobs.get_job(session, job.id)


@pytest.fixture
def drum_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """MusicGen swapped for drum renders at 100 bpm, silence for the second item; records the texts it read."""
    texts: list[str] = []

    def generate_batch(self: MusicGenEngine, items: Sequence[GenerationItem], **_: Any) -> list[GeneratedAudio]:
        out = []
        for n, item in enumerate(items):
            texts.append(item.text)
            rng = np.random.default_rng(item.seed)
            samples = render_beat(bpm=100, bars=6, rng=rng).samples
            out.append(GeneratedAudio(samples * (n != 1), 32_000, item.seed))
        return out

    monkeypatch.setattr(MusicGenEngine, "generate_batch", generate_batch)
    return texts


async def test_a_pack_zips_its_loops_with_their_metadata_and_says_which_could_not_be_cut(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, drum_renders: list[str]
) -> None:
    params = PackParams.model_validate(
        {
            "prompt": "Background music for RPG levels",
            "count": 3,
            "bpm": 100,
            "key": "am",
            "seed": 40,
            "loop": {"bars": 2},
        }
    )
    job = await _run_pack(settings.model_copy(update={"cover_mode": "off"}), sessions, arq_redis, params)
    assert job.status is JobStatus.DONE, job.error
    (pack,) = job.artifacts
    meta = PackMeta.model_validate(pack.meta)
    assert (pack.kind, meta.loops, meta.asked, meta.bpm, meta.key) == ("pack", 2, 3, 100, "A minor")
    assert meta.prompt_source == "templates" and meta.prompt_note and "no LLM" in meta.prompt_note
    assert len(meta.failed) == 1 and meta.failed[0].startswith("loop 2: ")
    # MusicGen read each loop's own prompt, at the pack's tempo and key.
    assert len(drum_renders) == 3 and len(set(drum_renders)) == 3
    assert all("100 bpm" in text and "in A minor" in text for text in drum_renders)

    with zipfile.ZipFile(ArtifactStore(settings.artifact_dir).resolve(pack.path)) as zf:
        names = sorted(zf.namelist())
        readme = zf.read("README.txt").decode()
        sidecars = [json.loads(zf.read(n)) for n in names if n.endswith(".json")]
        audio = [sf.read(zf.open(n)) for n in names if n.endswith(".wav")]
    assert len(names) == 5 and names[0].startswith("01-") and names[2].startswith("03-")
    assert [s["seed"] for s in sidecars] == [40, 42] and all(s["bars"] == 2 for s in sidecars)
    assert all("100 bpm" in s["prompt"] for s in sidecars)
    for samples, rate in audio:
        assert abs(len(samples) / rate - 2 * 4 * 60 / 100) < 0.02  # two whole bars at 100 bpm
    assert "2 loops for “Background music for RPG levels” at 100 bpm, A minor" in readme
    assert "Seeds 40-42" in readme and "loop 2: " in readme


async def test_a_pack_over_the_upload_limit_gets_a_copy_with_mp3_loops(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    drum_renders: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("generation.worker.pack.DISCORD_UPLOAD_LIMIT", 200_000)  # two 2-bar WAVs: ~600 kB
    params = PackParams.model_validate({"prompt": "RPG", "count": 3, "bpm": 100, "seed": 1, "loop": {"bars": 2}})
    job = await _run_pack(settings.model_copy(update={"cover_mode": "off"}), sessions, arq_redis, params)
    assert job.status is JobStatus.DONE, job.error
    pack, preview = job.artifacts
    assert (pack.kind, preview.kind) == ("pack", "pack_preview") and preview.path.endswith("-mp3.zip")
    store = ArtifactStore(settings.artifact_dir)
    with zipfile.ZipFile(store.resolve(pack.path)) as full, zipfile.ZipFile(store.resolve(preview.path)) as small:
        assert [n.replace(".wav", ".mp3") for n in full.namelist()] == small.namelist()
        mp3 = next(n for n in small.namelist() if n.endswith(".mp3"))
        assert small.read(mp3)[:2] in (b"ID", b"\xff\xfb") and small.read("README.txt") == full.read("README.txt")
    assert preview.bytes < pack.bytes / 2


async def test_the_llm_writes_a_packs_prompts_at_its_tempo(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    chat_server: ChatServer,
    drum_renders: list[str],
) -> None:
    chat_server.content = json.dumps({"prompts": ["misty harp loop at 70 bpm", "heroic brass march, 140 bpm"]})
    settings = settings.model_copy(update={"llm_base_url": chat_server.url, "cover_mode": "off"})
    job = await _run_pack(settings, sessions, arq_redis, PackParams(prompt="RPG levels", count=2, bpm=100, seed=1))
    assert job.status is JobStatus.DONE, job.error
    meta = PackMeta.model_validate(job.artifacts[0].meta)
    assert (meta.prompt_source, meta.prompt_note) == ("llm", None)
    assert drum_renders == ["misty harp loop at 100 bpm", "heroic brass march, 100 bpm"]
    asked = chat_server.requests[0]["body"]["messages"][1]["content"]
    assert "Use case: RPG levels" in asked and "exactly 100 bpm" in asked


async def test_a_pack_with_no_loop_fails_saying_why(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    """The real tiny model: noise, with no beat to cut loops on."""
    params = PackParams(prompt="RPG levels", count=2, bpm=120, seed=1, loop={"bars": 1})  # type: ignore[arg-type]
    job = await _run_pack(settings.model_copy(update={"cover_mode": "off"}), sessions, arq_redis, params)
    assert job.status is JobStatus.FAILED and job.error_code is ErrorCode.INVALID_REQUEST
    assert (job.error or "").startswith("none of the 2 loops could be cut; loop 1: ") and job.artifacts == ()
