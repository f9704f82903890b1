"""Buttons, forms and reactions on results and status messages, through the bot's real discord.py code paths.

🔁 re-roll (button and reaction), ⭐ keep, ⏩ extend and 📝 edit (modals), ❌ cancel (queued and running),
per-take buttons, and the /beat options that go with them (style without prompt, server model, melody).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import numpy as np
import pytest
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import PROGRESS_KEY, BeatParams, ErrorCode, JobProgress, JobStatus
from beatforge.fleet import ModelInfo, publish_models
from beatforge.presets import STYLES
from beatforge.queue import enqueue_job
from bot.app import Beatforge
from generation.audio.io import write_wav
from generation.worker.settings import create_worker
from storage import guilds, jobs
from storage.artifacts import ArtifactStore
from tests.support import bot as bot_support
from tests.support.arq_job import stop_worker
from tests.support.bot import (
    CALLBACK,
    CHANNEL_MESSAGES,
    custom_ids,
    finish_job,
    get_job,
    job_count,
    new_job,
    press,
    private_text,
    queued_edit,
    text_inputs,
    wav_bytes,
)
from tests.support.discord_harness import (
    DEFAULT_GUILD_ID,
    DEFAULT_USER_ID,
    FakeDiscord,
    dispatch_gateway,
    reaction_add_payload,
    settle,
    slash_command_payload,
)

OWNER = 42
STRANGER = 7


async def finished_beat(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    takes: int = 1,
    user_id: int = OWNER,
    delivered: bool = True,
    **params: Any,
) -> int:
    """A beat the worker has finished, made directly; ``delivered=False`` lets the bot post it."""
    beat = BeatParams.model_validate(
        {
            "prompt": "night drive synthwave",
            "duration_s": 1,
            "seed": 9,
            "style": "lofi",
            "bpm": 90,
            "takes": takes,
            **params,
        }
    )
    job_id = await new_job(sessions, beat, user_id=user_id)
    audio = [(f"take{n}.wav", "audio", wav_bytes(32_000), {"seed": 9 + n, "take": n}) for n in range(1, takes + 1)]
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, audio, delivered=delivered)
    return job_id


# -- 🔁 re-roll ------------------------------------------------------------------------------------------------


async def test_reroll_button_queues_the_same_settings_with_a_new_seed(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The button sits on a message this bot process never posted (as after a restart): its custom_id is all
    it needs."""
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions, takes=2)
    since = len(fake.requests)
    defer = await press(bot, fake, f"bf:reroll:{beat_id}", user_id=OWNER)
    assert defer.json["type"] == 5
    status = await queued_edit(fake, since)
    assert "Beat #2" in status.json["content"] and custom_ids(status.json) == ["bf:cancel:2"]

    original, reroll = await get_job(sessions, beat_id), await get_job(sessions, 2)
    assert (reroll.parent_id, reroll.relation, reroll.kind) == (beat_id, "reroll", "beat")
    assert reroll.params.seed != original.params.seed
    same = original.params.model_copy(update={"seed": reroll.params.seed, "model": "tiny"})
    assert reroll.params == same  # every setting kept (prompt, style, bpm, takes), on the model it ran


async def test_only_the_requester_or_an_admin_rerolls_unless_the_server_allows_everyone(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions)
    reply = await press(bot, fake, f"bf:reroll:{beat_id}", user_id=STRANGER, permissions=0)
    assert f"<@{OWNER}>'s; only they or an admin" in private_text(reply)
    await settle(bot)
    assert await job_count(sessions) == 1

    admin = await press(bot, fake, f"bf:reroll:{beat_id}", user_id=STRANGER + 1, permissions=1 << 5)
    assert admin.json["type"] == 5  # Manage Server may

    async with sessions() as session:
        await guilds.update_guild(session, DEFAULT_GUILD_ID, by=OWNER, action="limits", everyone_can_reroll=True)
    anyone = await press(bot, fake, f"bf:reroll:{beat_id}", user_id=STRANGER, permissions=0)
    assert anyone.json["type"] == 5
    await settle(bot)
    assert await job_count(sessions) == 3


