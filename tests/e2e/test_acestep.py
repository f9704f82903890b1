"""A server switched to ACE-Step: every /beat, 🔁 re-roll, take, ⏩ extend, 📝 edit and /remix runs on it, from the
slash command to the posted result, through the bot's real discord.py code paths and a real worker process."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from bot.app import Beatforge
from generation.music.acestep_tiny import save_tiny_acestep
from generation.music.registry import ModelRegistry, ModelSpec
from tests.support.bot import (
    CHANNEL_MESSAGES,
    MANAGE_SERVER,
    command,
    delivered_job,
    models_published,
    open_form,
    press,
    private_text,
    submit_form,
)
from tests.support.discord_harness import (
    FakeDiscord,
    RecordedRequest,
)

WORKER_TIMEOUT_S = 300
pytestmark = pytest.mark.slow


async def _form(bot: Beatforge, fake: FakeDiscord, custom_id: str, values: dict[str, str]) -> None:
    submitted = await submit_form(bot, fake, await open_form(bot, fake, custom_id), values)
    assert submitted.json["type"] == 5  # deferred: queued


async def _result(fake: FakeDiscord, since: int) -> tuple[RecordedRequest, dict[str, str]]:
    """The next result posted in the channel, and its embed's fields."""
    posted = await fake.wait_for("POST", CHANNEL_MESSAGES, since=since, timeout=WORKER_TIMEOUT_S)
    return posted, {f["name"]: f["value"] for f in posted.json["embeds"][0]["fields"]}


def _audio(posted: RecordedRequest) -> list[tuple[int, int, float]]:
    """(sample rate, channels, seconds) of each WAV posted."""
    out = []
    for file in posted.files:
        if file.filename.endswith(".wav"):
            info = sf.info(io.BytesIO(file.data))
            out.append((info.samplerate, info.channels, info.frames / info.samplerate))
    return out


async def test_a_server_on_ace_step_makes_rerolls_extends_edits_and_remixes_beats_that_may_be_sold(
    discord_bot: tuple[Beatforge, FakeDiscord],
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
    start_worker: Callable[..., Any],
    tmp_path: Path,
) -> None:
    bot, fake = discord_bot
    # an MIT-licensed ACE-Step checkpoint in the registry: the tiny random pipeline, saved as diffusers saves one
    pipeline = save_tiny_acestep(tmp_path / "ace-step")
    settings = settings.model_copy(update={"model_registry_file": tmp_path / "models.json"})
    spec = ModelSpec(name="ace", source=str(pipeline), licence="MIT", engine="acestep", stereo=True)
    ModelRegistry(settings.model_registry_file).register(spec)
    start_worker(settings)  # its default stays the tiny MusicGen
    await models_published(arq_redis, WORKER_TIMEOUT_S)

    switched = await command(bot, fake, "admin", {"name": "ace"}, subcommand="model use", permissions=MANAGE_SERVER)
    assert "`ace`" in private_text(switched)

    since = len(fake.requests)
    options = {"prompt": "lofi house", "key": "a minor", "time_signature": 3, "bpm": 120, "takes": 2, "duration": 3}
    await command(bot, fake, "beat", options)
    posted, fields = await _result(fake, since)
    assert _audio(posted) == [(48_000, 2, 3.0), (48_000, 2, 3.0)]
    assert "MIT: you may use this commercially" in fields["Provenance"]
    beat = await delivered_job(sessions, 1)
    assert (beat.resolved_model, beat.params.key, beat.params.time_signature, beat.params.bpm) == (
        "ace",
        "A minor",
        3,
        120,
    )

    since = len(fake.requests)
    await press(bot, fake, "bf:reroll:1")
    posted, _ = await _result(fake, since)
    reroll = await delivered_job(sessions, 2)
    assert (reroll.relation, reroll.resolved_model, reroll.params.key) == ("reroll", "ace", "A minor")
    assert reroll.params.seed != beat.params.seed and len(_audio(posted)) == 2

    since = len(fake.requests)
    await _form(bot, fake, "bf:extend:1:2", {"Seconds to add (1-240)": "2"})
    posted, _ = await _result(fake, since)
    assert _audio(posted) == [(48_000, 2, 5.0)]  # take 2's 3 s, then 2 new ones
    assert (await delivered_job(sessions, 3)).relation == "extend"

    since = len(fake.requests)
    await _form(
        bot,
        fake,
        "bf:edit:1",
        {
            "Prompt": "lofi house with a flute",
            "Duration (seconds)": "2",
            "BPM (empty: let the music decide)": "100",
            "Seed (empty: a new one)": "5",
            "Style and mood (e.g. dark-trap, sad)": "",
        },
    )
    posted, _ = await _result(fake, since)
    edit = await delivered_job(sessions, 4)
    assert (edit.relation, edit.resolved_model, edit.params.bpm, edit.params.key) == ("edit", "ace", 100, "A minor")
    assert _audio(posted) == [(48_000, 2, 2.0), (48_000, 2, 2.0)]

    since = len(fake.requests)
    await command(bot, fake, "remix", {"beat": 1, "prompt": "bright disco", "strength": 0.4, "take": 2})
    posted, fields = await _result(fake, since)
    remix = await delivered_job(sessions, 5)
    assert (remix.relation, remix.resolved_model, remix.params.remix_strength) == ("remix", "ace", 0.4)
    assert remix.params.remix_from == beat.artifacts[1].path
    assert _audio(posted) == [(48_000, 2, 3.0)]
