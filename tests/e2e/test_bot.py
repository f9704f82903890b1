"""The bot through its real discord.py code paths, against the Discord harness, with real redis and SQLite.

The end-to-end tests also run a real `beatforge worker` process, as in production.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import discord
import numpy as np
import pytest
import soundfile as sf
from arq.connections import ArqRedis
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import (
    CoverParams,
    JobStatus,
    LoopJobParams,
    LoopParams,
    MidiParams,
    Relation,
)
from beatforge.presets import STYLES
from bot.app import Beatforge
from generation.audio.io import write_wav
from storage import jobs
from storage.artifacts import ArtifactStore
from tests.support.bot import (
    CALLBACK,
    CHANNEL_MESSAGES,
    EPHEMERAL,
    FOLLOWUP,
    MANAGE_SERVER,
    custom_ids,
    delivered_job,
    edits,
    finish_job,
    new_job,
    wait_for_edit,
    wav_bytes,
)
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    FakeDiscord,
    component_payload,
    dispatch_gateway,
    settle,
    slash_command_payload,
)

#: A worker process's first start in a fresh venv compiles librosa's numba kernels (30 s+ on 2 cores).
WORKER_TIMEOUT_S = 300


def beat(bot: Beatforge, **options: Any) -> dict[str, Any]:
    return slash_command_payload("beat", options, bot=bot)


async def test_commands_are_synced_at_start_up(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    _, fake = discord_bot
    (sync,) = fake.find("PUT", r"^/applications/\d+/commands$")
    commands = {c["name"]: c for c in sync.json}
    assert set(commands) >= {"beat", "loop", "cover", "midi", "admin", "history", "show", "styles"}
    midi = {o["name"]: o for o in commands["midi"]["options"]}
    assert midi["file"]["type"] == discord.AppCommandOptionType.attachment.value and not midi["file"]["required"]
    options = {o["name"]: o for o in commands["beat"]["options"]}
    assert options["prompt"]["max_length"] == 500 and not options["prompt"]["required"]  # a style alone will do
    assert [c["value"] for c in options["style"]["choices"]] == list(STYLES)
    assert [c["value"] for c in options["mood"]["choices"]] == ["happy", "tense", "sad", "calm"]
    assert commands["beat"]["description"] == "Turn a sentence into a beat, with cover art."


@pytest.mark.slow
async def test_beat_end_to_end(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    start_worker: Callable[..., Any],
) -> None:
    bot, fake = discord_bot
    start_worker(settings)
    wall_minus_monotonic = time.time() - time.monotonic()
    dispatched = time.monotonic()
    prompt = "dark psychedelic trap, 808s @everyone \x07140 bpm"
    dispatch_gateway(bot, "INTERACTION_CREATE", beat(bot, prompt=prompt, duration=5, seed=1234))

    # Deferred first, at once, before the job row exists (i.e. before any slow work).
    defer = await fake.wait_for("POST", CALLBACK, timeout=3)
    assert defer.json["type"] == 5 and defer.index == min(r.index for r in fake.requests if r.timestamp >= dispatched)
    assert defer.timestamp - dispatched < 1.0
    queued = await wait_for_edit(fake, lambda c: "queued" in c, timeout=5)
    assert "#1 in line" in queued.json["content"]

    # The result goes to the channel (with a nonce, so a retry cannot post it twice), replying to the status line.
    followup = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=WORKER_TIMEOUT_S)
    upload, cover = followup.files
    assert cover.filename.endswith(".png") and Image.open(io.BytesIO(cover.data)).size == (64, 64)
    assert followup.json["embeds"][0]["image"]["url"] == f"attachment://{cover.filename}"
    assert custom_ids(followup.json) == [
        f"bf:{a}:1" for a in ("reroll", "loop", "midi", "cover", "keep", "extend", "remix", "edit")
    ]
    audio, rate = sf.read(io.BytesIO(upload.data))
    assert (rate, len(audio)) == (32_000, 5 * 32_000) and audio.std() > 1e-3
    content, embed = followup.json["content"], followup.json["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert "dark psychedelic trap, 808s" in embed["description"] and "Beat #1" in content
    assert (fields["Seed"], fields["Duration"]) == ("`1234`", "5 s")
    assert settings.default_model in fields["Model"] and settings.default_model in fields["Provenance"]
    assert "@everyone" not in content and "@everyone" not in json.dumps(embed)  # defused, and pinging is off besides
    assert followup.json["allowed_mentions"] == {"parse": []}
    await wait_for_edit(fake, lambda c: c.startswith("✅"), timeout=5)

    shown = edits(fake)
    assert any("generating…" in c and "%" in c for c in shown), shown  # progress reached the user
    assert shown.index(queued.json["content"]) < len(shown) - 1

    job = await delivered_job(sessions, 1)
    assert job.status is JobStatus.DONE
    assert job.params.seed == 1234 and "\x07" not in job.params.prompt
    assert defer.timestamp + wall_minus_monotonic <= job.queued_at.timestamp() + 0.05
    artifact, cover_artifact = job.artifacts
    assert artifact.kind == "audio" and artifact.bytes == len(upload.data)
    assert cover_artifact.kind == "cover" and cover_artifact.bytes == len(cover.data)


@pytest.mark.slow
async def test_unloadable_model_is_reported_to_the_user(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    start_worker: Callable[..., Any],
) -> None:
    bot, fake = discord_bot
    start_worker(settings, default_model="/models/missing-musicgen")
    dispatch_gateway(bot, "INTERACTION_CREATE", beat(bot, prompt="lofi", duration=2))
    failed = await wait_for_edit(fake, lambda c: c.startswith("❌"), timeout=WORKER_TIMEOUT_S)
    told = failed.json["content"]
    assert "model is not available" in told and "does not exist" in told
    assert "/models/missing-musicgen" not in told  # the server's paths stay in its log
    assert (await delivered_job(sessions, 1)).status is JobStatus.FAILED


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "\x00\x1b"}, "prompt is empty"),
        ({"prompt": "x" * 5000}, "prompt is 5000 characters long; the limit is 500"),
        ({"prompt": "ok", "duration": 0.5}, "duration must be at least 1"),
        ({"prompt": "ok", "duration": 241}, "duration must be at most 240"),
        ({"prompt": "ok", "seed": -5}, "seed must be at least 0"),
    ],
)
async def test_bad_input_gets_a_private_explanation_and_queues_nothing(
    discord_bot: tuple[Beatforge, FakeDiscord],
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    options: dict[str, Any],
    phrase: str,
) -> None:
    bot, fake = discord_bot
    dispatch_gateway(bot, "INTERACTION_CREATE", beat(bot, **options))
    reply = await fake.wait_for("POST", CALLBACK, timeout=3)
    await settle(bot)
    assert reply.json["type"] == 4 and reply.json["data"]["flags"] & EPHEMERAL
    assert phrase in reply.json["data"]["content"]
    async with sessions() as session:
        assert await jobs.count_jobs(session) == 0
    assert await arq_redis.zcard(bot.settings.queue_name) == 0


async def _finished_job(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    status_message_id: int | None,
    pad: int = 0,
    user_id: int = 42,
) -> int:
    """A job the worker has finished, made directly (the delivery path is what is under test)."""
    job_id = await new_job(sessions, user_id=user_id, status_message_id=status_message_id)
    audio = ("a.wav", "audio", wav_bytes(32_000 + pad), None)
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, [audio])
    return job_id


async def _delivered_beat(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], fake: FakeDiscord
) -> tuple[int, dict[str, Any]]:
    """A finished beat and the result message the bot posted for it (whose buttons a test can click)."""
    beat_id = await _finished_job(settings, sessions, status_message_id=None)
    posted = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    return beat_id, fake.messages[int(posted.response["id"])]


async def test_without_a_live_interaction_the_result_goes_to_the_channel(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """After a restart or once the 15-minute token is gone: a channel message replying to the status message."""
    _, fake = discord_bot
    job_id = await _finished_job(settings, sessions, status_message_id=555)
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert post.files[0].filename == "a.wav"
    assert int(post.json["message_reference"]["message_id"]) == 555
    assert post.json["allowed_mentions"] == {"parse": []}
    assert "<@42>" in post.json["content"] and f"Beat #{job_id}" in post.json["content"]
    await delivered_job(sessions, job_id)


async def test_queue_position_counts_the_jobs_ahead(
    discord_bot: tuple[Beatforge, FakeDiscord], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot  # no worker: both jobs wait in redis
    for prompt in ("first beat", "second beat"):
        dispatch_gateway(bot, "INTERACTION_CREATE", beat(bot, prompt=prompt))
        await settle(bot)
    assert [c for c in edits(fake) if "queued" in c] == [
        "⏳ Beat #1 queued — #1 in line",
        "⏳ Beat #2 queued — #2 in line",
    ]
    assert await arq_redis.zcard(bot.settings.queue_name) == 2


async def test_with_a_live_interaction_the_result_still_goes_to_the_channel_with_a_nonce(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A follow-up cannot carry a nonce, so a repeat after a crash could post it twice: the channel comes first."""
    bot, fake = discord_bot
    dispatch_gateway(bot, "INTERACTION_CREATE", beat(bot, prompt="first beat"))
    await settle(bot)
    async with sessions() as session:
        job = await jobs.get_job(session, 1)
    store = ArtifactStore(settings.artifact_dir)
    with store.writing(job.id, "a.wav") as tmp:
        write_wav(tmp, np.zeros((1, 16_000), np.float32), sample_rate=32_000)
    async with sessions() as session:
        await jobs.mark_done(session, job.id, artifacts=[store.record(job.id, "a.wav", kind="audio")])
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert post.files[0].filename == "a.wav"
    assert post.json["nonce"] == f"bf{job.queue_job_id}" and post.json["enforce_nonce"] is True
    assert int(post.json["message_reference"]["message_id"]) == job.status_message_id
    assert not fake.find("POST", FOLLOWUP)
    await delivered_job(sessions, job.id)


