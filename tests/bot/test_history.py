"""/history, /show and /styles through the real discord.py paths (Discord harness), real redis and SQLite."""

from __future__ import annotations

import json
from typing import Any

from beatforge.contract import BeatParams, ErrorCode
from beatforge.presets import MOODS, STYLES
from bot.app import Beatforge
from storage import jobs
from tests.support.bot import (
    CALLBACK,
    EPHEMERAL,
    MANAGE_SERVER,
    ORIGINAL,
    finish_job,
    new_job,
    private_text,
    wav_bytes,
)
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_MEMBER_PERMISSIONS,
    DEFAULT_USER_ID,
    FakeDiscord,
    RecordedRequest,
    component_payload,
    dispatch_gateway,
    settle,
    slash_command_payload,
)

ME, OTHER = DEFAULT_USER_ID, 77


async def make_job(
    bot: Beatforge,
    prompt: str,
    *,
    user_id: int = ME,
    guild_id: int = DEFAULT_GUILD_ID,
    parent_id: int | None = None,
    relation: str | None = None,
    finish: bool = True,
) -> int:
    """A job as the worker leaves it (done with an audio file, and already delivered so the watcher stays idle)."""
    params = BeatParams(prompt=prompt, duration_s=1, seed=1000 + len(prompt))
    job_id = await new_job(
        bot.sessions, params, user_id=user_id, guild_id=guild_id, parent_id=parent_id, relation=relation
    )
    if finish:
        audio = (f"beat-{job_id}.wav", "audio", wav_bytes(3200), None)
        await finish_job(bot.sessions, bot.store, job_id, [audio], delivered=True)
    return job_id


async def command(
    bot: Beatforge,
    fake: FakeDiscord,
    name: str,
    *,
    user_id: int = ME,
    permissions: int = DEFAULT_MEMBER_PERMISSIONS,
    **options: Any,
) -> tuple[RecordedRequest, dict[str, Any]]:
    """Run a slash command; its first answer, and the payload (whose token finds the message it made)."""
    since = len(fake.requests)
    payload = slash_command_payload(name, options, bot=bot, user_id=user_id, permissions=permissions)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK, timeout=3, since=since)
    await settle(bot)
    return reply, payload


async def click(
    bot: Beatforge,
    fake: FakeDiscord,
    custom_id: str,
    message: dict[str, Any] | None,
    *,
    user_id: int = ME,
    permissions: int = DEFAULT_MEMBER_PERMISSIONS,
) -> RecordedRequest:
    since = len(fake.requests)
    payload = component_payload(custom_id, message=message, user_id=user_id, permissions=permissions)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK, timeout=3, since=since)
    await settle(bot)
    return reply


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["custom_id"]: c for row in message.get("components", []) for c in row["components"]}


