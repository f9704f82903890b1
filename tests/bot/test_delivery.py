"""Result delivery: the embed and its provenance line, fitting Discord's upload limits, and every way Discord
can refuse a result (429, 5xx, 404, 403, 413, an expired token) without the user being left without one.

Bot tests drive the real watcher against the Discord harness with real redis and SQLite; finished jobs are
made directly (the worker is not what is under test). The compact copy is tested on the worker's own helper.
"""

from __future__ import annotations

import io
import logging
import re
import socket
from datetime import timedelta
from typing import Any

import aiohttp
import discord
import numpy as np
import pytest
import soundfile as sf
from arq.connections import ArqRedis
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.bounds import DISCORD_UPLOAD_LIMIT
from beatforge.config import Settings
from beatforge.contract import BeatParams, ErrorCode
from bot.app import Beatforge
from bot.messages import licence_text
from generation.audio.formats import AudioTooLarge, duration_of, encode_compact, mp3_bitrate_to_fit
from generation.audio.io import write_wav
from generation.music.registry import META_LICENCE
from generation.worker.beat import compact_take
from storage import jobs
from storage.artifacts import ArtifactStore
from tests.support import bot as support
from tests.support.bot import (
    CHANNEL_MESSAGES,
    FOLLOWUP,
    OTHER_CHANNEL_MESSAGES,
    delivered_job,
    finish_job,
    get_job,
    png_bytes,
)
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    FakeDiscord,
    RecordedRequest,
    connected,
    dispatch_gateway,
    settle,
    slash_command_payload,
)

MiB = 2**20
ENABLE_LINKS = "set BEATFORGE_PUBLIC_URL and BEATFORGE_LINK_SECRET"

#: (filename, kind, size in bytes, meta) of a file in a finished job. Delivery only reads sizes and names.
File = tuple[str, str, int, dict[str, Any] | None]


def take(number: int, seed: int, **extra: Any) -> dict[str, Any]:
    """A take's metadata as the worker records it (``AudioMeta``); the model is the job's ``resolved_model``."""
    return {"licence": META_LICENCE, "take": number, "seed": seed, **extra}


async def new_job(
    sessions: async_sessionmaker[AsyncSession], *, status_message_id: int | None = None, **params: Any
) -> int:
    beat = BeatParams(**{"prompt": "ambient <@42> drift", "duration_s": 1, "seed": 9, **params})
    return await support.new_job(sessions, beat, status_message_id=status_message_id)


async def finish(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    job_id: int,
    files: list[File],
    *,
    model: str = "facebook/musicgen-small",
) -> None:
    contents = [
        (name, kind, png_bytes() if name.endswith(".png") else bytes(size), meta) for name, kind, size, meta in files
    ]
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, contents, model=model)


async def finished_job(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    files: list[File] | None = None,
    *,
    model: str = "facebook/musicgen-small",
    **kwargs: Any,
) -> int:
    job_id = await new_job(sessions, **kwargs)
    await finish(settings, sessions, job_id, files or [("a.wav", "audio", 64_000, take(1, 9))], model=model)
    return job_id


async def queued_beat(bot: Beatforge, fake: FakeDiscord, sessions: async_sessionmaker[AsyncSession]) -> int:
    """A /beat whose interaction is live, answered and has its status message (so the watcher may deliver)."""
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "first beat"}, bot=bot))
    await settle(bot)
    async with sessions() as session:
        job = await jobs.get_job(session, 1)
    assert job.status_message_id is not None and job.id in bot.status_board.interactions
    return job.id


def fields(request: RecordedRequest) -> dict[str, str]:
    return {f["name"]: f["value"] for f in request.json["embeds"][0]["fields"]}


def statuses(fake: FakeDiscord, regex: str) -> list[int | None]:
    return [r.status for r in fake.find("POST", regex)]


async def result_message_id(sessions: async_sessionmaker[AsyncSession], job_id: int) -> int | None:
    return (await delivered_job(sessions, job_id)).result_message_id