async def test_a_file_over_the_upload_limit_is_explained_not_dropped(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    job_id = await _finished_job(settings, sessions, status_message_id=None, pad=11 * 2**19)  # 11 MiB of int16
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert post.files == [] and "11.1 MiB" in post.json["content"] and "10 MiB upload limit" in post.json["content"]
    await delivered_job(sessions, job_id)


async def test_new_cover_button_queues_a_cover_job_for_the_owner_only(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = discord_bot
    owner = 42
    beat_id = await _finished_job(settings, sessions, status_message_id=None, user_id=owner)
    posted = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert custom_ids(posted.json) == [
        f"bf:{action}:{beat_id}" for action in ("reroll", "loop", "midi", "cover", "keep", "extend", "remix", "edit")
    ]
    message = fake.messages[int(posted.response["id"])]

    # Someone else (no Manage Server) is refused privately, and nothing is queued.
    dispatch_gateway(
        bot, "INTERACTION_CREATE", component_payload(f"bf:cover:{beat_id}", message=message, user_id=7, permissions=0)
    )
    refusal = await fake.wait_for("POST", CALLBACK, timeout=3)
    await settle(bot)
    assert refusal.json["data"]["flags"] & EPHEMERAL and "only they or an admin" in refusal.json["data"]["content"]

    # The owner gets a queued cover job that remembers its beat.
    dispatch_gateway(
        bot, "INTERACTION_CREATE", component_payload(f"bf:cover:{beat_id}", message=message, user_id=owner)
    )
    await wait_for_edit(fake, lambda c: "queued" in c, timeout=3)
    async with sessions() as session:
        cover_job = await jobs.get_job(session, beat_id + 1)
    assert (cover_job.kind, cover_job.parent_id, cover_job.status) == ("cover", beat_id, JobStatus.QUEUED)
    assert cover_job.params.prompt == "ambient ‹@42> drift" and cover_job.params.seed != 9
    assert await arq_redis.zcard(settings.queue_name) == 1
    assert "New cover #2 for beat #1 queued" in edits(fake)[-1]


async def test_cover_command_for_an_unknown_beat_is_refused_privately(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("cover", {"beat": 99}, bot=bot))
    reply = await fake.wait_for("POST", CALLBACK, timeout=3)
    await settle(bot)
    assert reply.json["data"]["flags"] & EPHEMERAL and "no beat #99" in reply.json["data"]["content"]
    async with sessions() as session:
        assert await jobs.count_jobs(session) == 0


@pytest.mark.parametrize(
    ("command", "option", "subcommand", "permissions"),
    [
        ("cover", "beat", None, None),
        ("midi", "beat", None, None),
        ("show", "job", None, None),
        ("admin", "job", "cancel", MANAGE_SERVER),
    ],
)
async def test_a_job_number_past_what_the_database_holds_is_refused_privately(
    discord_bot: tuple[Beatforge, FakeDiscord],
    sessions: async_sessionmaker[AsyncSession],
    command: str,
    option: str,
    subcommand: str | None,
    permissions: int | None,
) -> None:
    """Discord's client enforces an option's range, a crafted interaction does not: 2**70 overflows SQLite's
    64-bit INTEGER, so unchecked it would raise in storage and leave the user with no answer."""
    bot, fake = discord_bot
    extra: dict[str, Any] = {} if permissions is None else {"permissions": permissions}
    payload = slash_command_payload(command, {option: 2**70}, bot=bot, subcommand=subcommand, **extra)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK, timeout=3)
    await settle(bot)
    content = reply.json["data"]["content"]
    assert reply.json["data"]["flags"] & EPHEMERAL, reply.json
    assert f"{option} is out of range" in content and f"{2**70}" in content, content
    assert "went wrong on our side" not in content
    async with sessions() as session:
        assert await jobs.count_jobs(session) == 0


async def test_a_finished_cover_job_posts_the_image_with_a_fallback_note(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    beat_id, _ = await _delivered_beat(settings, sessions, fake)
    params = CoverParams(prompt="ambient drift", seed=10)
    async with sessions() as session:
        job = await jobs.create_job(
            session, params=params, user_id=42, user_name="u", guild_id=None, channel_id=DEFAULT_CHANNEL_ID,
            parent_id=beat_id, relation=Relation.COVER,
        )  # fmt: skip
    store = ArtifactStore(settings.artifact_dir)
    with store.writing(job.id, "cover.png") as tmp:
        Image.new("RGB", (64, 64), "purple").save(tmp, format="PNG")
    note = {
        "source": "procedural",
        "model": None,
        "note": "the cover model is not available; this is the fallback cover",
    }
    async with sessions() as session:
        await jobs.mark_running(session, job.id, resolved_model="procedural")
        await jobs.mark_done(session, job.id, artifacts=[store.record(job.id, "cover.png", kind="cover", meta=note)])
    post = await fake.wait_for(
        lambda r: (
            r.method == "POST" and r.path.endswith("/messages") and "New cover" in (r.json or {}).get("content", "")
        ),
        timeout=5,
    )
    assert [f.filename for f in post.files] == ["cover.png"]
    assert "fallback cover" in post.json["content"] and f"for beat #{beat_id}" in post.json["content"]
    assert custom_ids(post.json) == [
        f"bf:keep:{job.id}",  # keep acts on the cover itself, the others on its beat
        f"bf:loop:{beat_id}",
        f"bf:midi:{beat_id}",
        f"bf:cover:{beat_id}",
    ]


async def test_loop_command_queues_a_beat_that_ends_in_a_loop(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    payload = slash_command_payload("loop", {"prompt": "lofi piano", "bpm": 90, "bars": 4, "format": "mp3"}, bot=bot)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    await wait_for_edit(fake, lambda c: "queued" in c, timeout=3)
    async with sessions() as session:
        job = await jobs.get_job(session, 1)
    loop = job.params.loop
    assert job.kind == "beat" and job.params.bpm == 90 and "90 bpm" in job.params.music_text
    assert loop is not None and (loop.bars, loop.target_bpm, loop.format) == (4, 90, "mp3")
    assert job.params.duration_s == pytest.approx(4 * 4 * 60 / 90 + 4)  # room around the bars


async def test_loop_button_cuts_a_loop_of_the_beat(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = discord_bot
    beat_id, message = await _delivered_beat(settings, sessions, fake)
    dispatch_gateway(bot, "INTERACTION_CREATE", component_payload(f"bf:loop:{beat_id}", message=message, user_id=42))
    await wait_for_edit(fake, lambda c: "Loop #2 of beat #1 queued" in c, timeout=3)
    async with sessions() as session:
        job = await jobs.get_job(session, beat_id + 1)
    assert (job.kind, job.parent_id, job.relation) == ("loop", beat_id, Relation.LOOP)
    assert isinstance(job.params, LoopJobParams) and (job.params.take, job.params.seed) == (1, 9)
    assert await arq_redis.zcard(settings.queue_name) == 1


async def test_a_finished_loop_posts_the_loop_and_its_metadata(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    beat_id, _ = await _delivered_beat(settings, sessions, fake)
    params = LoopJobParams(prompt="ambient drift", seed=10, loop=LoopParams(bars=2))
    async with sessions() as session:
        job = await jobs.create_job(
            session, params=params, user_id=42, user_name="u", guild_id=DEFAULT_GUILD_ID, channel_id=DEFAULT_CHANNEL_ID,
            parent_id=beat_id, relation=Relation.LOOP,
        )  # fmt: skip
    store = ArtifactStore(settings.artifact_dir)
    info = {"bars": 2, "bpm": 120.0, "stretched": False, "seam_score": 1.04, "key": {"label": "A minor"}}
    with store.writing(job.id, "loop.wav") as tmp:
        write_wav(tmp, np.zeros((1, 64_000), np.float32), sample_rate=32_000)
    with store.writing(job.id, "loop.json") as tmp:
        tmp.write_text(json.dumps(info))
    async with sessions() as session:
        await jobs.mark_running(session, job.id, resolved_model="tiny")
        records = [
            store.record(job.id, "loop.wav", kind="loop", meta=info),
            store.record(job.id, "loop.json", kind="metadata"),
        ]
        await jobs.mark_done(session, job.id, artifacts=records)
    post = await fake.wait_for(
        lambda r: r.method == "POST" and r.path.endswith("/messages") and "Loop #" in (r.json or {}).get("content", ""),
        timeout=5,
    )
    assert [f.filename for f in post.files] == ["loop.wav", "loop.json"]
    assert "2 bars · 120.0 bpm · A minor · seam score 1.04" in post.json["content"]
    assert f"of beat #{beat_id}" in post.json["content"]


async def test_loop_with_impossible_durations_is_refused_privately(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    options = {"prompt": "lofi", "bpm": 90, "min_duration": 20.0, "max_duration": 10.0}
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("loop", options, bot=bot))
    reply = await fake.wait_for("POST", CALLBACK, timeout=3)
    await settle(bot)
    assert reply.json["data"]["flags"] & EPHEMERAL
    assert "min_duration (20 s) is longer than max_duration (10 s)" in reply.json["data"]["content"]
    async with sessions() as session:
        assert await jobs.count_jobs(session) == 0


async def test_midi_command_on_an_upload_stores_it_and_queues_a_midi_job(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = discord_bot
    data = wav_bytes(8000, rate=8000)
    attachment = fake.add_attachment("My Track (final).wav", data)
    payload = slash_command_payload("midi", {"file": attachment, "stems": True}, bot=bot)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    await wait_for_edit(fake, lambda c: "MIDI #1 of My Track (final).wav queued" in c, timeout=3)
    async with sessions() as session:
        job = await jobs.get_job(session, 1)
    midi = job.params
    assert job.kind == "midi" and job.parent_id is None and isinstance(midi, MidiParams) and midi.stems
    assert midi.upload is not None and midi.upload.startswith("uploads/") and midi.upload.endswith(".wav")
    assert midi.prompt == "My Track (final).wav" and midi.seed is None  # what it is about: the file, no seed
    assert ArtifactStore(settings.artifact_dir).resolve(midi.upload).read_bytes() == data
    (queued,) = await arq_redis.queued_jobs(queue_name=settings.queue_name)
    assert queued.function == "transcribe_midi" and queued.args[0]["params"]["upload"] == midi.upload


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        ({}, "Give either `beat`"),
        ({"beat": 1, "file": "wav"}, "Give either `beat`"),
        ({"file": "pdf"}, "notes.pdf doesn't look like audio: send a wav, flac, ogg, mp3 or aiff file"),
        ({"file": "huge"}, "big.wav is 60.0 MiB; the limit is 50 MiB"),
        ({"file": "empty"}, "empty.mp3 is empty (0 bytes)"),
        ({"beat": 99}, "There is no beat #99"),
    ],
)
async def test_midi_command_refuses_bad_requests_privately(
    discord_bot: tuple[Beatforge, FakeDiscord],
    sessions: async_sessionmaker[AsyncSession],
    options: dict[str, Any],
    phrase: str,
) -> None:
    bot, fake = discord_bot
    files = {
        "wav": lambda: fake.add_attachment("a.wav", wav_bytes(8000, rate=8000)),
        "pdf": lambda: fake.add_attachment("notes.pdf", b"%PDF-1.7"),
        "huge": lambda: {**fake.add_attachment("big.wav", b"RIFF"), "size": 60 * 2**20},
        "empty": lambda: fake.add_attachment("empty.mp3", b""),
    }
    if "file" in options:
        options = {**options, "file": files[options["file"]]()}
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("midi", options, bot=bot))
    reply = await fake.wait_for("POST", CALLBACK, timeout=3)
    await settle(bot)
    assert reply.json["data"]["flags"] & EPHEMERAL and phrase in reply.json["data"]["content"]
    assert not fake.find("GET", r"^/cdn/")  # refused before downloading anything
    async with sessions() as session:
        assert await jobs.count_jobs(session) == 0


async def test_midi_button_queues_a_midi_job_for_the_beat(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = discord_bot
    beat_id, message = await _delivered_beat(settings, sessions, fake)
    dispatch_gateway(bot, "INTERACTION_CREATE", component_payload(f"bf:midi:{beat_id}", message=message, user_id=42))
    await wait_for_edit(fake, lambda c: f"MIDI #2 of beat #{beat_id} queued" in c, timeout=3)
    async with sessions() as session:
        job = await jobs.get_job(session, beat_id + 1)
    assert (job.kind, job.parent_id, job.relation) == ("midi", beat_id, Relation.MIDI)
    midi = job.params
    assert isinstance(midi, MidiParams) and not midi.stems and midi.upload is None and midi.take == 1
    (queued,) = await arq_redis.queued_jobs(queue_name=settings.queue_name)
    assert queued.function == "transcribe_midi"

    # someone else's beat: refused privately, nothing queued
    dispatch_gateway(bot, "INTERACTION_CREATE", component_payload(f"bf:midi:{beat_id}", message=message, user_id=7))
    reply = await fake.wait_for(
        lambda r: r.method == "POST" and "callback" in r.path and (r.json or {}).get("type") == 4, timeout=3
    )
    assert reply.json["data"]["flags"] & EPHEMERAL and "only they or an admin" in reply.json["data"]["content"]
    assert await arq_redis.zcard(settings.queue_name) == 1


async def test_a_finished_midi_job_posts_the_pack_with_its_summary(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    params = MidiParams(prompt="my track.wav", upload="uploads/ab-my-track.wav")
    async with sessions() as session:
        job = await jobs.create_job(
            session,
            params=params,
            user_id=42,
            user_name="u",
            guild_id=DEFAULT_GUILD_ID,
            channel_id=DEFAULT_CHANNEL_ID,
        )
    store = ArtifactStore(settings.artifact_dir)
    with store.writing(job.id, "beatforge-1-midi.zip") as tmp:
        tmp.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    info = {"source": "my track.wav", "bpm": 92.5, "key": "F minor", "drum_hits": 40, "bass_notes": 12,
            "melody_notes": 30, "separation": "harmonic/percussive split (offline)", "quantized": True}  # fmt: skip
    async with sessions() as session:
        await jobs.mark_running(session, job.id, resolved_model="basic-pitch")
        await jobs.mark_done(
            session, job.id, artifacts=[store.record(job.id, "beatforge-1-midi.zip", kind="midi", meta=info)]
        )
    post = await fake.wait_for(
        lambda r: r.method == "POST" and r.path.endswith("/messages") and "MIDI #" in (r.json or {}).get("content", ""),
        timeout=5,
    )
    content = post.json["content"]
    assert [f.filename for f in post.files] == ["beatforge-1-midi.zip"]
    assert "🎹 **MIDI #1 of my track.wav**" in content
    assert "92.5 bpm · F minor · drums 40 hits · bass 12 notes · melody 30 notes" in content
    assert "harmonic/percussive split" in content
    assert "description" not in post.json["embeds"][0]  # no prompt quote for an upload: its "prompt" is its name
    assert custom_ids(post.json) == [f"bf:keep:{job.id}"]  # no beat to act on
    await delivered_job(sessions, job.id)  # let the watcher finish its database write before teardown


@pytest.mark.parametrize("limit", [100_000, 1_000_000])
async def test_stems_over_the_upload_limit_go_out_as_a_preview_and_a_note(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    limit: int,
) -> None:
    bot, fake = discord_bot
    beat_id, _ = await _delivered_beat(settings, sessions, fake)
    payload = slash_command_payload(
        "midi",
        {"beat": beat_id, "stems": True},
        bot=bot,
        attachment_size_limit=limit,
        user_id=42,  # its maker
    )
    since = len(fake.requests)  # the beat's own result went to the same channel
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    await wait_for_edit(fake, lambda c: "queued" in c, timeout=3)
    job_id = beat_id + 1
    store = ArtifactStore(settings.artifact_dir)
    sizes = {"pack.zip": 2_000, "stems.zip": 300_000, "stems-preview.zip": 60_000}
    for name, size in sizes.items():
        with store.writing(job_id, name) as tmp:
            tmp.write_bytes(bytes(size))
    info = {"bpm": 120.0, "key": "A minor", "drum_hits": 3, "bass_notes": 1, "melody_notes": 2, "separation": "x"}
    async with sessions() as session:
        await jobs.mark_running(session, job_id, resolved_model="basic-pitch")
        records = [
            store.record(job_id, "pack.zip", kind="midi", meta=info),
            store.record(job_id, "stems.zip", kind="stems"),
            store.record(job_id, "stems-preview.zip", kind="stems_preview"),
        ]
        await jobs.mark_done(session, job_id, artifacts=records)
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, since=since, timeout=5)
    content = post.json["content"]
    if limit < sizes["stems.zip"]:
        assert [f.filename for f in post.files] == ["pack.zip", "stems-preview.zip"]
        assert "stems.zip is 0.3 MiB, over this server's" in content
    else:  # the full stems fit: no preview, no note
        assert [f.filename for f in post.files] == ["pack.zip", "stems.zip"]
        assert "upload limit" not in content
    assert custom_ids(post.json) == [
        f"bf:{a}:{i}" for a, i in (("keep", job_id), *((a, beat_id) for a in ("loop", "midi", "cover")))
    ]
    await delivered_job(sessions, job_id)


async def test_takes_are_queued_and_every_take_is_posted(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    dispatch_gateway(bot, "INTERACTION_CREATE", beat(bot, prompt="lofi", takes=3))
    await wait_for_edit(fake, lambda c: "queued" in c, timeout=3)
    async with sessions() as session:
        job = await jobs.get_job(session, 1)
    assert job.params.takes == 3
    store = ArtifactStore(settings.artifact_dir)
    records = []
    for take, seed in enumerate((job.params.seed, 11, 12), start=1):
        with store.writing(job.id, f"take{take}.wav") as tmp:
            write_wav(tmp, np.zeros((1, 3_200), np.float32), sample_rate=32_000)
        records.append(store.record(job.id, f"take{take}.wav", kind="audio", meta={"take": take, "seed": seed}))
    async with sessions() as session:
        await jobs.mark_running(session, job.id, resolved_model="tiny")
        await jobs.mark_done(session, job.id, artifacts=records)
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert [f.filename for f in post.files] == ["take1.wav", "take2.wav", "take3.wav"]
    fields = {f["name"]: f["value"] for f in post.json["embeds"][0]["fields"]}
    assert fields["Seeds"] == f"take 1: `{job.params.seed}`\ntake 2: `11`\ntake 3: `12`"
    await delivered_job(sessions, job.id)
