"""Prompt help in Discord: ``/beat enhance:true`` (✨) and ``/pack``, through the real command tree and results.

Finished jobs are made directly, as the worker leaves them (tests/generation/test_enhance.py runs the worker).
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import AudioMeta, BeatParams, JobKind, JobProgress, PackMeta, PackParams
from bot import params as build
from bot.app import Beatforge
from bot.messages import progress_text
from storage import guilds
from storage.artifacts import ArtifactStore
from tests.support.bot import (
    CALLBACK,
    CHANNEL_MESSAGES,
    MANAGE_SERVER,
    finish_job,
    get_job,
    job_count,
    new_job,
    png_bytes,
    private_text,
    wav_bytes,
)
from tests.support.discord_harness import (
    DEFAULT_GUILD_ID,
    FakeDiscord,
    RecordedRequest,
    dispatch_gateway,
    settle,
    slash_command_payload,
)

RICH = "melancholic trap beat in C minor, soft felt piano chords, deep sliding 808 bass, 140 bpm"


async def _enhanced_beat(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], meta: AudioMeta, **params: object
) -> int:
    beat = BeatParams.model_validate(
        {"prompt": "sad piano trap", "duration_s": 1, "seed": 9, "enhance": True, **params}
    )
    job_id = await new_job(sessions, beat, status_message_id=555)
    files = [
        ("take1.wav", "audio", wav_bytes(3200), meta.model_dump(mode="json")),
        ("cover.png", "cover", png_bytes(), {"source": "procedural"}),
    ]
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, files)
    return job_id


@pytest.mark.timeout(10)
async def test_beat_enhance_asks_the_worker_for_a_written_prompt(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, _ = discord_bot
    options = {"prompt": "sad piano trap", "enhance": True}
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", options, bot=bot))
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("beat", {"prompt": "plain"}, bot=bot))
    await settle(bot)
    enhanced, plain = (await get_job(sessions, 1)).params, (await get_job(sessions, 2)).params
    assert isinstance(enhanced, BeatParams) and isinstance(plain, BeatParams)
    assert (enhanced.prompt, enhanced.enhance, plain.enhance) == ("sad piano trap", True, False)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("meta", "says"),
    [
        (AudioMeta(seed=9, prompt_used=RICH, prompt_source="llm"), f"✨ Prompt written by the LLM: “{RICH}”"),
        (
            AudioMeta(
                seed=9, prompt_used="sad piano trap, dark", prompt_source="template", prompt_note="no LLM is configured"
            ),
            "✨ Prompt written from the style and mood presets (no LLM is configured): “sad piano trap, dark”",
        ),
    ],
)
async def test_the_result_shows_the_prompt_that_was_used_and_who_wrote_it(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    meta: AudioMeta,
    says: str,
) -> None:
    _, fake = discord_bot
    await _enhanced_beat(settings, sessions, meta)
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert says in post.json["content"]


async def test_extending_an_enhanced_take_continues_from_its_prompt_and_rerolls_write_a_new_one(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    meta = AudioMeta(seed=9, prompt_used=RICH, prompt_source="llm")
    job = await get_job(sessions, await _enhanced_beat(settings, sessions, meta, style="lofi", bpm=100))
    extension = build.extend(job, 1, 10)
    assert (extension.prompt, extension.style, extension.enhance) == (RICH, None, False)
    assert extension.music_text == RICH.replace("140 bpm", "100 bpm")  # the beat's bpm still holds
    reroll = build.reroll(job)
    assert (reroll.prompt, reroll.style, reroll.enhance) == ("sad piano trap", "lofi", True)
    edited = build.edit(job, prompt="happy piano trap", presets="", duration_s=5, bpm=None, seed=None)
    assert edited.enhance


# --- /pack ---------------------------------------------------------------------------------------------------


async def _command(
    bot: Beatforge, fake: FakeDiscord, name: str, subcommand: str | None = None, **options: object
) -> RecordedRequest:
    """Run a command as a member with Manage Server; the interaction's first answer."""
    since = len(fake.requests)
    payload = slash_command_payload(name, options, bot=bot, subcommand=subcommand, permissions=MANAGE_SERVER)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK, timeout=3, since=since)
    await settle(bot)
    return reply


