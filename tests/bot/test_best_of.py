"""Best of N from the bot's side: /beat best_of refused without a CLAP model, queued with one, kept by 🔁 re-roll,
and every take's text-match score in the result embed, through the real discord.py paths (Discord harness) with
real redis and SQLite."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, Relation
from bot.app import Beatforge
from bot.jobs import BEST_OF_NEEDS_CLAP
from bot.params import edit, extend
from storage.artifacts import ArtifactStore
from tests.bot.test_engines import command, latest_params
from tests.support.bot import (
    CHANNEL_MESSAGES,
    EPHEMERAL,
    ORIGINAL,
    finish_job,
    get_job,
    job_count,
    new_job,
    press,
    wav_bytes,
)
from tests.support.discord_harness import DEFAULT_USER_ID, FakeDiscord, connected, settle

SCORE_FIELD = "Text match (CLAP)"


@pytest.fixture
async def clap_bot(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> AsyncIterator[tuple[Beatforge, FakeDiscord]]:
    """The real bot, with a CLAP model configured (the bot only reads the setting; the workers load the model)."""
    clap = settings.model_copy(update={"clap_model": "debug"})
    bot = Beatforge(settings=clap, redis=arq_redis, sessions=sessions)
    async with FakeDiscord() as fake, connected(bot, fake):
        yield bot, fake


async def finished_beat(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], takes: list[dict[str, Any]], **params: Any
) -> int:
    """A finished beat of the test user's whose takes carry ``takes``' metadata; the watcher delivers it."""
    beat = BeatParams.model_validate(
        {"prompt": "night drive synthwave", "duration_s": 5, "seed": 9, "takes": len(takes), **params}
    )
    job_id = await new_job(sessions, beat, user_id=DEFAULT_USER_ID, status_message_id=555)
    audio = [(f"take{n}.wav", "audio", wav_bytes(3_200), meta) for n, meta in enumerate(takes, start=1)]
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, audio, model="small")
    return job_id


def embed_fields(fake: FakeDiscord, since: int = 0) -> dict[str, str]:
    (post,) = [r for r in fake.find("POST", CHANNEL_MESSAGES) if r.index >= since and r.json.get("embeds")]
    return {f["name"]: f["value"] for f in post.json["embeds"][0]["fields"]}


async def test_best_of_is_refused_with_the_reason_without_a_clap_model(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    assert bot.settings.clap_model is None
    refusal = await command(bot, fake, "beat", prompt="dusty boom bap", duration=5, best_of=4)
    assert BEST_OF_NEEDS_CLAP in refusal and "BEATFORGE_CLAP_MODEL" in refusal
    assert await job_count(sessions) == 0  # refused before anything was recorded or queued
    assert "queued" in await command(bot, fake, "beat", prompt="dusty boom bap", duration=5, takes=2)


async def test_with_clap_best_of_is_queued_in_the_jobs_params(
    clap_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = clap_bot
    assert "queued" in await command(bot, fake, "beat", prompt="dusty boom bap", duration=5, best_of=6, takes=2)
    p = await latest_params(sessions)
    assert (p.best_of, p.takes, p.generated_takes) == (6, 2, 6)

    fewer = await command(bot, fake, "beat", prompt="dusty boom bap", duration=5, best_of=2, takes=3)
    assert "best_of (2) must be at least takes (3)" in fewer
    too_many = await command(bot, fake, "beat", prompt="dusty boom bap", duration=5, best_of=9)
    assert too_many.startswith("⚠️ Can't do that: best_of")
    assert await job_count(sessions) == 1


async def test_the_best_of_option_is_offered_with_its_range(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    _, fake = discord_bot
    (sync,) = fake.find("PUT", r"^/applications/\d+/commands$")
    beat = next(c for c in sync.json if c["name"] == "beat")
    option = next(o for o in beat["options"] if o["name"] == "best_of")
    assert (option["min_value"], option["max_value"], option.get("required", False)) == (2, 8, False)
    assert "CLAP" in option["description"]


async def test_a_re_roll_keeps_best_of(
    clap_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = clap_bot
    takes = [{"take": 1, "seed": 12, "text_match": 0.31, "best_of": 4}]
    beat_id = await finished_beat(settings, sessions, takes, best_of=4)
    await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)  # delivered
    since = len(fake.requests)
    await press(bot, fake, f"bf:reroll:{beat_id}")
    await fake.wait_for("PATCH", ORIGINAL, since=since, timeout=5)
    await settle(bot)
    reroll = await get_job(sessions, await job_count(sessions))
    assert reroll.parent_id == beat_id and reroll.relation is Relation.REROLL
    assert isinstance(reroll.params, BeatParams) and (reroll.params.best_of, reroll.params.takes) == (4, 1)
    assert reroll.params.seed != 9


async def test_a_re_roll_of_a_best_of_beat_is_refused_once_clap_is_gone(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions, [{"take": 1, "seed": 12, "text_match": 0.31}], best_of=4)
    await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    reply = await press(bot, fake, f"bf:reroll:{beat_id}")
    await settle(bot)
    answer = reply.json["data"]
    if reply.json["type"] == 5:  # deferred: the refusal is the follow-up
        answer = (await fake.wait_for("POST", r"^/webhooks/", timeout=5)).json
    assert BEST_OF_NEEDS_CLAP in answer["content"] and answer["flags"] & EPHEMERAL
    assert await job_count(sessions) == 1


async def test_the_result_embed_shows_each_takes_text_match_and_best_of(
    clap_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = clap_bot
    takes = [
        {"take": 1, "seed": 30, "text_match": 0.3125, "best_of": 6},
        {"take": 2, "seed": 31, "text_match": 0.2749, "best_of": 6},
    ]
    await finished_beat(settings, sessions, takes, best_of=6)
    await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    shown = embed_fields(fake)
    assert shown[SCORE_FIELD] == "take 1: text match 0.31\ntake 2: text match 0.27\nbest 2 of 6, best first"
    assert shown["Seeds"] == "take 1: `30`\ntake 2: `31`"


@pytest.mark.parametrize(
    ("meta", "shown"),
    [
        ({"text_match": -0.052}, "text match -0.05"),  # CLAP configured, no best_of: the score alone
        ({"text_match": 0.4, "best_of": 3}, "text match 0.40\nbest 1 of 3"),
        ({}, None),  # no CLAP, or a result from before scores: rendered as before, no field
    ],
)
async def test_a_single_takes_score(
    clap_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    meta: dict[str, Any],
    shown: str | None,
) -> None:
    _, fake = clap_bot
    await finished_beat(settings, sessions, [{"take": 1, "seed": 12, **meta}])
    await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    fields = embed_fields(fake)
    assert fields.get(SCORE_FIELD) == shown
    assert fields["Seed"] == "`12`" and re.search(r"seed 12", fields["Provenance"])


async def test_an_extend_continues_one_take_and_an_edit_keeps_best_of(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    takes = [{"take": n, "seed": 20 + n, "text_match": 0.3, "best_of": 4} for n in (1, 2)]
    original = await get_job(sessions, await finished_beat(settings, sessions, takes, best_of=4))
    longer = extend(original, 2, 10)
    assert (longer.best_of, longer.takes, longer.continue_from) == (None, 1, f"{original.id}/take2.wav")
    edited = edit(original, prompt="brighter", presets="", duration_s=5, bpm=None, seed=None)
    assert (edited.best_of, edited.takes) == (4, 2)
