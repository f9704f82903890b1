"""The loops' S3 copy (``storage/objects.py``) against a real S3-compatible HTTP endpoint: moto's server in its own
process, on loopback (``tests/support/s3_server.py``).

Credentials are dummies set through the environment, the same way real ones reach boto3.
"""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from storage.errors import StorageError
from storage.objects import S3ConfigError, S3Target, UploadFailed, content_type_for, make_client, upload_files
from tests.support.s3_server import REGION, MotoServer, free_port, raw_client

pytestmark = pytest.mark.usefixtures("aws_test_credentials")


@pytest.fixture
def s3_endpoint(moto: MotoServer) -> str:
    return moto.url


def _artifacts(tmp_path: Path) -> tuple[Path, Path]:
    wav = tmp_path / "beat.wav"
    wav.write_bytes(b"RIFF" + bytes(range(256)) * 64)  # bytes, not a real wav: S3 does not care
    meta = tmp_path / "beat.json"
    meta.write_text('{"prompt": "lo-fi café"}\n', encoding="utf-8")
    return wav, meta


def test_upload_files_stores_bytes_and_content_types(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    wav, meta = _artifacts(tmp_path)
    target = S3Target(bucket=bucket, prefix="beats/", endpoint_url=s3_endpoint, region=REGION)

    keys = upload_files(target, [wav, meta], key_prefix="job-42")

    assert keys == ["beats/job-42/beat.wav", "beats/job-42/beat.json"]
    raw = raw_client(s3_endpoint)
    listed = raw.list_objects_v2(Bucket=bucket, Prefix="beats/")
    assert sorted(obj["Key"] for obj in listed["Contents"]) == sorted(keys)
    for path, key, content_type in [(wav, keys[0], "audio/wav"), (meta, keys[1], "application/json")]:
        obj = raw.get_object(Bucket=bucket, Key=key)
        assert obj["Body"].read() == path.read_bytes()
        assert obj["ContentType"] == content_type
    assert target.uri(keys[0]) == f"s3://{bucket}/beats/job-42/beat.wav"


def test_an_empty_prefix_puts_files_under_the_key_prefix_only(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    wav, _ = _artifacts(tmp_path)
    target = S3Target(bucket=bucket, endpoint_url=s3_endpoint)
    assert upload_files(target, [wav], key_prefix="/7/") == ["7/beat.wav"]
    assert raw_client(s3_endpoint).head_object(Bucket=bucket, Key="7/beat.wav")["ContentLength"] == wav.stat().st_size


def test_upload_to_a_missing_bucket_raises_upload_failed(s3_endpoint: str, tmp_path: Path) -> None:
    wav, meta = _artifacts(tmp_path)
    target = S3Target(bucket="no-such-bucket", prefix="beats", endpoint_url=s3_endpoint)

    with pytest.raises(UploadFailed) as info:
        upload_files(target, [wav, meta], key_prefix="job-1")

    message = str(info.value)
    assert "s3://no-such-bucket/beats/job-1/beat.wav" in message
    assert "NoSuchBucket" in message
    assert "0 of 2 files uploaded" in message
    assert isinstance(info.value, StorageError)
    assert (info.value.bucket, info.value.key, info.value.uploaded) == ("no-such-bucket", "beats/job-1/beat.wav", [])


def test_an_unreachable_endpoint_raises_upload_failed(tmp_path: Path) -> None:
    wav, _ = _artifacts(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    target = S3Target(bucket="beats", endpoint_url=dead)
    started = time.monotonic()
    with pytest.raises(UploadFailed, match=rf"s3://beats/1/beat\.wav at {dead}: Could not connect"):
        upload_files(target, [wav], key_prefix="1")
    assert time.monotonic() - started < 10  # bounded retries: a dead endpoint fails fast, it does not hang a job


def test_a_caller_supplied_client_is_used(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    wav, _ = _artifacts(tmp_path)
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name=REGION, config=Config(retries={"max_attempts": 1})
    )
    # The target names no endpoint (AWS); only the supplied client can reach moto.
    assert upload_files(S3Target(bucket=bucket), [wav], key_prefix="c", client=client) == ["c/beat.wav"]
    assert raw_client(s3_endpoint).get_object(Bucket=bucket, Key="c/beat.wav")["Body"].read() == wav.read_bytes()


def test_bad_local_files_upload_nothing(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    wav, _ = _artifacts(tmp_path)
    target = S3Target(bucket=bucket, endpoint_url=s3_endpoint)
    with pytest.raises(UploadFailed, match=r"missing\.wav is not a file"):
        upload_files(target, [wav, tmp_path / "missing.wav"], key_prefix="job")
    other = tmp_path / "sub"
    other.mkdir()
    (other / "beat.wav").write_bytes(b"x")
    with pytest.raises(UploadFailed, match="would both be"):
        upload_files(target, [wav, other / "beat.wav"], key_prefix="job")
    assert raw_client(s3_endpoint).list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_make_client_uses_the_target_endpoint_and_region(s3_endpoint: str) -> None:
    client = make_client(S3Target(bucket="b", endpoint_url=s3_endpoint, region="eu-west-1"))
    assert client.meta.endpoint_url == s3_endpoint
    assert client.meta.region_name == "eu-west-1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bucket": ""}, "bucket=''"),
        ({"bucket": "a/b"}, "bucket='a/b'"),
        ({"bucket": "b", "prefix": "../up"}, "prefix='../up'"),
        ({"bucket": "b", "endpoint_url": "minio:9000"}, "endpoint_url='minio:9000'"),
    ],
)
def test_bad_targets_are_rejected_before_any_request(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(S3ConfigError, match=message):
        S3Target(**kwargs)  # type: ignore[arg-type]


def test_content_types() -> None:
    assert content_type_for(Path("a.MP3")) == "audio/mpeg"
    assert content_type_for(Path("a.flac")) == "audio/flac"
    assert content_type_for(Path("a.ogg")) == "audio/ogg"
    assert content_type_for(Path("cover.png")) == "image/png"
    assert content_type_for(Path("blob.unknownext")) == "application/octet-stream"
