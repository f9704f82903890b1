"""What the bot's tests share: the Discord routes the fake records, reading the bot's answers, and jobs as the
worker leaves them (made directly: the worker is not what those tests are about).

One place for these, so a route or a payload shape changes once for every bot and end-to-end test.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Sequence
from typing import Any

import discord
import numpy as np
import soundfile as sf
from arq.connections import ArqRedis
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.contract import ArtifactKind, BeatParams, JobParams, Relation
from beatforge.fleet import read_models
from storage import jobs
from storage.artifacts import ArtifactStore
from storage.jobs import JobView
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_MEMBER_PERMISSIONS,
    DEFAULT_USER_ID,
    FakeDiscord,
    RecordedRequest,
    component_payload,
    dispatch_gateway,
    modal_submit_payload,
    settle,
    slash_command_payload,
)

# -- routes, as FakeDiscord records them ---------------------------------------------------------------------

#: The answer to an interaction (defer, message, modal, update).
CALLBACK = r"^/interactions/\d+/[^/]+/callback$"
#: An edit of the interaction's original response (a deferred command's status line).
ORIGINAL = r"^/webhooks/\d+/[^/]+/messages/@original$"
#: A follow-up message on an interaction token.
FOLLOWUP = r"^/webhooks/\d+/[^/]+$"
#: A message posted in the default channel, and in any other (a DM channel).
CHANNEL_MESSAGES = rf"^/channels/{DEFAULT_CHANNEL_ID}/messages$"
OTHER_CHANNEL_MESSAGES = rf"^/channels/(?!{DEFAULT_CHANNEL_ID}/)\d+/messages$"
#: The ephemeral flag of a message.
EPHEMERAL = 64
#: A member's permissions plus Manage Server: what makes a server admin.
MANAGE_SERVER = (discord.Permissions(DEFAULT_MEMBER_PERMISSIONS) | discord.Permissions(manage_guild=True)).value

# -- the bot's answers ---------------------------------------------------------------------------------------


def private_text(reply: RecordedRequest) -> str:
    """The text of an ephemeral message answer (and that it is one)."""
    assert reply.json["type"] == 4 and reply.json["data"]["flags"] & EPHEMERAL, reply.json
    return str(reply.json["data"]["content"])


def custom_ids(message: dict[str, Any]) -> list[str]:
    """A message's buttons, row by row."""
    return [c["custom_id"] for row in message.get("components", []) for c in row["components"]]


def edits(fake: FakeDiscord) -> list[str]:
    """Every text the original responses were edited to, in order."""
    return [r.json.get("content") or "" for r in fake.find("PATCH", ORIGINAL)]


async def wait_for_edit(
    fake: FakeDiscord, predicate: Callable[[str], bool], *, timeout: float = 5, since: int = 0
) -> RecordedRequest:
    """The first edit of an original response (from request ``since`` on) whose text ``predicate`` accepts."""
    return await fake.wait_for(
        lambda r: r.method == "PATCH" and "@original" in r.path and predicate((r.json or {}).get("content") or ""),
        since=since,
        timeout=timeout,
    )


async def queued_edit(fake: FakeDiscord, since: int) -> RecordedRequest:
    """The status line of a job just queued (its "queued" edit)."""
    return await wait_for_edit(fake, lambda content: "queued" in content, since=since)


async def press(bot: discord.Client, fake: FakeDiscord, custom_id: str, **kwargs: Any) -> RecordedRequest:
    """Click a button and return the bot's answer to the interaction."""
    since = len(fake.requests)
    dispatch_gateway(bot, "INTERACTION_CREATE", component_payload(custom_id, **kwargs))
    return await fake.wait_for("POST", CALLBACK, since=since, timeout=5)


# -- jobs, as the bot and the worker leave them ---------------------------------------------------------------

#: A file of a finished job: its name, artifact kind, content and what the worker recorded about it.
File = tuple[str, str, bytes, dict[str, Any] | None]