# --- the result message --------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_result_is_an_embed_with_every_detail_the_cover_and_a_provenance_line(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    files: list[File] = [
        ("take1.wav", "audio", 64_000, take(1, 9, bpm=92.4, key="F minor")),
        ("take2.wav", "audio", 64_000, take(2, 77, bpm=91.0, key="C major")),
        ("cover.png", "cover", 0, {"source": "diffusion", "model": "stabilityai/sd-turbo"}),
    ]
    job_id = await finished_job(
        settings, sessions, files, status_message_id=555, style="dark-trap", mood="tense", takes=2, duration_s=30
    )
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert [f.filename for f in post.files] == ["take1.wav", "take2.wav", "cover.png"]
    embed = post.json["embeds"][0]
    assert embed["title"] == f"Beat #{job_id}" and "ambient" in embed["description"]
    assert embed["image"]["url"] == "attachment://cover.png"
    shown = fields(post)
    assert shown["Style"] == "Dark atmospheric trap" and shown["Mood"]
    assert shown["Model"] == "`facebook/musicgen-small`" and shown["Seeds"] == "take 1: `9`\ntake 2: `77`"
    assert (shown["Tempo"], shown["Key"], shown["Duration"]) == ("92 bpm", "F minor", "30 s")
    assert re.fullmatch(r"\d+\.\d s", shown["Time taken"])
    provenance = shown["Provenance"]
    assert "`facebook/musicgen-small`" in provenance and "CC-BY-NC 4.0" in provenance
    assert "CC-BY-NC 4.0: non-commercial use only" in provenance
    assert "seeds 9, 77" in provenance and "ambient" in provenance
    assert "<@42>" in post.json["content"] and post.json["allowed_mentions"] == {"parse": []}
    assert "<@42>" not in provenance  # the prompt's mention is defused wherever it is echoed
    assert await result_message_id(sessions, job_id) == int(post.response["id"])


@pytest.mark.parametrize(
    ("licence", "says"),
    [
        (META_LICENCE, "CC-BY-NC 4.0: non-commercial use only"),
        ("as the audiocraft checkpoint's (non-commercial)", "non-commercial use only"),
        (None, "licence unknown: check it before you sell or release this"),
        ("unknown", "licence unknown: check it before you sell or release this"),
        ("MIT", "MIT: you may use this commercially"),
    ],
)
def test_the_licence_is_said_plainly(licence: str | None, says: str) -> None:
    assert says in licence_text(licence)


