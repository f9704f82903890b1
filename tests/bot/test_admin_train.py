"""/admin train through the real discord.py paths (Discord harness), with real redis and SQLite: who may, the zip's
checks before and after downloading, one run per server, and the run queued on the training queue only."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import JobKind, JobProgress, JobStatus, TrainParams
from beatforge.fleet import ModelInfo, publish_models
from bot.app import Beatforge
from bot.messages import progress_text, result_text
from storage import jobs
from storage.artifacts import ArtifactStore
from storage.model_registry import add_model
from tests.support.bot import CALLBACK, EPHEMERAL, MANAGE_SERVER, job_count, private_text, wait_for_edit, wav_bytes
from tests.support.discord_harness import (
    DEFAULT_GUILD_ID,
    DEFAULT_MEMBER_PERMISSIONS,
    FakeDiscord,
    RecordedRequest,
    connected,
    dispatch_gateway,
    settle,
    slash_command_payload,
)


@pytest.fixture
async def discord_bot(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> AsyncIterator[tuple[Beatforge, FakeDiscord]]:
    bot = Beatforge(settings=settings, redis=arq_redis, sessions=sessions)
    await publish_models(
        arq_redis,
        [
            ModelInfo("debug", "base", "none", "tiny"),
            ModelInfo("taken", "lora", "MIT", "exists", base="debug"),
            ModelInfo("acestep", "base", "MIT", "diffusion", engine="acestep"),
        ],
        default="debug",
    )
    async with FakeDiscord() as fake, connected(bot, fake):
        yield bot, fake


def clips_zip(members: dict[str, bytes] | None = None) -> bytes:
    wav = wav_bytes(1600, rate=8000)
    members = members if members is not None else {"a.wav": wav, "a.txt": b"lofi drums", "b.wav": wav, "b.txt": b"x"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


async def train(
    bot: Beatforge,
    fake: FakeDiscord,
    data: bytes,
    *,
    filename: str = "clips.zip",
    permissions: int = MANAGE_SERVER,
    **options: Any,
) -> RecordedRequest:
    """Run ``/admin train`` and return the interaction's first answer."""
    since = len(fake.requests)
    attachment = fake.add_attachment(filename, data)
    options = {"name": "house", "data": attachment, "steps": 5, "base": "debug", **options}
    payload = slash_command_payload("admin", options, bot=bot, subcommand="train", permissions=permissions)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK, timeout=3, since=since)
    await settle(bot)
    return reply


