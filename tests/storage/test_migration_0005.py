"""Revision 0005 on a database revision 0004 made, with the rows the bot and worker of that time wrote."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import MetaData, create_engine, inspect, select

from beatforge.contract import (
    BeatParams,
    CoverParams,
    JobKind,
    JobStatus,
    LoopJobParams,
    LoopParams,
    MidiParams,
    Relation,
    SamplingParams,
)
from migrations.runner import alembic_config, upgrade
from storage import jobs
from storage.db import make_engine, make_sessionmaker

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SAMPLING = {"top_k": 250, "top_p": 0.0, "temperature": 1.0, "guidance_scale": 3.0}
#: A beat as revision 0004's bot stored it: every field, the follow-up ones as placeholders.
BEAT: dict[str, Any] = {
    "prompt": "dark trap, 808s", "duration_s": 12.0, "seed": 7, "model": None, "style": "dark-trap", "mood": "tense",
    "title": "Night Drive", "bpm": 140, "loop": None, "midi": None, "takes": 2, "sampling": SAMPLING,
    "continue_from": None, "melody": None, "take": 1,
}  # fmt: skip
#: The follow-ups copied the beat and changed a few fields, as the Generate cog did.
COVER = {**BEAT, "seed": 99}
LOOP_CUT = {"bars": 4, "min_duration_s": None, "max_duration_s": None, "target_bpm": 140.0, "stretch": False,
            "format": "flac"}  # fmt: skip
LOOP = {**BEAT, "loop": LOOP_CUT, "take": 2}
MIDI = {**BEAT, "midi": {"stems": True, "upload": None}}
UPLOAD = {
    **BEAT, "prompt": "my track.wav", "duration_s": 120.0, "seed": 0, "style": None, "mood": None, "title": None,
    "takes": 1, "bpm": None, "midi": {"stems": False, "upload": "uploads/ab-my-track.wav"},
}  # fmt: skip
REROLL = {**BEAT, "seed": 8, "model": "facebook/musicgen-small"}

#: (id, kind, parent, relation, params, resolved_model)
ROWS: list[tuple[int, str, int | None, str | None, dict[str, Any], str | None]] = [
    (1, "beat", None, None, BEAT, None),  # finished by a worker that wrote the model on its takes only
    (2, "cover", 1, "cover", COVER, "procedural"),
    (3, "loop", 1, "loop", LOOP, "facebook/musicgen-small"),
    (4, "midi", 1, "midi", MIDI, "basic-pitch"),
    (5, "midi", None, None, UPLOAD, "basic-pitch"),
    (6, "beat", 1, "reroll", REROLL, None),  # still queued
]


def _make_0004_database(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url, "0004")
    engine = create_engine(f"sqlite:///{path}")
    tables = MetaData()
    tables.reflect(bind=engine)
    users, generations, artifacts = (tables.tables[name] for name in ("users", "generations", "artifacts"))
    with engine.begin() as conn:
        conn.execute(users.insert().values(id=42, name="ana", created_at=NOW))
        for job_id, kind, parent, relation, params, resolved in ROWS:
            conn.execute(
                generations.insert().values(
                    id=job_id, kind=kind, parent_id=parent, relation=relation, user_id=42, guild_id=1, channel_id=2,
                    queue_job_id=f"{job_id}-abcd", prompt=params["prompt"], params=params, model=params["model"],
                    resolved_model=resolved, seed=params["seed"], duration_s=params["duration_s"],
                    status="queued" if job_id == 6 else "done", queued_at=NOW, kept=job_id == 3,
                )
            )  # fmt: skip
        for take, seed in ((1, 7), (2, 1234)):
            meta = {"model": "facebook/musicgen-small", "licence": "CC-BY-NC 4.0", "take": take, "seed": seed}
            conn.execute(
                artifacts.insert().values(
                    generation_id=1, kind="audio", path=f"1/take{take}.wav", bytes=100, sha256="0" * 64, meta=meta,
                    created_at=NOW,
                )
            )  # fmt: skip
        conn.execute(
            artifacts.insert().values(
                generation_id=3, kind="loop", path="3/loop.flac", bytes=50, sha256="1" * 64,
                meta={"bars": 4, "bpm": 140.0, "seam_score": 1.1, "key": {"label": "A minor"}, "model": "m"},
                created_at=NOW,
            )
        )  # fmt: skip
    engine.dispose()
    return url


def _columns(path: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        return {column["name"] for column in inspect(engine).get_columns("generations")}
    finally:
        engine.dispose()


async def _views(url: str) -> list[jobs.JobView]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            return [await jobs.get_job(session, job_id) for job_id, *_ in ROWS]
    finally:
        await engine.dispose()


BEAT_PARAMS = BeatParams(
    prompt="dark trap, 808s", duration_s=12, seed=7, style="dark-trap", mood="tense", title="Night Drive", bpm=140,
    takes=2, sampling=SamplingParams(),
)  # fmt: skip
DESCRIBED: dict[str, Any] = {"prompt": "dark trap, 808s", "style": "dark-trap", "mood": "tense", "title": "Night Drive"}


async def test_0005_turns_every_row_into_its_kinds_parameters_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    url = await asyncio.to_thread(_make_0004_database, path)
    await asyncio.to_thread(upgrade, url)
    assert not {"prompt", "model", "seed", "duration_s"} & _columns(path)

    beat, cover, loop, midi, upload, reroll = await _views(url)
    assert beat.params == BEAT_PARAMS and beat.kind is JobKind.BEAT and beat.status is JobStatus.DONE
    assert cover.params == CoverParams(**DESCRIBED, seed=99)
    assert loop.params == LoopJobParams(**DESCRIBED, seed=7, take=2, loop=LoopParams.model_validate(LOOP_CUT))
    assert midi.params == MidiParams(**DESCRIBED, seed=7, take=1, stems=True)
    assert upload.params == MidiParams(prompt="my track.wav", upload="uploads/ab-my-track.wav")
    assert reroll.params == BEAT_PARAMS.model_copy(update={"seed": 8, "model": "facebook/musicgen-small"})
    assert [(j.kind, j.parent_id, j.relation) for j in (cover, loop, midi, upload, reroll)] == [
        (JobKind.COVER, 1, Relation.COVER),
        (JobKind.LOOP, 1, Relation.LOOP),
        (JobKind.MIDI, 1, Relation.MIDI),
        (JobKind.MIDI, None, None),
        (JobKind.BEAT, 1, Relation.REROLL),
    ]
    assert loop.kept and not beat.kept and reroll.status is JobStatus.QUEUED and reroll.queue_job_id == "6-abcd"

    # The takes' model is kept once, on the job; the takes keep everything else.
    assert beat.resolved_model == beat.model_name == "facebook/musicgen-small"
    assert [a.meta for a in beat.artifacts] == [
        {"licence": "CC-BY-NC 4.0", "take": 1, "seed": 7},
        {"licence": "CC-BY-NC 4.0", "take": 2, "seed": 1234},
    ]
    assert reroll.resolved_model is None and reroll.model_name == "facebook/musicgen-small"  # asked for, not run
    assert loop.artifacts[0].meta is not None and loop.artifacts[0].meta["model"] == "m"  # the sidecar's, untouched
    assert (cover.model_name, midi.model_name) == ("procedural", "basic-pitch")


async def test_0005_downgrades_to_what_0004_stored_and_upgrades_again(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    url = await asyncio.to_thread(_make_0004_database, path)
    await asyncio.to_thread(upgrade, url)
    upgraded = await _views(url)
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0004")

    engine = create_engine(f"sqlite:///{path}")
    tables = MetaData()
    tables.reflect(bind=engine)
    generations = tables.tables["generations"]
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(generations))}
    engine.dispose()
    for job_id, *_, params, _resolved in ROWS:
        row = rows[job_id]
        assert (row.prompt, row.model, row.seed, row.duration_s) == (
            params["prompt"], params["model"], params["seed"], params["duration_s"],
        )  # fmt: skip
    assert rows[1].params == {key: value for key, value in BEAT.items() if key not in ("midi", "take")}
    assert rows[3].params["loop"] == LOOP_CUT and rows[3].params["take"] == 2
    assert rows[4].params["midi"] == {"stems": True, "upload": None} and rows[4].params["loop"] is None
    assert rows[5].params["midi"] == UPLOAD["midi"] and rows[5].params["duration_s"] == 120.0

    await asyncio.to_thread(upgrade, url)
    assert await _views(url) == upgraded