@pytest.mark.timeout(10)
async def test_a_beat_from_before_licences_were_recorded_says_its_licence_is_unknown(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    await finished_job(settings, sessions, [("a.wav", "audio", 1_000, {"seed": 5})], model="my-finetune")
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert "`my-finetune` (licence unknown: check it before you sell or release this)" in fields(post)["Provenance"]


# --- fitting the upload limits ---------------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_a_take_over_the_limit_goes_out_as_its_compact_copy_and_says_how_to_get_the_wav(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    compact = {"take": 1, "format": "mp3", "bitrate_kbps": 320, "of": "beat.wav", "seed": 9}
    files: list[File] = [("beat.wav", "audio", 15 * MiB, take(1, 9)), ("beat.mp3", "audio_compact", 4 * MiB, compact)]
    job_id = await finished_job(settings, sessions, files)
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert [f.filename for f in post.files] == ["beat.mp3"]
    content = post.json["content"]
    assert "beat.wav is 15.0 MiB, over this server's 10 MiB upload limit" in content
    assert ENABLE_LINKS in content  # links are off here: the admin is told how to turn them on
    assert "beat.mp3, a MP3 copy at 320 kbps" in content
    assert content.index("beat.wav is") < content.index("beat.mp3, a MP3")
    await delivered_job(sessions, job_id)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(10)
async def test_with_links_on_the_full_wav_is_a_working_link_beside_the_compact_copy(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    port = free_port()
    linked = settings.model_copy(
        update={
            "public_url": f"http://127.0.0.1:{port}",
            "link_secret": SecretStr("test-secret-0123456789abcdef"),
            "http_host": "127.0.0.1",
            "http_port": port,
        }
    )
    bot = Beatforge(settings=linked, redis=arq_redis, sessions=sessions)
    compact = {"take": 1, "format": "mp3", "bitrate_kbps": 256, "of": "beat.wav", "seed": 9}
    files: list[File] = [("beat.wav", "audio", 11 * MiB, take(1, 9)), ("beat.mp3", "audio_compact", 3 * MiB, compact)]
    async with FakeDiscord() as fake, connected(bot, fake), aiohttp.ClientSession() as client:
        job_id = await finished_job(linked, sessions, files)
        post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
        assert [f.filename for f in post.files] == ["beat.mp3"]
        content = post.json["content"]
        assert ENABLE_LINKS not in content
        (url,) = re.findall(r"download it here \(link expires <t:\d+:R>\): <([^>]+)>", content)
        assert url.startswith(f"http://127.0.0.1:{port}/files/{job_id}/beat.wav?exp=")
        async with client.get(url) as response:
            assert response.status == 200 and len(await response.read()) == 11 * MiB
        await delivered_job(sessions, job_id)


@pytest.mark.timeout(10)
async def test_more_than_ten_files_leave_the_largest_out_with_a_line_each(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    takes: list[File] = [(f"t{n}.wav", "audio", 500_000, take(n, n)) for n in (1, 2)]
    sidecars: list[File] = [(f"m{n:02}.json", "metadata", 1_000 + n, None) for n in range(1, 11)]
    job_id = await finished_job(settings, sessions, takes + sidecars, takes=2)
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    # 12 files: the two largest (the takes) make way, and each says why and how to get it
    assert [f.filename for f in post.files] == [f"m{n:02}.json" for n in range(1, 11)]
    for name in ("t1.wav", "t2.wav"):
        line = f"{name} (0.5 MiB) is not attached: Discord takes at most 10 files in one message"
        assert line in post.json["content"]
    await delivered_job(sessions, job_id)


@pytest.mark.timeout(15)
async def test_files_too_large_together_for_one_message_drop_the_largest(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    sizes = {"t1.wav": 9 * MiB, "t2.wav": 9 * MiB + 300_000, "t3.wav": 9 * MiB + 100_000}  # ~28 MB in all
    files: list[File] = [(name, "audio", size, take(n, n)) for n, (name, size) in enumerate(sizes.items(), start=1)]
    job_id = await finished_job(settings, sessions, files)
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=10)
    assert [f.filename for f in post.files] == ["t1.wav", "t3.wav"]
    assert (
        "t2.wav (9.3 MiB) is not attached: the files together are over the 25 MB Discord takes in one message"
        in post.json["content"]
    )
    await delivered_job(sessions, job_id)


# --- Discord's failures ----------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_a_rate_limited_channel_post_is_retried_and_delivered_once(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    bot, fake = discord_bot
    job_id = await queued_beat(bot, fake, sessions)  # its interaction is live: the channel comes first anyway
    fake.fail_next("POST", CHANNEL_MESSAGES, 429, {"retry_after": 0.2, "global": False})
    await finish(settings, sessions, job_id, [("a.wav", "audio", 1_000, take(1, 9))])
    message_id = await result_message_id(sessions, job_id)
    assert statuses(fake, CHANNEL_MESSAGES) == [429, 200]
    refused, delivered = fake.find("POST", CHANNEL_MESSAGES)
    assert [f.filename for f in delivered.files] == ["a.wav"] and message_id == int(delivered.response["id"])
    assert refused.json["nonce"] == delivered.json["nonce"] and delivered.json["enforce_nonce"] is True
    assert int(delivered.json["message_reference"]["message_id"]) == (await get_job(sessions, job_id)).status_message_id
    assert not fake.find("POST", FOLLOWUP)  # once, not also as a follow-up


@pytest.mark.timeout(15)
async def test_a_server_error_is_retried_then_delivered_once(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    bot, fake = discord_bot
    job_id = await queued_beat(bot, fake, sessions)
    fake.fail_next("POST", CHANNEL_MESSAGES, 500, {"code": 0, "message": "Internal Server Error"})
    await finish(settings, sessions, job_id, [("a.wav", "audio", 1_000, take(1, 9))])
    message_id = await result_message_id(sessions, job_id)
    assert statuses(fake, CHANNEL_MESSAGES) == [500, 200]
    assert message_id == int(fake.find("POST", CHANNEL_MESSAGES)[-1].response["id"])
    assert len(fake.messages_in(DEFAULT_CHANNEL_ID)) == 2  # the status line and the result, once
    assert not fake.find("POST", FOLLOWUP)


@pytest.mark.timeout(15)
async def test_persistent_server_errors_end_after_bounded_attempts_with_a_notice_to_the_user(
    discord_bot: tuple[Beatforge, FakeDiscord],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot, fake = discord_bot
    bot.delivery.retry_base_s = 0.05  # the schedule's shape, not its pace, is under test
    attempts = settings.delivery_max_attempts
    # 503 is not among the statuses discord.py retries itself, so each attempt is one request.
    fake.fail_next("POST", CHANNEL_MESSAGES, 503, {"code": 0, "message": "Service Unavailable"}, times=attempts)
    with caplog.at_level(logging.WARNING, logger="bot.delivery"):
        job_id = await finished_job(settings, sessions)
        job = await delivered_job(sessions, job_id)
    assert statuses(fake, CHANNEL_MESSAGES) == [503] * attempts + [200]
    notice = fake.find("POST", CHANNEL_MESSAGES)[-1]
    assert (
        notice.json["content"]
        == f"⚠️ I couldn't deliver Beat #{job_id} here: Discord kept refusing it. Find it in /history."
    )
    assert job.result_message_id is None and job.delivery_attempts == attempts - 1  # the last one is not retried
    failed = [r for r in caplog.records if r.getMessage() == "delivery failed"]
    assert [r.attempt for r in failed] == list(range(1, attempts + 1))  # type: ignore[attr-defined]
    assert any(r.levelno == logging.ERROR and r.getMessage() == "giving up on delivery" for r in caplog.records)


@pytest.mark.timeout(10)
async def test_a_channel_the_bot_may_not_post_in_gets_the_result_as_the_followup_while_the_token_lives(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    bot, fake = discord_bot
    job_id = await queued_beat(bot, fake, sessions)
    fake.fail_next("POST", CHANNEL_MESSAGES, 403, {"code": 50013, "message": "Missing Permissions"})
    await finish(settings, sessions, job_id, [("a.wav", "audio", 1_000, take(1, 9))])
    message_id = await result_message_id(sessions, job_id)
    (followup,) = fake.find("POST", FOLLOWUP)
    assert [f.filename for f in followup.files] == ["a.wav"] and message_id == int(followup.response["id"])
    assert statuses(fake, CHANNEL_MESSAGES) == [403]  # no pointless retries in the channel
    assert not fake.find("POST", OTHER_CHANNEL_MESSAGES)


@pytest.mark.timeout(10)
async def test_when_the_channel_and_the_followup_refuse_the_result_goes_by_dm(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    bot, fake = discord_bot
    job_id = await queued_beat(bot, fake, sessions)
    fake.fail_next("POST", CHANNEL_MESSAGES, 404, {"code": 10003, "message": "Unknown Channel"})
    # discord.py's webhook adapter retries 5xx itself (1 s, 3 s ...): a dead token is the quick way to fail it.
    fake.fail_next("POST", FOLLOWUP, 404, {"code": 10015, "message": "Unknown Webhook"})
    await finish(settings, sessions, job_id, [("a.wav", "audio", 1_000, take(1, 9))])
    message_id = await result_message_id(sessions, job_id)
    (dm,) = fake.find("POST", OTHER_CHANNEL_MESSAGES)
    assert [f.filename for f in dm.files] == ["a.wav"] and message_id == int(dm.response["id"])
    assert (statuses(fake, CHANNEL_MESSAGES), statuses(fake, FOLLOWUP)) == ([404], [404])


@pytest.mark.timeout(10)
async def test_an_interaction_older_than_15_minutes_is_delivered_as_a_channel_message(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    bot, fake = discord_bot
    job_id = await queued_beat(bot, fake, sessions)
    # The interaction the bot holds is live until its snowflake says otherwise: age it past Discord's 15 minutes.
    interaction = bot.status_board.interactions[job_id]
    interaction.id = discord.utils.time_snowflake(discord.utils.utcnow() - timedelta(minutes=16))
    assert interaction.expires_at < discord.utils.utcnow()
    since = len(fake.requests)
    await finish(settings, sessions, job_id, [("a.wav", "audio", 1_000, take(1, 9))])
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    async with sessions() as session:
        status_message_id = (await jobs.get_job(session, job_id)).status_message_id
    assert int(post.json["message_reference"]["message_id"]) == status_message_id
    assert await result_message_id(sessions, job_id) == int(post.response["id"])
    assert not [r for r in fake.requests[since:] if r.path.startswith("/webhooks/")]  # the old token is never used


@pytest.mark.timeout(10)
async def test_missing_permissions_in_the_channel_sends_the_result_by_dm(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    _, fake = discord_bot
    fake.fail_next("POST", CHANNEL_MESSAGES, 403, {"code": 50013, "message": "Missing Permissions"})
    job_id = await finished_job(settings, sessions, status_message_id=555)
    dm = await fake.wait_for("POST", OTHER_CHANNEL_MESSAGES, timeout=5)
    (opened,) = fake.find("POST", r"^/users/@me/channels$")
    assert int(opened.json["recipient_id"]) == 42 and dm.path == f"/channels/{opened.response['id']}/messages"
    assert [f.filename for f in dm.files] == ["a.wav"] and dm.json["embeds"][0]["title"] == f"Beat #{job_id}"
    assert dm.json["content"].startswith(f"📬 I may not post in <#{DEFAULT_CHANNEL_ID}> (missing permissions")
    assert "message_reference" not in dm.json  # the status message is in another channel
    assert await result_message_id(sessions, job_id) == int(dm.response["id"])
    assert statuses(fake, CHANNEL_MESSAGES) == [403]  # no pointless retries in the channel


@pytest.mark.timeout(10)
async def test_a_failure_the_channel_refuses_is_sent_by_dm_too(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    fake.fail_next("POST", CHANNEL_MESSAGES, 403, {"code": 50013, "message": "Missing Permissions"})
    job_id = await new_job(sessions, status_message_id=555)
    async with sessions() as session:
        await jobs.mark_failed(session, job_id, code=ErrorCode.GENERATION_FAILED, message="the GPU ran out")
    dm = await fake.wait_for("POST", OTHER_CHANNEL_MESSAGES, timeout=5)
    assert (
        dm.json["content"].startswith("📬")
        and f"❌ Beat #{job_id} — Generation failed: the GPU ran out" in (dm.json["content"])
    )
    await delivered_job(sessions, job_id)


@pytest.mark.timeout(10)
async def test_when_the_dm_is_refused_too_it_is_logged_and_marked_delivered(
    discord_bot: tuple[Beatforge, FakeDiscord],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, fake = discord_bot
    fake.fail_next("POST", CHANNEL_MESSAGES, 403, {"code": 50013, "message": "Missing Permissions"})
    fake.fail_next("POST", OTHER_CHANNEL_MESSAGES, 403, {"code": 50007, "message": "Cannot send messages to this user"})
    with caplog.at_level(logging.WARNING, logger="bot.delivery"):
        job_id = await finished_job(settings, sessions)
        job = await delivered_job(sessions, job_id)
    assert job.result_message_id is None
    # given up at once
    assert statuses(fake, CHANNEL_MESSAGES) == [403] and statuses(fake, OTHER_CHANNEL_MESSAGES) == [403]
    (gave_up,) = [r for r in caplog.records if r.getMessage() == "result delivered nowhere; giving up"]
    assert gave_up.levelno == logging.ERROR and "Cannot send messages to this user" in gave_up.error  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["injected", "real"])
@pytest.mark.timeout(10)
async def test_a_413_is_posted_again_without_the_refused_file(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis, how: str
) -> None:
    """Discord can refuse an upload the server's limit allows (a webhook's lower cap, a request-size rule)."""
    bot = Beatforge(settings=settings, redis=arq_redis, sessions=sessions)
    # "real": the fake's channel takes 1 MiB per file while the guild reports 10 MiB, so the 413 is the fake's own.
    async with FakeDiscord(upload_limit=MiB if how == "real" else 10 * MiB) as fake, connected(bot, fake):
        if how == "injected":
            fake.fail_next("POST", CHANNEL_MESSAGES, 413, {"code": 40005, "message": "Request entity too large"})
        cover = {"source": "procedural", "model": None}
        files: list[File] = [("a.wav", "audio", 2 * MiB, take(1, 9)), ("cover.png", "cover", 0, cover)]
        job_id = await finished_job(settings, sessions, files)
        message_id = await result_message_id(sessions, job_id)
    refused, posted = fake.find("POST", CHANNEL_MESSAGES)
    assert (refused.status, [f.filename for f in refused.files]) == (413, ["a.wav", "cover.png"])
    assert (posted.status, [f.filename for f in posted.files]) == (200, ["cover.png"])
    content = posted.json["content"]
    assert "a.wav (2.0 MiB) is not attached: Discord refused it as too large for this message" in content
    assert ENABLE_LINKS in content and posted.json["embeds"][0]["image"]["url"] == "attachment://cover.png"
    assert message_id == int(posted.response["id"])


# --- the worker's compact copy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "limit", "kbps"),
    [(120.0, 10 * MiB, 320), (30.0, 10 * MiB, 320), (600.0, 10 * MiB, 128), (120.0, 2 * MiB, 128)],
)
def test_mp3_bitrate_is_the_highest_that_fits(seconds: float, limit: int, kbps: int) -> None:
    assert mp3_bitrate_to_fit(seconds, limit) == kbps
    assert kbps * 1000 / 8 * seconds < limit


def test_mp3_bitrate_refuses_what_cannot_fit() -> None:
    with pytest.raises(AudioTooLarge, match="mp3 32 kbps"):
        mp3_bitrate_to_fit(3600.0, MiB)


@pytest.mark.timeout(60)
async def test_a_long_stereo_take_gets_a_compact_copy_that_fits_and_a_short_one_does_not(settings: Settings) -> None:
    rate, seconds = 32_000, 120
    t = np.arange(rate * seconds, dtype=np.float32) / rate
    rng = np.random.default_rng(440)
    stereo = np.stack([np.sin(2 * np.pi * 110 * t), np.sin(2 * np.pi * 165 * t)]) * 0.3
    stereo = (stereo + rng.normal(0, 0.05, stereo.shape)).astype(np.float32)
    store = ArtifactStore(settings.artifact_dir)
    with store.writing(7, "long.wav") as tmp:
        write_wav(tmp, stereo, sample_rate=rate)
    assert store.resolve("7/long.wav").stat().st_size > DISCORD_UPLOAD_LIMIT  # ~15 MiB: the case this is for
    record, error = await compact_take(store, 7, "long.wav", stereo, rate, take=2, seed=3)
    assert error is None and record is not None and record.kind == "audio_compact" and record.path == "7/long.mp3"
    assert record.meta == {"take": 2, "format": "mp3", "bitrate_kbps": 320, "of": "long.wav", "seed": 3}
    data = store.resolve(record.path).read_bytes()
    assert len(data) == record.bytes <= DISCORD_UPLOAD_LIMIT
    assert duration_of(data) == pytest.approx(seconds, abs=0.05)
    decoded, decoded_rate = sf.read(io.BytesIO(data))
    assert decoded_rate == rate and decoded.shape[1] == 2  # still stereo, same rate

    with store.writing(7, "short.wav") as tmp:
        write_wav(tmp, stereo[:, : rate * 5], sample_rate=rate)
    assert await compact_take(store, 7, "short.wav", stereo[:, : rate * 5], rate, take=1, seed=1) == (None, None)


def test_encode_compact_picks_a_lower_bitrate_when_the_limit_is_tight() -> None:
    rng = np.random.default_rng(440)
    noise = rng.uniform(-0.5, 0.5, (2, 32_000 * 10)).astype(np.float32)
    data, fmt, kbps = encode_compact(noise, sample_rate=32_000, limit_bytes=200_000)
    assert fmt == "mp3" and kbps == 128 and len(data) <= 200_000