async def test_a_reroll_reaction_on_a_result_queues_a_reroll_in_the_channel(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions, delivered=False)
    posted = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    result_id = int(posted.response["id"])
    for _ in range(50):  # the watcher records the result message right after posting it
        if (await get_job(sessions, beat_id)).result_message_id == result_id:
            break
        await asyncio.sleep(0.05)

    since = len(fake.requests)
    dispatch_gateway(bot, "MESSAGE_REACTION_ADD", reaction_add_payload("🔁", message_id=result_id, user_id=OWNER))
    status = await fake.wait_for("POST", CHANNEL_MESSAGES, since=since, timeout=5)
    assert "Beat #2" in status.json["content"] and "queued" in status.json["content"]
    assert int(status.json["message_reference"]["message_id"]) == result_id
    assert custom_ids(status.json) == ["bf:cancel:2"]
    await settle(bot)
    reroll = await get_job(sessions, 2)
    assert (reroll.parent_id, reroll.relation, reroll.status_message_id) == (
        beat_id,
        "reroll",
        int(status.response["id"]),
    )

    # A stranger's 🔁 is taken back and queues nothing; other emoji and other messages are ignored.
    since = len(fake.requests)
    dispatch_gateway(bot, "MESSAGE_REACTION_ADD", reaction_add_payload("🔁", message_id=result_id, user_id=STRANGER))
    dispatch_gateway(bot, "MESSAGE_REACTION_ADD", reaction_add_payload("🔥", message_id=result_id, user_id=OWNER))
    dispatch_gateway(bot, "MESSAGE_REACTION_ADD", reaction_add_payload("🔁", message_id=12345, user_id=OWNER))
    removed = await fake.wait_for("DELETE", r"/reactions/.+/\d+$", since=since, timeout=5)
    assert removed.path.endswith(f"/{result_id}/reactions/%F0%9F%94%81/{STRANGER}") or removed.path.endswith(
        f"/{result_id}/reactions/🔁/{STRANGER}"
    )
    await settle(bot)
    assert await job_count(sessions) == 2


# -- ⭐ keep ---------------------------------------------------------------------------------------------------


async def test_keep_toggles_a_keeper_privately(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions)
    assert "one of your keepers now" in private_text(await press(bot, fake, f"bf:keep:{beat_id}", user_id=OWNER))
    assert (await get_job(sessions, beat_id)).kept
    assert "no longer one of your keepers" in private_text(await press(bot, fake, f"bf:keep:{beat_id}", user_id=OWNER))
    assert not (await get_job(sessions, beat_id)).kept
    refused = await press(bot, fake, f"bf:keep:{beat_id}", user_id=STRANGER, permissions=0)
    assert "only they or an admin" in private_text(refused)
    assert "There is no job #999" in private_text(await press(bot, fake, "bf:keep:999", user_id=OWNER))


# -- ⏩ extend and 📝 edit -------------------------------------------------------------------------------------

open_form = functools.partial(bot_support.open_form, user_id=OWNER)
submit_form = functools.partial(bot_support.submit_form, user_id=OWNER)


async def test_extend_continues_the_chosen_take_by_the_seconds_asked_for(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions, takes=2)
    modal = await open_form(bot, fake, f"bf:extend:{beat_id}:2")
    (label,) = text_inputs(modal)
    assert label == "Seconds to add (1-240)" and text_inputs(modal)[label]["value"] == "15"

    bad = await submit_form(bot, fake, modal, {label: "a lot"})
    assert "must be a number" in private_text(bad)
    modal = await open_form(bot, fake, f"bf:extend:{beat_id}:2")
    assert "between 1 and 240" in private_text(await submit_form(bot, fake, modal, {label: "500"}))
    await settle(bot)
    assert await job_count(sessions) == 1

    modal = await open_form(bot, fake, f"bf:extend:{beat_id}:2")
    since = len(fake.requests)
    assert (await submit_form(bot, fake, modal, {label: "20"})).json["type"] == 5
    await queued_edit(fake, since)
    extend = await get_job(sessions, 2)
    assert (extend.parent_id, extend.relation) == (beat_id, "extend")
    assert extend.params.continue_from == f"{beat_id}/take2.wav"
    assert (extend.params.duration_s, extend.params.takes, extend.params.model) == (20, 1, "tiny")