async def test_a_plain_member_is_refused_before_anything_is_downloaded(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    reply = await train(bot, fake, clips_zip(), permissions=DEFAULT_MEMBER_PERMISSIONS)
    assert "Only members with Manage Server" in private_text(reply)
    assert not fake.find("GET", r"^/cdn/") and await job_count(sessions) == 0


@pytest.mark.parametrize(
    ("filename", "options", "phrase"),
    [
        ("clips.rar", {}, "clips.rar is not a .zip"),
        ("clips.zip", {"name": "Bad Name"}, "Can't do that"),
        ("clips.zip", {"name": "taken"}, "A model named `taken` exists already"),
        ("clips.zip", {"base": "nope"}, "There is no model `nope` to start from"),
        ("clips.zip", {"base": "acestep"}, "`acestep` can't be trained here"),
        ("clips.zip", {"base": "taken", "name": "other"}, "`taken` can't be trained here"),
    ],
)
async def test_what_is_wrong_before_downloading_is_refused_privately(
    discord_bot: tuple[Beatforge, FakeDiscord],
    sessions: async_sessionmaker[AsyncSession],
    filename: str,
    options: dict[str, Any],
    phrase: str,
) -> None:
    bot, fake = discord_bot
    reply = await train(bot, fake, clips_zip(), filename=filename, **options)
    assert phrase in private_text(reply)
    assert not fake.find("GET", r"^/cdn/") and await job_count(sessions) == 0


async def test_an_oversize_zip_is_refused_by_its_declared_size(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    since = len(fake.requests)
    attachment = {**fake.add_attachment("big.zip", b"PK\x03\x04"), "size": 500 * 2**20}
    payload = slash_command_payload(
        "admin",
        {"name": "house", "data": attachment, "base": "debug"},
        bot=bot,
        subcommand="train",
        permissions=MANAGE_SERVER,
    )
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK, timeout=3, since=since)
    await settle(bot)
    assert "big.zip is 500.0 MiB; the limit is 100 MiB" in private_text(reply)
    assert not fake.find("GET", r"^/cdn/") and await job_count(sessions) == 0


async def test_a_bad_zip_is_refused_with_every_problem_listed(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    members = {"a.wav": wav_bytes(800, rate=8000), "b.wav": b"not audio at all", "b.txt": b"x", "../up.txt": b"x"}
    await train(bot, fake, clips_zip(members))
    edit = await wait_for_edit(fake, lambda c: "can't be used for training" in c, timeout=3)
    text = edit.json["content"]
    assert "clips.zip can't be used for training (3 problems)" in text
    assert "a.wav: no caption (a.txt beside it)" in text
    assert "b.wav: named WAV, but its content is not audio" in text
    assert "../up.txt: a path outside the zip's folder is not allowed" in text
    assert fake.find("GET", r"^/cdn/")  # downloaded, then refused by its content
    assert await job_count(sessions) == 0 and await arq_redis.zcard(bot.settings.train_queue_name) == 0
    assert not list(ArtifactStore(bot.settings.artifact_dir).resolve("uploads").glob("*.zip"))


async def test_a_good_zip_is_queued_on_the_training_queue_once_per_server(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    data = clips_zip()
    reply = await train(bot, fake, data)
    assert not reply.json.get("data", {}).get("flags", 0) & EPHEMERAL  # deferred: the status line is public
    await wait_for_edit(fake, lambda c: "Training #1 of `house` queued" in c, timeout=3)
    async with sessions() as session:
        job = await jobs.get_job(session, 1)
    params = job.params
    assert job.kind is JobKind.TRAIN and job.status is JobStatus.QUEUED and isinstance(params, TrainParams)
    assert (params.name, params.base, params.steps) == ("house", "debug", 5)
    assert ArtifactStore(bot.settings.artifact_dir).resolve(params.upload).read_bytes() == data
    (queued,) = await arq_redis.queued_jobs(queue_name=bot.settings.train_queue_name)
    assert queued.function == "train_model" and queued.args[0]["params"]["upload"] == params.upload
    assert await arq_redis.zcard(bot.settings.queue_name) == 0  # never on the generation queue

    second = await train(bot, fake, data, name="other")
    assert "Training #1 of `house` is still queued: one training run per server at a time" in private_text(second)
    assert "`/admin cancel 1`" in private_text(second)
    assert await job_count(sessions) == 1


async def test_two_runs_asked_for_at_once_queue_one(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    since = len(fake.requests)
    for name in ("house", "other"):  # both dispatched before either is checked: the second must not slip through
        options = {"name": name, "data": fake.add_attachment("clips.zip", clips_zip()), "steps": 5, "base": "debug"}
        payload = slash_command_payload("admin", options, bot=bot, subcommand="train", permissions=MANAGE_SERVER)
        dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    await wait_for_edit(fake, lambda c: "queued" in c, timeout=5)
    await settle(bot)
    answers = [r for r in fake.requests[since:] if re.search(CALLBACK, r.path)]
    refusals = [a for a in answers if a.json["type"] == 4]  # the other was deferred: its status line follows
    assert len(answers) == 2 and len(refusals) == 1
    assert "one training run per server at a time" in private_text(refusals[0])
    assert await job_count(sessions) == 1


async def test_the_status_line_shows_step_loss_and_time_left(sessions: async_sessionmaker[AsyncSession]) -> None:
    params = TrainParams(prompt="model house", name="house", base="debug", steps=200, upload="uploads/ab-c.zip")
    async with sessions() as session:
        job = await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=5, channel_id=None)
    running = JobProgress(stage="training", done=40, total=200, eta_s=130.0, loss=3.2071)
    assert progress_text(job, running) == "🧠 Training #1 of `house` — step 40/200 · loss 3.21 · ~2 min left"
    early = JobProgress(stage="training", done=1, total=200)
    assert progress_text(job, early) == "🧠 Training #1 of `house` — step 1/200"
    done = JobProgress(stage="training", done=200, total=200, eta_s=0.0, loss=2.5)
    assert progress_text(job, done) == "🧠 Training #1 of `house` — step 200/200 · loss 2.50"
    assert "`/admin model use house`" in result_text(job)


async def test_a_model_trained_for_another_server_is_neither_listed_nor_picked_here(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    async with sessions() as session:
        for name, guild_id in (("theirs", DEFAULT_GUILD_ID + 1), ("ours", DEFAULT_GUILD_ID)):
            await add_model(session, name=name, source="/m", kind="lora", base="debug", added_by=1, guild_id=guild_id)
    infos = [
        ModelInfo("debug", "base", "none", "tiny"),
        *(ModelInfo(n, "lora", "", "", base="debug") for n in ("theirs", "ours")),
    ]
    await publish_models(arq_redis, infos, default="debug")

    async def admin(subcommand: str, **options: Any) -> str:
        since = len(fake.requests)
        payload = slash_command_payload("admin", options, bot=bot, subcommand=subcommand, permissions=MANAGE_SERVER)
        dispatch_gateway(bot, "INTERACTION_CREATE", payload)
        reply = await fake.wait_for("POST", CALLBACK, timeout=3, since=since)
        await settle(bot)
        return private_text(reply)

    listed = await admin("model list")
    assert "`ours`" in listed and "`theirs`" not in listed
    assert "There is no model `theirs`" in await admin("model use", name="theirs")
    assert "New beats on this server use `ours`" in await admin("model use", name="ours")
    # and the name stays taken for everyone: names are one namespace
    assert "A model named `theirs` exists already" in private_text(await train(bot, fake, clips_zip(), name="theirs"))
