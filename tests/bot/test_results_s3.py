"""The bot with ``BEATFORGE_ARTIFACT_BACKEND=s3``: results are posted from the bucket (a real S3-compatible server,
moto on loopback), not from a folder it shares with the workers.

The "worker" here writes into a folder of its own and publishes to the bucket, as ``generation/worker/run.py``
does; the bot's own artifact folder starts empty and is only its download cache. Files that fit are fetched
and attached; files over the upload limit become presigned links that download the right bytes from the bucket.
Files users send are in the bucket before their job is queued, since the worker that reads them may be elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

import aiohttp
import pytest
import yarl
from arq.connections import ArqRedis
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import ArtifactKind, BeatParams, JobKind, MidiParams
from beatforge.queue import queue_for
from bot.app import Beatforge, run_bot
from bot.file_server import Downloads
from bot.results import ResultComposer
from storage import jobs
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.backends import S3Artifacts
from storage.objects import S3Target
from tests.support.bot import (
    CALLBACK,
    CHANNEL_MESSAGES,
    ORIGINAL,
    get_job,
    job_count,
    new_job,
    private_text,
    queued_edit,
    wait_for_edit,
    wav_bytes,
)
from tests.support.discord_harness import (
    DEFAULT_GUILD_ID,
    FakeDiscord,
    connected,
    dispatch_gateway,
    settle,
    slash_command_payload,
)
from tests.support.s3_server import deny_writes, raw_client

PREFIX = "bf/artifacts"
LINK = re.compile(r"<(http://127\.0\.0\.1:\d+/[^>\s]+)>")
BIG = bytes(range(256)) * (3 * 2**11)  # 1.5 MiB: over a 1 MiB upload limit

pytestmark = pytest.mark.usefixtures("aws_test_credentials")


@pytest.fixture
def worker_store(tmp_path: Path) -> ArtifactStore:
    """The worker's working area: another folder than the bot's, as on another machine."""
    return ArtifactStore(tmp_path / "worker-artifacts")


@pytest.fixture
async def s3_bot(
    s3_settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> AsyncIterator[tuple[Beatforge, FakeDiscord]]:
    bot = Beatforge(settings=s3_settings, redis=arq_redis, sessions=sessions)
    async with FakeDiscord() as fake, connected(bot, fake):
        yield bot, fake


async def _finish_on_s3(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    store: ArtifactStore,
    job_id: int,
    files: list[tuple[str, ArtifactKind, bytes]],
    *,
    delivered: bool = False,
) -> list[ArtifactRecord]:
    """What a worker does with the s3 back end: write locally, upload everything, then record the job done."""
    records = []
    for name, kind, data in files:
        with store.writing(job_id, name) as tmp:
            tmp.write_bytes(data)
        records.append(store.record(job_id, name, kind=kind))
    assert settings.s3_bucket is not None
    target = S3Target(bucket=settings.s3_bucket, prefix=PREFIX, endpoint_url=settings.s3_endpoint_url)
    await S3Artifacts(store, target).publish(records)
    async with sessions() as session:
        await jobs.mark_running(session, job_id, resolved_model="tiny")
        await jobs.mark_done(session, job_id, artifacts=records)
        if delivered:
            await jobs.mark_delivered(session, job_id)
    return records


async def test_a_result_is_posted_from_the_bucket_with_presigned_links_for_big_files(
    s3_bot: tuple[Beatforge, FakeDiscord],
    s3_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    worker_store: ArtifactStore,
) -> None:
    bot, fake = s3_bot
    assert bot.artifacts.name == "s3" and bot.downloads.server is None  # no public_url: no file server either
    dispatch_gateway(
        bot,
        "INTERACTION_CREATE",
        slash_command_payload("beat", {"prompt": "big"}, bot=bot, attachment_size_limit=2**20),
    )
    await settle(bot)
    meta = json.dumps({"bpm": 120}).encode()
    await _finish_on_s3(
        s3_settings,
        sessions,
        worker_store,
        1,
        [("big beat.wav", ArtifactKind.AUDIO, BIG), ("big beat.json", ArtifactKind.METADATA, meta)],
    )

    post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=10)
    assert [(f.filename, f.data) for f in post.files] == [("big beat.json", meta)]  # fetched from the bucket
    content = post.json["content"]
    assert "big beat.wav is 1.5 MiB, over this server's 1 MiB upload limit — download it here" in content
    (url,) = LINK.findall(content)
    assert url.startswith(f"{s3_settings.s3_endpoint_url}/{s3_settings.s3_bucket}/{PREFIX}/1/big%20beat.wav?")
    assert "X-Amz-Expires=259200" in url  # link_ttl_hours (72) as the presigned URL's lifetime
    async with aiohttp.ClientSession() as http, http.get(yarl.URL(url, encoded=True)) as response:
        assert response.status == 200
        assert await response.read() == BIG
        assert 'filename="big beat.wav"' in response.headers["Content-Disposition"]
    cache = s3_settings.artifact_dir / "1"
    assert sorted(p.name for p in cache.iterdir()) == ["big beat.json"]  # the big one was never downloaded


async def test_show_reposts_from_the_bucket_and_explains_a_missing_object(
    s3_bot: tuple[Beatforge, FakeDiscord],
    s3_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    worker_store: ArtifactStore,
) -> None:
    bot, fake = s3_bot
    audio = wav_bytes(3200)
    job_id = await new_job(sessions, BeatParams(prompt="from the bucket", duration_s=1, seed=3), user_id=5)
    await _finish_on_s3(
        s3_settings, sessions, worker_store, job_id, [("beat.wav", ArtifactKind.AUDIO, audio)], delivered=True
    )
    assert not s3_settings.artifact_dir.exists() or not any(s3_settings.artifact_dir.rglob("*.wav"))

    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("show", {"job": job_id}, bot=bot))
    await settle(bot)
    (post,) = fake.find("PATCH", ORIGINAL)
    assert [(f.filename, f.data) for f in post.files] == [("beat.wav", audio)]

    # Gone from the bucket and from the cache: /show says so privately instead of posting half a result.
    raw_client(str(s3_settings.s3_endpoint_url)).delete_object(
        Bucket=s3_settings.s3_bucket, Key=f"{PREFIX}/{job_id}/beat.wav"
    )
    shutil.rmtree(s3_settings.artifact_dir / str(job_id))
    since = len(fake.requests)
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("show", {"job": job_id}, bot=bot))
    reply = await fake.wait_for("POST", CALLBACK, timeout=5, since=since)
    assert "are no longer available" in private_text(reply)
    assert len(fake.find("PATCH", ORIGINAL)) == 1


async def test_prepare_fetches_what_compose_attaches(
    s3_settings: Settings, sessions: async_sessionmaker[AsyncSession], worker_store: ArtifactStore, tmp_path: Path
) -> None:
    job_id = await new_job(sessions, BeatParams(prompt="prefetch", duration_s=1, seed=3), guild_id=DEFAULT_GUILD_ID)
    audio = wav_bytes(3200)
    await _finish_on_s3(
        s3_settings,
        sessions,
        worker_store,
        job_id,
        [("beat.wav", ArtifactKind.AUDIO, audio), ("huge.wav", ArtifactKind.AUDIO, BIG)],
    )
    async with sessions() as session:
        job = await jobs.get_job(session, job_id)
    cache = ArtifactStore(tmp_path / "bot-cache")
    assert s3_settings.s3_bucket is not None
    backend = S3Artifacts(
        cache, S3Target(bucket=s3_settings.s3_bucket, prefix=PREFIX, endpoint_url=s3_settings.s3_endpoint_url)
    )
    composer = ResultComposer(cache, Downloads(cache, s3_settings, backend), backend)

    await composer.prepare(job, 2**20)  # off the event loop: what fits under the limit, not what becomes a link
    assert cache.resolve(f"{job_id}/beat.wav").read_bytes() == audio
    assert len(BIG) > 2**20 and not cache.resolve(f"{job_id}/huge.wav").exists()
    message = composer.compose(job, limit=2**20)
    assert message.attachments == (cache.resolve(f"{job_id}/beat.wav"),)
    assert f"/{PREFIX}/{job_id}/huge.wav?" in message.content and "X-Amz-Signature=" in message.content


async def test_the_bot_refuses_to_start_on_s3_without_a_bucket(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = settings.model_copy(update={"artifact_backend": "s3", "discord_token": SecretStr("x" * 30)})
    assert await run_bot(broken) == 2  # before the database, redis or Discord are touched
    assert capsys.readouterr().err == (
        "beatforge: BEATFORGE_ARTIFACT_BACKEND=s3 needs BEATFORGE_S3_BUCKET (the bucket to keep them in)\n"
    )


async def test_an_upload_is_in_the_bucket_before_its_job_is_queued_and_a_refusing_bucket_queues_nothing(
    s3_bot: tuple[Beatforge, FakeDiscord],
    s3_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    arq_redis: ArqRedis,
) -> None:
    bot, fake = s3_bot
    audio = wav_bytes(3200)
    attachment = fake.add_attachment("my track.wav", audio)
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("midi", {"file": attachment}, bot=bot))
    await queued_edit(fake, 0)

    job = await get_job(sessions, 1)
    assert isinstance(job.params, MidiParams) and job.params.upload is not None
    endpoint, bucket = str(s3_settings.s3_endpoint_url), str(s3_settings.s3_bucket)
    stored = raw_client(endpoint).get_object(Bucket=bucket, Key=f"{PREFIX}/{job.params.upload}")
    assert stored["Body"].read() == audio  # where a worker on another machine fetches it from
    assert stored["Metadata"] == {"sha256": hashlib.sha256(audio).hexdigest()}
    queue = queue_for(s3_settings, JobKind.MIDI)
    assert await arq_redis.zcard(queue) == 1

    deny_writes(endpoint, bucket)
    since = len(fake.requests)
    attachment = fake.add_attachment("other.wav", audio)
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("midi", {"file": attachment}, bot=bot))
    refused = await wait_for_edit(fake, lambda text: "Couldn't store other.wav" in text, since=since)
    assert "nothing was queued" in refused.json["content"]
    await settle(bot)
    assert await job_count(sessions) == 1 and await arq_redis.zcard(queue) == 1
    assert [p.name for p in (s3_settings.artifact_dir / "uploads").iterdir()] == [PurePosixPath(job.params.upload).name]
