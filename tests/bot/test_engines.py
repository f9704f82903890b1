"""Two music engines from the bot's side: /beat's key and metre, each engine's refusals before queueing, /remix
and its 🎛 button, and what each model's licence allows, through the real discord.py paths (Discord harness)
with real redis and SQLite."""

from __future__ import annotations

import re
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, Relation
from beatforge.fleet import ModelInfo, publish_models
from bot.app import Beatforge
from bot.buttons import result_view
from bot.cogs.history import lineage_text, styles_text
from bot.jobs import model_refusal
from bot.messages import provenance_text
from bot.params import edit, extend, remix
from storage import guilds
from storage.artifacts import ArtifactStore
from tests.support.bot import (
    CALLBACK,
    EPHEMERAL,
    MANAGE_SERVER,
    ORIGINAL,
    custom_ids,
    finish_job,
    get_job,
    job_count,
    new_job,
    press,
    private_text,
    wav_bytes,
)
from tests.support.discord_harness import (
    DEFAULT_GUILD_ID,
    DEFAULT_USER_ID,
    FakeDiscord,
    RecordedRequest,
    dispatch_gateway,
    modal_submit_payload,
    settle,
    slash_command_payload,
)

MUSICGEN = ModelInfo("small", "built-in", "CC-BY-NC 4.0", "MusicGen small")
ACESTEP = ModelInfo("acestep", "built-in", "MIT", "ACE-Step 1.5", engine="acestep")
MELODY = ModelInfo("melody", "built-in", "CC-BY-NC 4.0", "follows a melody", melody=True)

REMIX_REFUSAL = "`small` (MusicGen) cannot remix audio; a server admin can switch to a model that can (ACE-Step 1.5)."


async def workers_run(redis: ArqRedis, default: ModelInfo) -> None:
    """What workers publish at start-up: their models, ``default`` the one a beat naming none runs on."""
    await publish_models(redis, [MUSICGEN, ACESTEP, MELODY], default=default.name)


async def command(bot: Beatforge, fake: FakeDiscord, name: str, **options: Any) -> str:
    """Run a slash command; what Discord shows the user: a private refusal, or the deferred status line."""
    since = len(fake.requests)
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload(name, options, bot=bot))

    def answered(r: RecordedRequest) -> bool:
        if r.index < since:
            return False
        if r.method == "POST" and re.search(CALLBACK, r.path):
            return bool(r.json["type"] == 4)
        return r.method == "PATCH" and re.search(ORIGINAL, r.path) is not None

    request = await fake.wait_for(answered, timeout=5)
    await settle(bot)
    if request.method == "POST":
        assert request.json["data"]["flags"] & EPHEMERAL  # a refusal is private
        return str(request.json["data"]["content"])
    return str(request.json["content"])


async def finished_beat(settings: Settings, sessions: async_sessionmaker[AsyncSession], **params: Any) -> int:
    """A finished two-take beat of the test user's, made by MusicGen (which cannot remix it itself)."""
    beat = BeatParams.model_validate(
        {"prompt": "night drive synthwave", "duration_s": 20, "seed": 9, "bpm": 90, "takes": 2, **params}
    )
    job_id = await new_job(sessions, beat, user_id=DEFAULT_USER_ID)
    audio = [
        (f"take{n}.wav", "audio", wav_bytes(3_200), {"seed": 9 + n, "take": n, "licence": "CC-BY-NC 4.0"})
        for n in (1, 2)
    ]
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, audio, model="small", delivered=True)
    return job_id


async def latest_params(sessions: async_sessionmaker[AsyncSession]) -> BeatParams:
    job = await get_job(sessions, await job_count(sessions))
    assert isinstance(job.params, BeatParams)
    return job.params


# -- /beat: key and time signature ----------------------------------------------------------------------------