async def test_edit_opens_the_settings_and_queues_the_edited_beat(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions, takes=2)
    modal = await open_form(bot, fake, f"bf:edit:{beat_id}")
    inputs = text_inputs(modal)
    prefilled = {label: field.get("value") for label, field in inputs.items()}
    assert prefilled == {
        "Prompt": "night drive synthwave",
        "Duration (seconds)": "1",
        "BPM (empty: let the music decide)": "90",
        "Seed (empty: a new one)": None,
        "Style and mood (e.g. dark-trap, sad)": "lofi",
    }

    bad = await submit_form(
        bot, fake, modal, {"Prompt": "x", "Duration (seconds)": "5", "Style and mood (e.g. dark-trap, sad)": "polka"}
    )
    assert "'polka' is neither a style nor a mood" in private_text(bad)

    modal = await open_form(bot, fake, f"bf:edit:{beat_id}")
    values = {
        "Prompt": "brighter, with a sax lead",
        "Duration (seconds)": "12s",
        "BPM (empty: let the music decide)": "",
        "Seed (empty: a new one)": "77",
        "Style and mood (e.g. dark-trap, sad)": "Boom bap, happy",
    }
    since = len(fake.requests)
    assert (await submit_form(bot, fake, modal, values)).json["type"] == 5
    await queued_edit(fake, since)
    edit = await get_job(sessions, 2)
    p = edit.params
    assert (edit.parent_id, edit.relation) == (beat_id, "edit")
    assert (p.prompt, p.duration_s, p.bpm, p.seed, p.style, p.mood) == (
        "brighter, with a sax lead",
        12,
        None,
        77,
        "boom-bap",
        "happy",
    )
    assert (p.takes, p.model) == (2, "tiny")


# -- per-take buttons --------------------------------------------------------------------------------------------


async def test_several_takes_get_a_row_of_buttons_each(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions, takes=3, delivered=False)
    posted = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    rows = [[c["custom_id"] for c in row["components"]] for row in posted.json["components"]]
    assert rows == [
        [f"bf:{a}:{beat_id}" for a in ("reroll", "cover", "keep", "edit")],
        *([f"bf:{a}:{beat_id}:{take}" for a in ("loop", "midi", "extend", "remix")] for take in (1, 2, 3)),
    ]
    since = len(fake.requests)
    await press(bot, fake, f"bf:loop:{beat_id}:2", user_id=OWNER)
    await queued_edit(fake, since)
    loop = await get_job(sessions, 2)
    assert (loop.kind, loop.relation, loop.params.take, loop.parent_id) == ("loop", "loop", 2, beat_id)
    missing = await press(bot, fake, f"bf:midi:{beat_id}:4", user_id=OWNER)
    assert "has 3 take(s), not a take 4" in private_text(missing)


# -- ❌ cancel ---------------------------------------------------------------------------------------------------


async def test_cancel_button_takes_a_queued_job_out_of_the_queue(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = discord_bot
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "techno"}, bot=bot))
    status = await queued_edit(fake, 0)
    assert custom_ids(status.json) == ["bf:cancel:1"]
    job = await get_job(sessions, 1)
    assert await arq_redis.zrank(settings.queue_name, job.queue_job_id) == 0

    refused = await press(bot, fake, "bf:cancel:1", user_id=STRANGER, permissions=0)
    assert "only they or an admin" in private_text(refused)
    answer = await press(bot, fake, "bf:cancel:1", user_id=DEFAULT_USER_ID)
    assert answer.json["type"] == 7  # the status message itself is updated, its button removed
    assert "cancelled by" in answer.json["data"]["content"] and answer.json["data"]["components"] == []
    job = await get_job(sessions, 1)
    assert (job.status, job.error_code) == (JobStatus.FAILED, ErrorCode.CANCELLED)
    assert await arq_redis.zrank(settings.queue_name, job.queue_job_id) is None
    assert await arq_redis.zscore(abort_jobs_ss, job.queue_job_id) is not None
    again = await press(bot, fake, "bf:cancel:1", user_id=DEFAULT_USER_ID)
    assert "already finished; there is nothing to cancel" in private_text(again)