async def test_history_pages_with_buttons_newest_first(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    bot, fake = discord_bot
    ids = [await make_job(bot, f"beat number {n}") for n in range(1, 8)]  # 1..7
    await make_job(bot, "someone else's beat", user_id=OTHER)  # 8, not in my history
    await make_job(bot, "another server's beat", guild_id=DEFAULT_GUILD_ID + 1)  # 9, neither

    reply, payload = await command(bot, fake, "history")
    first = private_text(reply)
    assert "page 1 of 2 (7 in all)" in first
    positions = [first.index(f"**Beat #{n}**") for n in (7, 6, 5, 4, 3)]
    assert positions == sorted(positions) and "Beat #2**" not in first and "Beat #8" not in first
    assert "model `tiny`" in first and "seed `1013`" in first and "✅ done" in first and "<t:" in first
    message = fake.original_response(payload["token"])
    assert message is not None
    shown = buttons(message)
    assert shown[f"bf:hist:{ME}:{ME}:0:0"]["disabled"] is True  # ◀ on the first page
    assert not shown[f"bf:hist:{ME}:{ME}:1:0"].get("disabled")
    assert [b for b in shown if b.startswith("bf:repost:")] == [f"bf:repost:{n}" for n in (7, 6, 5, 4, 3)]

    update = await click(bot, fake, f"bf:hist:{ME}:{ME}:1:0", message)
    assert update.json["type"] == 7  # the list itself changes page
    second = update.json["data"]["content"]
    assert "page 2 of 2" in second and "**Beat #2**" in second and "**Beat #1**" in second
    assert "Beat #3**" not in second
    paged = buttons(update.json["data"])
    assert paged[f"bf:hist:{ME}:{ME}:2:0"]["disabled"] is True  # ▶ on the last page
    assert set(paged) >= {f"bf:repost:{ids[1]}", f"bf:repost:{ids[0]}"}


async def test_a_history_button_pressed_by_someone_else_is_refused(
    discord_bot: tuple[Beatforge, FakeDiscord],
) -> None:
    bot, fake = discord_bot
    for n in range(6):
        await make_job(bot, f"beat {n}")
    _, payload = await command(bot, fake, "history")
    message = fake.original_response(payload["token"])
    assert message is not None
    refusal = private_text(await click(bot, fake, f"bf:hist:{ME}:{ME}:1:0", message, user_id=OTHER))
    assert f"belongs to <@{ME}>" in refusal and "/history" in refusal

    # A forged custom_id naming yourself as viewer and someone else as target is refused too.
    forged = private_text(await click(bot, fake, f"bf:hist:{OTHER}:{ME}:1:0", None, user_id=OTHER))
    assert "Only admins" in forged


async def test_someone_elses_history_is_for_admins_only(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    bot, fake = discord_bot
    await make_job(bot, "their beat", user_id=OTHER)
    refusal, _ = await command(bot, fake, "history", user=OTHER)
    assert "Only admins (Manage Server) can look at someone else's history" in private_text(refusal)

    reply, _ = await command(bot, fake, "history", user=OTHER, permissions=MANAGE_SERVER)
    text = private_text(reply)
    assert f"<@{OTHER}>'s generations" in text and "their beat" in text

    empty, _ = await command(bot, fake, "history", user=ME, permissions=MANAGE_SERVER)
    assert "You have no generations on this server yet." in private_text(empty)


async def test_entries_show_lineage_keepers_links_and_state(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    bot, fake = discord_bot
    beat = await make_job(bot, "the original\nover two lines")
    extended = await make_job(bot, "the original, longer", parent_id=beat, relation="extend")
    reroll = await make_job(bot, "the original, longer again", parent_id=extended, relation="reroll")
    queued = await make_job(bot, "still waiting", finish=False)
    async with bot.sessions() as session:
        await jobs.set_kept(session, reroll, True)
        await jobs.set_result_message(session, reroll, 555)

    reply, _ = await command(bot, fake, "history")
    text = private_text(reply)
    assert f"**Beat #{reroll}** ⭐ — ✅ done" in text
    assert f"re-roll of #{extended} (#{extended}: extend of #{beat})" in text
    assert f"[jump to it](https://discord.com/channels/{DEFAULT_GUILD_ID}/{DEFAULT_CHANNEL_ID}/555)" in text
    assert f"**Beat #{queued}** — ⏳ queued" in text
    assert "> the original over two lines" in text  # one line per prompt

    kept, _ = await command(bot, fake, "history", kept=True)
    kept_text = private_text(kept)
    assert "kept generations" in kept_text and "page 1 of 1 (1 in all)" in kept_text
    assert f"Beat #{reroll}" in kept_text and f"Beat #{beat}**" not in kept_text


async def test_repost_posts_the_result_again_for_its_requester_only(
    discord_bot: tuple[Beatforge, FakeDiscord],
) -> None:
    bot, fake = discord_bot
    mine = await make_job(bot, "repost me")
    _, payload = await command(bot, fake, "history")
    message = fake.original_response(payload["token"])
    assert message is not None

    refusal = private_text(await click(bot, fake, f"bf:repost:{mine}", message, user_id=OTHER))
    assert "only they or an admin can re-post it" in refusal
    assert fake.find("PATCH", ORIGINAL) == []

    defer = await click(bot, fake, f"bf:repost:{mine}", message)
    assert defer.json["type"] == 5 and not (defer.json.get("data") or {}).get("flags", 0) & EPHEMERAL  # public
    (post,) = fake.find("PATCH", ORIGINAL)
    assert [f.filename for f in post.files] == [f"beat-{mine}.wav"]
    # The prompt is in the text or the details embed, wherever the result composer puts it.
    assert f"Beat #{mine}" in post.json["content"] and "repost me" in json.dumps(post.json)
    assert f"bf:loop:{mine}" in buttons(post.json)  # the result's own buttons work again

    # An admin may re-post anyone's.
    await click(bot, fake, f"bf:repost:{mine}", message, user_id=OTHER, permissions=MANAGE_SERVER)
    assert len(fake.find("PATCH", ORIGINAL)) == 2


async def test_show_brings_a_result_back_publicly(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    bot, fake = discord_bot
    job_id = await make_job(bot, "show me", user_id=OTHER)
    defer, _ = await command(bot, fake, "show", job=job_id)
    assert defer.json["type"] == 5 and not (defer.json.get("data") or {}).get("flags", 0) & EPHEMERAL
    (post,) = fake.find("PATCH", ORIGINAL)
    assert [f.filename for f in post.files] == [f"beat-{job_id}.wav"] and "show me" in json.dumps(post.json)
    assert f"bf:loop:{job_id}" in buttons(post.json)


async def test_a_refused_upload_is_explained(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    bot, fake = discord_bot
    job_id = await make_job(bot, "too big today")
    fake.fail_next("PATCH", ORIGINAL, 413, {"code": 40005, "message": "Request entity too large"})
    await command(bot, fake, "show", job=job_id)
    refused, explained = fake.find("PATCH", ORIGINAL)
    assert refused.status == 413 and refused.files
    assert f"Discord refused to post Beat #{job_id} (413)" in explained.json["content"] and not explained.files


async def test_show_explains_what_it_cannot_show(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    bot, fake = discord_bot
    elsewhere = await make_job(bot, "far away", guild_id=DEFAULT_GUILD_ID + 1)
    queued = await make_job(bot, "waiting", finish=False)
    failed = await make_job(bot, "broken", finish=False)
    cancelled = await make_job(bot, "stopped", finish=False)
    async with bot.sessions() as session:
        await jobs.mark_failed(session, failed, code=ErrorCode.GENERATION_FAILED, message="out of GPU memory")
        await jobs.cancel(session, cancelled, by="test")

    cases = {
        999: "There is no job #999.",
        elsewhere: f"Job #{elsewhere} was made on another server",
        queued: f"Beat #{queued} is still queued",
        failed: f"Beat #{failed} failed, so it has no result to show: out of GPU memory",
        cancelled: f"Beat #{cancelled} was cancelled",
    }
    for job_id, phrase in cases.items():
        reply, _ = await command(bot, fake, "show", job=job_id)
        assert phrase in private_text(reply)
    assert fake.find("PATCH", ORIGINAL) == []


async def test_styles_lists_every_preset(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    bot, fake = discord_bot
    reply, _ = await command(bot, fake, "styles")
    text = private_text(reply)
    assert len(text) <= 2000
    for style in STYLES.values():
        assert f"**{style.label}** — {style.description}" in text
    for mood in MOODS.values():
        assert f"**{mood.label}** — ~{mood.bpm} bpm, {mood.mode}, {mood.register}" in text