async def test_key_and_time_signature_reach_the_jobs_params(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    assert "queued" in await command(bot, fake, "beat", prompt="waltz", duration=5, key="F#m", time_signature=6)
    p = await latest_params(sessions)
    assert (p.key, p.time_signature) == ("F# minor", 6)  # spelled one way by the contract

    refusal = await command(bot, fake, "beat", prompt="waltz", duration=5, key="H sharp")
    assert refusal.startswith("⚠️ Can't do that: key") and "write e.g. 'A minor'" in refusal
    assert await job_count(sessions) == 1


async def test_the_options_tell_what_each_engine_does_with_them(discord_bot: tuple[Beatforge, FakeDiscord]) -> None:
    _, fake = discord_bot
    (sync,) = fake.find("PUT", r"^/applications/\d+/commands$")
    beat = next(c for c in sync.json if c["name"] == "beat")
    options = {o["name"]: o for o in beat["options"]}
    assert "MusicGen 120 s, ACE-Step 1.5 240 s" in options["duration"]["description"]
    assert options["duration"]["max_value"] == 240
    assert "ACE-Step" in options["key"]["description"] and "MusicGen" in options["key"]["description"]
    assert [(c["name"], c["value"]) for c in options["time_signature"]["choices"]] == [
        ("2/4", 2),
        ("3/4", 3),
        ("4/4", 4),
        ("6/8", 6),
    ]
    assert "MusicGen up to 120 s, ACE-Step 1.5 up to 240 s" in styles_text()  # /styles
    remix_options = {o["name"] for o in next(c for c in sync.json if c["name"] == "remix")["options"]}
    assert remix_options == {"beat", "prompt", "strength", "take"}


# -- each engine's limits, before queueing ---------------------------------------------------------------------


async def test_a_beat_longer_than_musicgen_makes_is_refused_there_and_made_on_ace_step(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    await workers_run(arq_redis, default=MUSICGEN)
    refusal = await command(bot, fake, "beat", prompt="long drive", duration=150)
    assert refusal == (
        "⚠️ `small` (MusicGen) makes beats of up to 120 s; 150 s is too long for it. Ask for 120 s or less, or an "
        "admin can switch to a model that makes longer beats (`/admin model list`, `/admin model use`)."
    )
    assert await job_count(sessions) == 0 and await arq_redis.zcard(bot.settings.queue_name) == 0

    # The server's model decides, as it decides which model runs the beat.
    async with sessions() as session:
        await guilds.update_guild(session, DEFAULT_GUILD_ID, by=1, action="model.use", model="acestep")
    assert "queued" in await command(bot, fake, "beat", prompt="long drive", duration=150)
    p = await latest_params(sessions)
    assert (p.model, p.duration_s) == ("acestep", 150)


async def test_nothing_is_refused_before_workers_report_or_for_a_model_they_did_not_list(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    bot, fake = discord_bot
    assert "queued" in await command(bot, fake, "beat", prompt="long drive", duration=200)  # the worker checks
    await workers_run(arq_redis, default=MUSICGEN)
    async with sessions() as session:
        await guilds.update_guild(session, DEFAULT_GUILD_ID, by=1, action="model.use", model="my-finetune")
    assert "queued" in await command(bot, fake, "beat", prompt="long drive", duration=200)
    assert await job_count(sessions) == 2


def test_a_model_is_refused_what_its_engine_or_the_model_cannot_do() -> None:
    models = [MUSICGEN, ACESTEP, MELODY]
    long_beat = BeatParams(prompt="x", duration_s=200, seed=1)
    assert model_refusal(long_beat, ACESTEP, models) is None
    assert "up to 120 s; 200 s is too long" in (model_refusal(long_beat, MUSICGEN, models) or "")
    remixing = BeatParams(prompt="x", duration_s=20, seed=1, remix_from="1/take1.wav", remix_strength=0.5)
    assert model_refusal(remixing, MUSICGEN, models) == REMIX_REFUSAL
    assert model_refusal(remixing, ACESTEP, models) is None
    following = BeatParams(prompt="x", duration_s=20, seed=1, melody="uploads/tune.wav")
    assert "can't follow a melody. Melody models: melody" in (model_refusal(following, ACESTEP, models) or "")
    assert model_refusal(following, MELODY, models) is None


# -- /remix and 🎛 ---------------------------------------------------------------------------------------------


async def test_remix_on_a_musicgen_model_is_refused_with_the_engines_that_can(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions)
    await workers_run(arq_redis, default=MUSICGEN)
    assert await command(bot, fake, "remix", beat=beat_id, prompt="string quartet") == f"⚠️ {REMIX_REFUSAL}"
    assert await job_count(sessions) == 1


async def test_remix_on_ace_step_queues_the_take_in_new_words_as_a_remix(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions, key="A minor", time_signature=3, style="lofi")
    await workers_run(arq_redis, default=ACESTEP)
    text = await command(bot, fake, "remix", beat=beat_id, prompt="string quartet", strength=0.7, take=2)
    assert "queued" in text
    job = await get_job(sessions, beat_id + 1)
    assert (job.parent_id, job.relation) == (beat_id, Relation.REMIX)
    p = job.params
    assert isinstance(p, BeatParams)
    assert (p.prompt, p.style, p.remix_from, p.remix_strength) == ("string quartet", None, f"{beat_id}/take2.wav", 0.7)
    assert (p.duration_s, p.bpm, p.key, p.time_signature, p.takes, p.model) == (20, 90, "A minor", 3, 1, None)
    assert p.seed != 9
    assert lineage_text(job, []) == f"remix of #{beat_id}"

    # Its result says what ACE-Step's licence allows, and that the remixed beat's licence applies too.
    meta = {"take": 1, "seed": p.seed, "licence": "MIT"}
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job.id, [("take1.wav", "audio", b"x", meta)])
    provenance = provenance_text(await get_job(sessions, job.id))
    assert "(MIT: you may use this commercially)" in provenance
    assert f"remixed from beat #{beat_id}: that beat's licence applies too" in provenance


async def test_the_remix_button_opens_a_form_whose_strength_defaults_to_a_half(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions)
    await workers_run(arq_redis, default=ACESTEP)
    opened = await press(bot, fake, f"bf:remix:{beat_id}:1")
    assert opened.json["type"] == 9, opened.json  # a modal
    await settle(bot)  # discord.py registers the modal after the callback returns
    modal = opened.json["data"]
    inputs = {row["label"]: row["component"] for row in modal["components"]}
    assert set(inputs) == {"New style", "Strength (0-1)"} and inputs["Strength (0-1)"]["value"] == "0.5"

    since = len(fake.requests)
    values = {inputs["New style"]["custom_id"]: "brass band", inputs["Strength (0-1)"]["custom_id"]: "0.5"}
    dispatch_gateway(bot, "INTERACTION_CREATE", modal_submit_payload(modal["custom_id"], values))
    await fake.wait_for("PATCH", ORIGINAL, since=since, timeout=5)
    await settle(bot)
    p = await latest_params(sessions)
    assert (p.prompt, p.remix_from, p.remix_strength) == ("brass band", f"{beat_id}/take1.wav", 0.5)


async def test_every_take_of_a_result_has_a_remix_button(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    beat_id = await finished_beat(settings, sessions)
    view = result_view(await get_job(sessions, beat_id))
    assert view is not None
    ids = custom_ids({"components": view.to_components()})
    assert [i for i in ids if ":remix:" in i] == [f"bf:remix:{beat_id}:1", f"bf:remix:{beat_id}:2"]


async def test_a_strength_out_of_range_is_refused(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions)
    text = await command(bot, fake, "remix", beat=beat_id, prompt="brass", strength=1.5)
    assert text == "⚠️ strength must be between 0 and 1, not 1.5."


async def test_a_remix_is_as_long_as_the_take_and_an_edit_keeps_key_and_metre(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    beat = BeatParams(
        prompt="more", duration_s=10, seed=3, key="D major", time_signature=6, continue_from="1/take1.wav"
    )
    job_id = await new_job(sessions, beat)
    meta = {"take": 1, "seed": 3, "continued_s": 20.0}
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, [("take1.wav", "audio", b"x", meta)])
    job = await get_job(sessions, job_id)
    made = remix(job, 1, prompt="jazz", strength=0.2)
    assert (made.duration_s, made.continue_from, made.remix_from) == (30, None, f"{job_id}/take1.wav")
    edited = edit(job, prompt="less", presets="", duration_s=5, bpm=None, seed=None)
    assert (edited.key, edited.time_signature) == ("D major", 6)


async def test_an_extend_of_a_remix_continues_the_remix_and_keeps_key_and_metre(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    made = BeatParams(
        prompt="jazz", duration_s=20, seed=3, key="E minor", time_signature=3, remix_from="1/a.wav", remix_strength=0.4
    )
    job_id = await new_job(sessions, made, relation=Relation.REMIX)
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, [("take1.wav", "audio", b"x", None)])
    longer = extend(await get_job(sessions, job_id), 1, 10)
    assert (longer.continue_from, longer.remix_from, longer.remix_strength) == (f"{job_id}/take1.wav", None, None)
    assert (longer.duration_s, longer.key, longer.time_signature, longer.model) == (10, "E minor", 3, "tiny")


# -- what a licence allows ---------------------------------------------------------------------------------------


async def test_results_and_the_model_list_say_what_each_licence_allows(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = discord_bot
    beat_id = await finished_beat(settings, sessions)
    assert "(CC-BY-NC 4.0: non-commercial use only)" in provenance_text(await get_job(sessions, beat_id))

    await workers_run(arq_redis, default=MUSICGEN)
    since = len(fake.requests)
    payload = slash_command_payload("admin", {}, bot=bot, subcommand="model list", permissions=MANAGE_SERVER)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    listing = private_text(await fake.wait_for("POST", CALLBACK, timeout=3, since=since))
    assert "`acestep`\n  ACE-Step 1.5 · MIT: you may use this commercially · built-in" in listing
    assert "`small` — **default**\n  MusicGen · CC-BY-NC 4.0: non-commercial use only · built-in" in listing

    since = len(fake.requests)
    payload = slash_command_payload(
        "admin", {"name": "acestep"}, bot=bot, subcommand="model use", permissions=MANAGE_SERVER
    )
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    chosen = private_text(await fake.wait_for("POST", CALLBACK, timeout=3, since=since))
    assert chosen == "✅ New beats on this server use `acestep` (ACE-Step 1.5 · MIT: you may use this commercially)."
    await settle(bot)