@pytest.mark.slow
async def test_cancelling_a_running_beat_stops_generation_and_frees_the_worker(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    long = BeatParams(prompt="endless ambient drone", duration_s=120, seed=1)
    short = BeatParams(prompt="short blip", duration_s=1, seed=2)
    queued = []
    async with sessions() as session:
        for params in (long, short):
            job = await jobs.create_job(session, params=params, user_id=1, user_name="u", guild_id=1, channel_id=1)
            queued.append(job)
    worker = create_worker(settings, poll_delay=0.05, handle_signals=False, redis_pool=arq_redis, max_jobs=1)
    task = asyncio.create_task(worker.main())
    try:
        await enqueue_job(arq_redis, job_id=queued[0].id, queue_job_id=queued[0].queue_job_id, params=long)
        progress = None
        deadline = time.monotonic() + 300  # worker start-up warms librosa's numba kernels
        while time.monotonic() < deadline:
            raw = await arq_redis.get(PROGRESS_KEY.format(job_id=queued[0].id))
            progress = JobProgress.model_validate_json(raw) if raw else None
            if progress is not None and progress.stage == "generating" and progress.done > 0:
                break
            await asyncio.sleep(0.05)
        assert progress is not None and progress.stage == "generating"

        left = None
        while left is None:  # the worker announces a time left once it has timed a few decoding steps
            assert time.monotonic() < deadline, "no estimate of the time left"
            await asyncio.sleep(0.1)
            raw = await arq_redis.get(PROGRESS_KEY.format(job_id=queued[0].id))
            left = JobProgress.model_validate_json(raw).eta_s if raw else None
        bot = Beatforge(settings=settings, redis=arq_redis, sessions=sessions)
        cancelled_at = time.monotonic()
        assert await bot.jobs.cancel(await get_job(sessions, queued[0].id), by="tester")
        # The next job starts only once the worker's one slot is free, i.e. once the cancelled job's task ended.
        await enqueue_job(arq_redis, job_id=queued[1].id, queue_job_id=queued[1].queue_job_id, params=short)
        while (await get_job(sessions, queued[1].id)).status is not JobStatus.DONE:
            assert time.monotonic() - cancelled_at < 60, "the worker never got free"
            await asyncio.sleep(0.05)
        stopped_after = time.monotonic() - cancelled_at
    finally:
        await stop_worker(worker, task)

    first = await get_job(sessions, queued[0].id)
    assert (first.status, first.error_code, first.artifacts) == (JobStatus.FAILED, ErrorCode.CANCELLED, ())
    raw = await arq_redis.get(PROGRESS_KEY.format(job_id=queued[0].id))
    assert raw is None or JobProgress.model_validate_json(raw).percent < 100  # it never got to the end
    # Finishing the long beat would have taken the worker's own estimate of the time left; stopping took a fraction.
    assert left is not None and stopped_after < left / 2, (stopped_after, left)


# -- /beat options ------------------------------------------------------------------------------------------------


async def test_a_style_alone_is_enough_and_nothing_at_all_is_refused(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", {}, bot=bot))
    refused = await fake.wait_for("POST", CALLBACK, timeout=5)
    assert "Describe the beat in `prompt`, pick a `style`, or both" in private_text(refused)

    since = len(fake.requests)
    payload = slash_command_payload("beat", {"style": "dark-trap", "bpm": 140}, bot=bot)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    await queued_edit(fake, since)
    job = await get_job(sessions, 1)
    assert (job.params.prompt, job.params.style, job.params.bpm) == (STYLES["dark-trap"].label, "dark-trap", 140)


async def test_new_beats_use_the_model_the_server_chose(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    async with sessions() as session:
        await guilds.update_guild(session, DEFAULT_GUILD_ID, by=OWNER, action="model.use", model="stereo-small")
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "drill"}, bot=bot))
    await queued_edit(fake, 0)
    assert (await get_job(sessions, 1)).params.model == "stereo-small"