@pytest.mark.timeout(10)
async def test_pack_queues_loops_for_a_use_case_within_the_servers_limit(
    discord_bot: tuple[Beatforge, FakeDiscord], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bot, fake = discord_bot
    await _command(bot, fake, "pack", use_case="RPG levels", count=6, bpm=100, key="f#m")
    job = await get_job(sessions, 1)
    assert job.kind is JobKind.PACK and isinstance(job.params, PackParams)
    assert (job.params.prompt, job.params.count, job.params.bpm, job.params.key) == ("RPG levels", 6, 100, "F# minor")
    assert (job.params.loop.bars, job.params.loop.target_bpm, job.params.loop.format) == (4, 100, "wav")

    refused = private_text(await _command(bot, fake, "pack", use_case="RPG levels", count=12, bpm=100))
    assert "Packs on this server hold up to 8 loops; you asked for 12" in refused
    bad_key = private_text(await _command(bot, fake, "pack", use_case="x", count=1, bpm=100, key="H minor"))
    assert "'H minor' is not a key: write e.g. 'A minor'" in bad_key
    assert await job_count(sessions) == 1

    async with sessions() as session:  # a server's chosen model makes its packs too
        await guilds.update_guild(session, DEFAULT_GUILD_ID, by=1, action="model.use", model="house-ft")
    shown = private_text(await _command(bot, fake, "admin", "limits", pack_loops=12))
    assert "loops in one pack: **12** (this server)" in shown
    too_many = private_text(await _command(bot, fake, "admin", "limits", pack_loops=99))
    assert "pack_loops must be between 1 and 16, not 99" in too_many
    await _command(bot, fake, "pack", use_case="RPG levels", count=12, bpm=100)
    big = (await get_job(sessions, 2)).params
    assert isinstance(big, PackParams) and (big.count, big.model) == (12, "house-ft")


@pytest.mark.timeout(10)
async def test_a_finished_pack_posts_its_zip_with_what_it_holds(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    params = PackParams(prompt="RPG levels", count=3, bpm=100, key="A minor", seed=40)
    job_id = await new_job(sessions, params, status_message_id=555)
    meta = PackMeta(
        loops=2,
        asked=3,
        bpm=100,
        key="A minor",
        prompt_source="templates",
        prompt_note="no LLM is configured (BEATFORGE_LLM_BASE_URL), so built-in templates wrote the prompts",
        licence="CC-BY-NC 4.0",
        failed=["loop 2: no steady beat"],
    )
    zip_file = ("pack-1-rpg-levels-100bpm.zip", "pack", b"PK\x05\x06" + bytes(18), meta.model_dump(mode="json"))
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, [zip_file])
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert [f.filename for f in post.files] == ["pack-1-rpg-levels-100bpm.zip"]
    content = post.json["content"]
    assert content.startswith(f"📦 **Pack #{job_id}**")
    assert "📦 2 loops at 100 bpm · A minor · prompts by built-in templates (no LLM is configured" in content
    assert "⚠️ 1 of 3 left out" in content
    embed = post.json["embeds"][0]
    shown = {f["name"]: f["value"] for f in embed["fields"]}
    assert shown["Loops"] == "3 × 4 bars" and shown["Tempo"] == "100 bpm · A minor"
    assert "seeds 40-42, one per loop" in shown["Provenance"] and "non-commercial use only" in shown["Provenance"]


@pytest.mark.timeout(10)
async def test_a_pack_over_the_upload_limit_goes_out_as_its_mp3_copy(
    discord_bot: tuple[Beatforge, FakeDiscord], settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, fake = discord_bot
    job_id = await new_job(sessions, PackParams(prompt="RPG", count=16, bpm=90, seed=1), status_message_id=555)
    meta = PackMeta(loops=16, asked=16, bpm=90, prompt_source="llm").model_dump(mode="json")
    files = [("pack.zip", "pack", bytes(11 * 2**20), meta), ("pack-mp3.zip", "pack_preview", bytes(3 * 2**20), None)]
    await finish_job(sessions, ArtifactStore(settings.artifact_dir), job_id, files)
    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)
    assert [f.filename for f in post.files] == ["pack-mp3.zip"]
    content = post.json["content"]
    assert "pack.zip is 11.0 MiB, over this server's 10 MiB upload limit" in content
    assert "🗜️ Attached instead: pack-mp3.zip, the same files with smaller (MP3) audio." in content


async def test_a_packs_status_line_counts_its_loops(sessions: async_sessionmaker[AsyncSession]) -> None:
    job = await get_job(sessions, await new_job(sessions, PackParams(prompt="RPG", count=8, bpm=90, seed=1)))
    prompting = progress_text(job, JobProgress(stage="prompting", done=0, total=1))
    assert prompting == f"✨ Pack #{job.id} — writing the prompts…"
    cutting = progress_text(job, JobProgress(stage="packing", done=2, total=8, eta_s=12))
    assert cutting == f"📦 Pack #{job.id} — cutting loop 3 of 8, about 12 s left…"
