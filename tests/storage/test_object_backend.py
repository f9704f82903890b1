"""The s3 artifact back end (``storage/backends.py``) against a real S3-compatible server (moto, on loopback): what
it stores, what it refuses to call stored, what it fetches back, and its presigned links.

Two :class:`ArtifactStore` folders stand for two machines: the worker's working area and the bot's cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import pytest
import yarl

from beatforge.config import Settings
from beatforge.contract import ArtifactKind
from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.backends import (
    ArtifactBackendError,
    ArtifactsNotStored,
    ArtifactUnavailable,
    LocalArtifacts,
    S3Artifacts,
    open_backend,
)
from storage.objects import S3Target
from tests.support.s3_server import CuttingProxy, MotoServer, deny_writes, raw_client

BIG = bytes(range(256)) * 4096  # 1 MiB: one PUT (under boto3's 8 MiB multipart threshold), past the proxy's cut

pytestmark = pytest.mark.usefixtures("aws_test_credentials")


def _s3(store: ArtifactStore, bucket: str, endpoint: str) -> S3Artifacts:
    return S3Artifacts(store, S3Target(bucket=bucket, prefix="bf/artifacts", endpoint_url=endpoint))


def _job_files(store: ArtifactStore, job_id: int = 7) -> list[ArtifactRecord]:
    with store.writing(job_id, "beat one.wav") as tmp:
        tmp.write_bytes(BIG)
    with store.writing(job_id, "beat one.json") as tmp:
        tmp.write_text('{"bpm": 120}\n')
    return [
        store.record(job_id, "beat one.wav", kind=ArtifactKind.AUDIO),
        store.record(job_id, "beat one.json", kind=ArtifactKind.METADATA),
    ]


async def test_published_files_are_in_the_bucket_with_size_and_checksum(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    worker = ArtifactStore(tmp_path / "worker")
    records = _job_files(worker)
    await _s3(worker, bucket, moto.url).publish(records)

    raw = raw_client(moto.url)
    for record in records:
        obj = raw.get_object(Bucket=bucket, Key=f"bf/artifacts/{record.path}")
        assert obj["Body"].read() == worker.resolve(record.path).read_bytes()
        assert obj["ContentLength"] == record.bytes
        assert obj["Metadata"] == {"sha256": record.sha256}
    assert raw.head_object(Bucket=bucket, Key="bf/artifacts/7/beat one.wav")["ContentType"] == "audio/wav"


async def test_another_machine_fetches_them_into_its_cache_once(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    worker, bot = ArtifactStore(tmp_path / "worker"), ArtifactStore(tmp_path / "bot")
    records = _job_files(worker)
    await _s3(worker, bucket, moto.url).publish(records)
    backend = _s3(bot, bucket, moto.url)

    path = await backend.fetch(records[0])
    assert path == bot.resolve("7/beat one.wav") and path.read_bytes() == BIG
    assert [p.name for p in path.parent.iterdir()] == ["beat one.wav"]  # no temporary file left beside it

    raw_client(moto.url).delete_object(Bucket=bucket, Key="bf/artifacts/7/beat one.wav")
    assert backend.local_copy(records[0]).read_bytes() == BIG  # the cached copy: no second download


async def test_a_fetch_of_other_bytes_than_recorded_leaves_nothing(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    worker, bot = ArtifactStore(tmp_path / "worker"), ArtifactStore(tmp_path / "bot")
    records = _job_files(worker)
    await _s3(worker, bucket, moto.url).publish(records)
    raw = raw_client(moto.url)
    raw.put_object(Bucket=bucket, Key="bf/artifacts/7/beat one.wav", Body=BIG[:1000])  # cut short behind our back
    raw.put_object(Bucket=bucket, Key="bf/artifacts/7/beat one.json", Body=b'{"bpm": 121}\n')  # same size, other bytes
    backend = _s3(bot, bucket, moto.url)

    with pytest.raises(ArtifactUnavailable, match="has 1000 bytes, not the 1048576 recorded"):
        await backend.fetch(records[0])
    with pytest.raises(ArtifactUnavailable, match="does not have the recorded sha256"):
        await backend.fetch(records[1])
    raw.delete_object(Bucket=bucket, Key="bf/artifacts/7/beat one.json")
    with pytest.raises(OSError, match="404"):  # an OSError, like a missing local file, for the bot's handlers
        await backend.fetch(records[1])
    assert not any(p.is_file() for p in (tmp_path / "bot").rglob("*"))


async def test_a_bucket_that_refuses_writes_stores_nothing(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    deny_writes(moto.url, bucket)
    worker = ArtifactStore(tmp_path / "worker")

    with pytest.raises(ArtifactsNotStored) as info:
        await _s3(worker, bucket, moto.url).publish(_job_files(worker))

    message = str(info.value)
    assert message.startswith("its files could not be stored (0 of 2 saved)\ncould not upload beat one.wav")
    assert f"s3://{bucket}/bf/artifacts/7/beat one.wav" in message and "Forbidden" in message
    assert raw_client(moto.url).list_objects_v2(Bucket=bucket)["KeyCount"] == 0


async def test_a_connection_cut_mid_upload_stores_nothing(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    proxy = CuttingProxy(moto.port, cut_after=256 * 1024)  # the 1 MiB body dies a quarter of the way in
    try:
        worker = ArtifactStore(tmp_path / "worker")
        records = list(reversed(_job_files(worker)))  # the small file first: it gets through
        with pytest.raises(ArtifactsNotStored, match=r"(?s)\(1 of 2 saved\).*beat one\.wav.*(reset|closed|aborted)"):
            await _s3(worker, bucket, proxy.url).publish(records)
        assert proxy.cuts >= 3  # boto3's own retries were cut too
    finally:
        proxy.close()
    keys = [o["Key"] for o in raw_client(moto.url).list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["bf/artifacts/7/beat one.json"]  # S3 keeps no half object: the wav is simply absent


async def test_a_file_changed_since_it_was_recorded_is_not_stored(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    worker = ArtifactStore(tmp_path / "worker")
    records = _job_files(worker)
    worker.resolve(records[0].path).write_bytes(BIG[:10])
    with pytest.raises(ArtifactsNotStored, match="has 10 bytes, not the 1048576 recorded"):
        await _s3(worker, bucket, moto.url).publish(records)


async def test_a_presigned_link_downloads_the_file_under_its_name(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    worker = ArtifactStore(tmp_path / "worker")
    records = _job_files(worker)
    backend = _s3(worker, bucket, moto.url)
    await backend.publish(records)

    link = backend.link("7/beat one.wav", ttl_s=3600)
    assert link is not None
    url, expires = link
    assert url.startswith(f"{moto.url}/{bucket}/bf/artifacts/7/beat%20one.wav?") and "X-Amz-Expires=3600" in url
    async with aiohttp.ClientSession() as http, http.get(yarl.URL(url, encoded=True)) as response:
        assert response.status == 200  # no credentials: the signature is the permission
        assert await response.read() == BIG
        assert 'filename="beat one.wav"' in response.headers["Content-Disposition"]
    week = backend.link("7/beat one.wav", ttl_s=365 * 24 * 3600)
    assert week is not None and "X-Amz-Expires=604800" in week[0]  # S3 signs a week at most
    assert abs(expires - week[1]) > 3 * 24 * 3600


def test_without_credentials_there_is_no_link_rather_than_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backend = _s3(ArtifactStore(tmp_path), "beats", "http://127.0.0.1:9")
    assert backend.link("7/beat.wav", ttl_s=60) is None


def test_local_is_the_default_and_s3_is_checked_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)
    plain = Settings(_env_file=None)  # type: ignore[call-arg]
    assert plain.artifact_backend == "local"
    local = open_backend(plain, store)
    assert isinstance(local, LocalArtifacts) and local.link("1/a.wav", 60) is None

    s3 = plain.model_copy(update={"artifact_backend": "s3"})
    with pytest.raises(ArtifactBackendError, match="needs BEATFORGE_S3_BUCKET"):
        open_backend(s3, store)
    backend = open_backend(s3.model_copy(update={"s3_bucket": "beats", "s3_prefix": "/bf/"}), store)
    assert isinstance(backend, S3Artifacts) and backend.key("3/a b.wav") == "bf/artifacts/3/a b.wav"

    monkeypatch.setitem(sys.modules, "storage.objects", None)  # as if boto3 were not installed
    with pytest.raises(ArtifactBackendError, match=r"needs boto3, which is not installed.*pip install"):
        open_backend(s3.model_copy(update={"s3_bucket": "beats"}), store)


async def test_a_file_known_by_its_path_is_fetched_checked_against_what_the_bucket_stored(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    worker, bot = ArtifactStore(tmp_path / "worker"), ArtifactStore(tmp_path / "bot")
    records = _job_files(worker)
    await _s3(worker, bucket, moto.url).publish(records)
    backend = _s3(bot, bucket, moto.url)

    path = await backend.fetch_path("7/beat one.wav")  # no row at hand: size and sha256 come from the object
    assert path == bot.resolve("7/beat one.wav") and path.read_bytes() == BIG

    raw = raw_client(moto.url)
    # Same size, other bytes, the checksum put_verified stored left in place: refused, nothing left behind.
    other = b'{"bpm": 121}\n'
    stored = {"sha256": records[1].sha256}
    raw.put_object(Bucket=bucket, Key="bf/artifacts/7/beat one.json", Body=other, Metadata=stored)
    with pytest.raises(ArtifactUnavailable, match="does not have the recorded sha256"):
        await backend.fetch_path("7/beat one.json")
    assert not bot.resolve("7/beat one.json").exists()

    gone = rf"s3://{bucket}/bf/artifacts/uploads/gone\.wav is not in the bucket"
    with pytest.raises(ArtifactUnavailable, match=gone):
        await backend.fetch_path("uploads/gone.wav")
    raw.put_object(Bucket=bucket, Key="bf/artifacts/uploads/by-hand.wav", Body=b"RIFF")  # no checksum: size only
    assert (await backend.fetch_path("uploads/by-hand.wav")).read_bytes() == b"RIFF"


async def test_an_unreachable_bucket_is_not_taken_for_a_missing_file(tmp_path: Path) -> None:
    backend = _s3(ArtifactStore(tmp_path), "beats", "http://127.0.0.1:9")
    with pytest.raises(ArtifactUnavailable, match=r"could not look up s3://beats/bf/artifacts/uploads/a\.wav"):
        await backend.fetch_path("uploads/a.wav")


async def test_local_fetch_by_path_is_the_folder_itself(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert await LocalArtifacts(store).fetch_path("uploads/a.wav") == store.resolve("uploads/a.wav")