async def test_a_melody_for_a_model_that_cannot_follow_one_is_refused_before_downloading(
    discord_bot: tuple[Beatforge, FakeDiscord], arq_redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    models = [
        ModelInfo("small", "base", "CC-BY-NC 4.0", "300M"),
        ModelInfo("melody", "base", "CC-BY-NC 4.0", "1.5B", melody=True),
    ]
    await publish_models(arq_redis, models, default="small")
    attachment = fake.add_attachment("hum.wav", wav_bytes(16_000, rate=16_000))
    payload = slash_command_payload("beat", {"prompt": "hum", "melody": attachment}, bot=bot)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    refused = await fake.wait_for("POST", CALLBACK, timeout=5)
    assert "`small` can't follow a melody. Melody models: melody" in private_text(refused)
    await settle(bot)
    assert not fake.find("GET", r"^/cdn/") and await job_count(sessions) == 0

    async with sessions() as session:
        await guilds.update_guild(session, DEFAULT_GUILD_ID, by=OWNER, action="model.use", model="melody")
    since = len(fake.requests)
    attachment = fake.add_attachment("hum.wav", wav_bytes(16_000, rate=16_000))
    dispatch_gateway(
        bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "hum", "melody": attachment}, bot=bot)
    )
    await queued_edit(fake, since)
    job = await get_job(sessions, 1)
    assert job.params.model == "melody" and job.params.melody is not None
    assert bot.store.resolve(job.params.melody).read_bytes() == wav_bytes(16_000, rate=16_000)


async def test_a_reroll_reaction_respects_the_limits(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions)
    async with sessions() as session:
        await jobs.set_result_message(session, beat_id, 4242)
        await guilds.update_guild(session, DEFAULT_GUILD_ID, by=OWNER, action="limits", jobs_per_hour=1)
    since = len(fake.requests)
    dispatch_gateway(bot, "MESSAGE_REACTION_ADD", reaction_add_payload("🔁", message_id=4242, user_id=OWNER))
    refusal = await fake.wait_for("POST", CHANNEL_MESSAGES, since=since, timeout=5)
    assert refusal.json["content"].startswith(f"⚠️ <@{OWNER}>: You've queued 1 jobs in the last hour")
    await settle(bot)
    assert await job_count(sessions) == 1


async def test_the_queue_is_fair_between_users(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    for n in range(3):
        since = len(fake.requests)
        dispatch_gateway(
            bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": f"a{n}"}, bot=bot, user_id=OWNER)
        )
        await queued_edit(fake, since)
    since = len(fake.requests)
    dispatch_gateway(
        bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "b"}, bot=bot, user_id=STRANGER)
    )
    status = await fake.wait_for(  # the watcher may be editing the first user's status lines meanwhile
        lambda r: r.method == "PATCH" and "Beat #4 queued" in ((r.json or {}).get("content") or ""),
        since=since,
        timeout=5,
    )
    assert "Beat #4 queued — #2 in line" in status.json["content"]  # ahead of the first user's 2nd and 3rd


async def test_the_cancel_button_goes_once_the_job_is_done(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "house"}, bot=bot))
    assert custom_ids((await queued_edit(fake, 0)).json) == ["bf:cancel:1"]
    store = ArtifactStore(settings.artifact_dir)
    with store.writing(1, "a.wav") as tmp:
        write_wav(tmp, np.zeros((1, 32_000), np.float32), sample_rate=32_000)
    async with sessions() as session:
        await jobs.mark_running(session, 1, resolved_model="tiny")
        await jobs.mark_done(session, 1, artifacts=[store.record(1, "a.wav", kind="audio", meta={"take": 1})])
    done = await fake.wait_for(
        lambda r: r.method == "PATCH" and "@original" in r.path and (r.json or {}).get("content", "").startswith("✅"),
        timeout=5,
    )
    assert done.json["components"] == []
    for _ in range(100):  # the watcher marks the job delivered right after this edit
        if (await get_job(sessions, 1)).delivered_at is not None:
            break
        await asyncio.sleep(0.05)