def wav_bytes(samples: int, *, rate: int = 32_000, channels: int = 1) -> bytes:
    """Silence as the worker writes takes: 16-bit PCM WAV."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((samples, channels), np.float32), rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def png_bytes(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "purple").save(buffer, format="PNG")
    return buffer.getvalue()


async def new_job(
    sessions: async_sessionmaker[AsyncSession],
    params: JobParams | None = None,
    *,
    user_id: int = 42,
    guild_id: int | None = DEFAULT_GUILD_ID,
    channel_id: int | None = DEFAULT_CHANNEL_ID,
    parent_id: int | None = None,
    relation: Relation | None = None,
    status_message_id: int | None = None,
) -> int:
    """A job row as a command leaves it (queued); a one-second beat unless ``params`` says otherwise."""
    params = params or BeatParams(prompt="ambient <@42> drift", duration_s=1, seed=9)
    async with sessions() as session:
        job = await jobs.create_job(
            session,
            params=params,
            user_id=user_id,
            user_name="u",
            guild_id=guild_id,
            channel_id=channel_id,
            parent_id=parent_id,
            relation=relation,
        )
        if status_message_id:
            await jobs.set_status_message(session, job.id, status_message_id)
    return job.id


async def finish_job(
    sessions: async_sessionmaker[AsyncSession],
    store: ArtifactStore,
    job_id: int,
    files: Sequence[File],
    *,
    model: str | None = "tiny",
    delivered: bool = False,
) -> None:
    """Store the files and mark the job done as the worker would (``model``: what it ran, None: not recorded);
    ``delivered=True`` also marks it delivered, so the bot's watcher leaves it alone."""
    records = []
    for name, kind, data, meta in files:
        with store.writing(job_id, name) as tmp:
            tmp.write_bytes(data)
        records.append(store.record(job_id, name, kind=ArtifactKind(kind), meta=meta))
    async with sessions() as session:
        if model is not None:
            await jobs.mark_running(session, job_id, resolved_model=model)
        await jobs.mark_done(session, job_id, artifacts=records)
        if delivered:
            await jobs.mark_delivered(session, job_id)


async def get_job(sessions: async_sessionmaker[AsyncSession], job_id: int) -> JobView:
    async with sessions() as session:
        return await jobs.get_job(session, job_id)


async def job_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return await jobs.count_jobs(session)


async def delivered_job(sessions: async_sessionmaker[AsyncSession], job_id: int, timeout: float = 5) -> JobView:
    """The job once the bot has marked it delivered (which it does right after its last Discord call)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await get_job(sessions, job_id)
        if job.delivered_at is not None:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job #{job_id} was never marked delivered: {job}")
        await asyncio.sleep(0.05)


# -- forms (modals) ---------------------------------------------------------------------------------------------


def text_inputs(modal: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A modal's text inputs by label, wherever discord.py nests them."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == 18 and node["component"]["type"] == 4:  # a Label around a text input
                found[node["label"]] = node["component"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(modal["components"])
    return found


async def open_form(
    bot: discord.Client, fake: FakeDiscord, custom_id: str, *, user_id: int = DEFAULT_USER_ID
) -> dict[str, Any]:
    """Press a button that opens a form; the form (modal) as the bot sent it."""
    opened = await press(bot, fake, custom_id, user_id=user_id)
    assert opened.json["type"] == 9, opened.json  # MODAL
    await settle(bot)  # discord.py registers the modal after the callback returns
    return dict(opened.json["data"])


async def submit_form(
    bot: discord.Client,
    fake: FakeDiscord,
    modal: dict[str, Any],
    values: dict[str, str],
    *,
    user_id: int = DEFAULT_USER_ID,
) -> RecordedRequest:
    """Submit a form with ``values`` by label; the bot's answer to the interaction."""
    inputs = text_inputs(modal)
    since = len(fake.requests)
    payload = modal_submit_payload(
        modal["custom_id"], {inputs[label]["custom_id"]: value for label, value in values.items()}, user_id=user_id
    )
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    return await fake.wait_for("POST", CALLBACK, since=since, timeout=5)


async def command(
    bot: discord.Client, fake: FakeDiscord, name: str, options: dict[str, Any], **kw: Any
) -> RecordedRequest:
    """Run a slash command; its first answer (a defer, a message), once the bot has settled."""
    since = len(fake.requests)
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload(name, options, bot=bot, **kw))
    reply = await fake.wait_for("POST", CALLBACK, since=since, timeout=5)
    await settle(bot)
    return reply


async def models_published(redis: ArqRedis, timeout: float) -> None:
    """Wait until a worker has published its models (what /admin model use checks names against)."""
    deadline = time.monotonic() + timeout
    while await read_models(redis) is None:
        assert time.monotonic() < deadline, "the worker never published its models"
        await asyncio.sleep(0.2)
