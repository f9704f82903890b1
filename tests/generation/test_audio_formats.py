"""Save formats: real encoders (libsndfile, ffmpeg) and real decoders, no mocks of either.

Durations are compared with a 50 ms tolerance. Lossless formats come back sample-exact; MP3 is
where the slack is for: LAME adds ~1105 samples of encoder delay plus padding to a whole frame,
which a decoder only removes when the LAME tag is there (it always is in our files).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from generation.audio import formats as audio_formats
from generation.audio.formats import (
    FIT_LADDER,
    FORMATS,
    MIME,
    AudioFormat,
    AudioTooLarge,
    EncoderUnavailable,
    duration_of,
    encode,
    encode_to_fit,
    write_metadata,
)
from generation.errors import AudioParameterError, GenerationError

SR = 32_000  # MusicGen's rate
SECONDS = 2.0
TOLERANCE_S = 0.05

requires_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def _beat(channels: int, *, seconds: float = SECONDS, sample_rate: int = SR) -> np.ndarray:
    """A tone plus a little noise: realistic enough that FLAC and the lossy codecs do real work."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(7)
    rows = [0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.05 * rng.standard_normal(t.size) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def _ffmpeg_decoded_seconds(data: bytes, tmp_path: Path) -> float:
    """Decode with ffmpeg (a second, independent decoder) from a file, and count the samples."""
    src = tmp_path / "probe.bin"
    src.write_bytes(data)
    pcm = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(src),
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            "48000",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return len(pcm) / 4 / 48_000


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips(fmt: AudioFormat, channels: int) -> None:
    x = _beat(channels)
    data = encode(x, sample_rate=SR, fmt=fmt)
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == SR
    assert decoded.shape[1] == channels
    assert abs(decoded.shape[0] / SR - SECONDS) <= TOLERANCE_S
    assert duration_of(data) == pytest.approx(decoded.shape[0] / SR)
    if fmt in ("wav", "flac"):  # lossless 16-bit: exact up to quantisation
        assert decoded.shape[0] == x.shape[1]
        np.testing.assert_allclose(decoded.T, x, atol=1.5 / 32768)
    else:  # lossy, but still the same music, not noise
        n = min(decoded.shape[0], x.shape[1])
        corr = np.corrcoef(decoded[:n, 0], x[0, :n])[0, 1]
        assert corr > 0.9


@requires_ffmpeg
@pytest.mark.parametrize("fmt", FORMATS)
def test_files_also_decode_with_ffmpeg(fmt: AudioFormat, tmp_path: Path) -> None:
    data = encode(_beat(2), sample_rate=SR, fmt=fmt)
    assert abs(_ffmpeg_decoded_seconds(data, tmp_path) - SECONDS) <= TOLERANCE_S


def test_container_headers_match_the_format() -> None:
    x = _beat(1, seconds=0.2)
    magic = {"wav": b"RIFF", "flac": b"fLaC", "ogg": b"OggS"}
    for fmt in FORMATS:
        data = encode(x, sample_rate=SR, fmt=fmt)
        if fmt == "mp3":
            assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
        else:
            assert data.startswith(magic[fmt])
    assert MIME["mp3"] == "audio/mpeg" and set(MIME) == set(FORMATS)


def test_out_of_range_samples_are_clipped_not_wrapped() -> None:
    x = np.full((1, 1000), 1.7, np.float32)
    decoded, _ = sf.read(io.BytesIO(encode(x, sample_rate=SR, fmt="wav")), dtype="float32")
    assert decoded.min() > 0.99  # a wrapped 16-bit value would be negative


# -- bitrate ---------------------------------------------------------------------------------------


def test_lower_mp3_bitrate_gives_a_smaller_file_at_that_rate() -> None:
    x = _beat(2)
    sizes = {kbps: len(encode(x, sample_rate=SR, fmt="mp3", bitrate_kbps=kbps)) for kbps in (320, 256, 192, 128, 96)}
    assert list(sizes.values()) == sorted(sizes.values(), reverse=True)
    assert len(set(sizes.values())) == len(sizes)
    for kbps, size in sizes.items():  # CBR: the size is the bitrate times the duration (± a frame or two)
        assert size == pytest.approx(kbps * 1000 / 8 * SECONDS, rel=0.05)


def test_lower_ogg_bitrate_gives_a_smaller_file() -> None:
    x = _beat(2)
    sizes = [len(encode(x, sample_rate=SR, fmt="ogg", bitrate_kbps=kbps)) for kbps in (320, 192, 128, 64)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


# -- the ffmpeg path ----------------------------------------------------------------------------------


@requires_ffmpeg
@pytest.mark.parametrize("fmt", FORMATS)
def test_ffmpeg_fallback_round_trips(fmt: AudioFormat, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a libsndfile without MP3/Vorbis support gets: the same formats, written by ffmpeg."""
    monkeypatch.setattr(audio_formats, "_soundfile_supports", lambda fmt, sample_rate: False)
    x = _beat(2)
    data = encode(x, sample_rate=SR, fmt=fmt)
    info = sf.info(io.BytesIO(data))
    assert (info.channels, info.samplerate) == (2, SR)
    assert abs(info.duration - SECONDS) <= TOLERANCE_S
    if fmt == "mp3":
        assert len(data) == pytest.approx(320 * 1000 / 8 * SECONDS, rel=0.05)


@requires_ffmpeg
def test_mp3_at_a_non_mpeg1_rate_is_resampled_by_ffmpeg() -> None:
    data = encode(_beat(2, sample_rate=22_050), sample_rate=22_050, fmt="mp3", bitrate_kbps=192)
    info = sf.info(io.BytesIO(data))
    assert info.samplerate == 32_000 and info.channels == 2
    assert abs(info.duration - SECONDS) <= TOLERANCE_S


def test_missing_ffmpeg_is_a_clear_generation_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ffmpeg on PATH
    x = _beat(1, sample_rate=22_050, seconds=0.2)
    with pytest.raises(EncoderUnavailable, match="install ffmpeg") as info:
        encode(x, sample_rate=22_050, fmt="mp3")
    assert isinstance(info.value, GenerationError)
    assert encode(x, sample_rate=22_050, fmt="wav")  # libsndfile formats need no ffmpeg


@requires_ffmpeg
def test_duration_of_falls_back_to_ffmpeg_for_what_libsndfile_cannot_read(tmp_path: Path) -> None:
    out = tmp_path / "beat.mka"  # Matroska: ffmpeg reads it, libsndfile does not
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1.5"]
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", *tone, "-c:a", "flac", str(out)], check=True)
    data = out.read_bytes()
    with pytest.raises(sf.LibsndfileError):
        sf.info(io.BytesIO(data))
    assert duration_of(data) == pytest.approx(1.5, abs=TOLERANCE_S)


def test_duration_of_rejects_what_is_not_audio() -> None:
    with pytest.raises(AudioParameterError, match="0 bytes"):
        duration_of(b"")
    with pytest.raises(
        AudioParameterError, match=r"ffmpeg could not decode 18 bytes: Invalid data|libsndfile cannot read"
    ):
        duration_of(b"definitely not wav")


# -- encode_to_fit --------------------------------------------------------------------------------------


def test_encode_to_fit_steps_down_the_ladder_only_as_far_as_needed() -> None:
    x = _beat(2)
    rungs: list[tuple[AudioFormat, int | None]] = [("wav", None), *FIT_LADDER]
    sizes = {rung: len(encode(x, sample_rate=SR, fmt=rung[0], bitrate_kbps=rung[1])) for rung in rungs}
    ordered = list(sizes.values())
    assert ordered == sorted(ordered, reverse=True), sizes  # each rung really is smaller than the one before

    # A limit exactly at a rung's size picks that rung; one byte less picks the next.
    for rung, size in sizes.items():
        data, fmt, kbps = encode_to_fit(x, sample_rate=SR, limit_bytes=size)
        assert (fmt, kbps) == rung
        assert len(data) <= size
        assert abs(duration_of(data) - SECONDS) <= TOLERANCE_S
        assert sf.info(io.BytesIO(data)).channels == 2

    smallest = sizes[FIT_LADDER[-1]]
    with pytest.raises(AudioTooLarge) as info:
        encode_to_fit(x, sample_rate=SR, limit_bytes=smallest - 1)
    message = str(info.value)
    assert str(smallest) in message and str(smallest - 1) in message and "mp3 96 kbps" in message
    assert info.value.smallest_bytes == smallest and info.value.limit_bytes == smallest - 1


def test_encode_to_fit_from_a_lossy_preference_never_grows() -> None:
    x = _beat(2)
    data, fmt, kbps = encode_to_fit(x, sample_rate=SR, limit_bytes=10 * 2**20, preferred="mp3")
    assert (fmt, kbps) == ("mp3", 320)
    data, fmt, kbps = encode_to_fit(x, sample_rate=SR, limit_bytes=10 * 2**20, preferred="ogg", bitrate_kbps=128)
    assert (fmt, kbps) == ("ogg", 128)
    ogg_size = len(data)
    # Too tight for ogg 128: only lower mp3 rates are tried (96), never flac or mp3 320.
    mp3_96 = len(encode(x, sample_rate=SR, fmt="mp3", bitrate_kbps=96))
    assert mp3_96 < ogg_size
    data, fmt, kbps = encode_to_fit(x, sample_rate=SR, limit_bytes=ogg_size - 1, preferred="ogg", bitrate_kbps=128)
    assert (fmt, kbps) == ("mp3", 96) and len(data) <= ogg_size - 1


def test_encode_to_fit_rejects_a_nonsense_limit() -> None:
    with pytest.raises(AudioParameterError, match="limit_bytes=0"):
        encode_to_fit(_beat(1, seconds=0.1), sample_rate=SR, limit_bytes=0)


# -- bad input -----------------------------------------------------------------------------------------


def test_unknown_format_names_the_choices() -> None:
    expected = "unknown format 'xyz'; choose wav, flac, ogg or mp3"
    with pytest.raises(AudioParameterError, match=re.escape(expected)):
        encode(_beat(1, seconds=0.1), sample_rate=SR, fmt="xyz")  # type: ignore[arg-type]
    with pytest.raises(AudioParameterError, match=re.escape(expected)):
        encode_to_fit(_beat(1, seconds=0.1), sample_rate=SR, limit_bytes=1, preferred="xyz")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (np.zeros(100, np.float32), r"shape \(100,\)"),
        (np.zeros((3, 100), np.float32), r"1 or 2 channels, got shape \(3, 100\)"),
        (np.zeros((100, 2), np.float32), r"shape \(100, 2\)"),
        (np.zeros((2, 0), np.float32), r"no samples"),
        (np.zeros((1, 100), np.int16), r"dtype int16"),
        (np.array([[0.0, np.nan, np.inf]], np.float32), r"2 non-finite"),
        ([[0.0, 0.1]], r"numpy array, got list"),
    ],
)
def test_bad_samples_raise_with_the_problem_named(samples: object, message: str) -> None:
    with pytest.raises(AudioParameterError, match=message):
        encode(samples, sample_rate=SR, fmt="wav")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fmt", "kwargs", "message"),
    [
        ("mp3", {"bitrate_kbps": 100}, r"mp3 bitrate_kbps=100 is not an MP3 bitrate"),
        ("ogg", {"bitrate_kbps": 8}, r"ogg bitrate_kbps=8 is outside"),
        ("flac", {"bitrate_kbps": 128}, r"flac is lossless and takes no bitrate \(got bitrate_kbps=128\)"),
        ("wav", {"sample_rate": 0}, r"sample_rate=0"),
        ("wav", {"sample_rate": 32000.0}, r"sample_rate=32000\.0"),
    ],
)
def test_bad_parameters_raise_with_the_value_named(fmt: AudioFormat, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"sample_rate": SR, **kwargs}
    with pytest.raises(AudioParameterError, match=message):
        encode(_beat(1, seconds=0.1), fmt=fmt, **args)  # type: ignore[arg-type]


# -- metadata -------------------------------------------------------------------------------------------


def test_metadata_sidecar_reads_back_equal(tmp_path: Path) -> None:
    audio = tmp_path / "job-7" / "beat.mp3"
    metadata = {
        "prompt": "lo-fi café beat ☕",
        "seed": 42,
        "duration_s": 15.0,
        "format": "mp3",
        "bitrate_kbps": 192,
        "tags": ["lofi", "chill"],
        "model": {"name": "facebook/musicgen-small", "guidance": 3.0},
        "cover": None,
        "fallback": False,
    }
    path = write_metadata(audio, metadata)
    assert path == tmp_path / "job-7" / "beat.json"
    raw = path.read_bytes()
    assert json.loads(raw.decode("utf-8")) == metadata
    text = raw.decode("utf-8")
    assert "café beat ☕" in text  # UTF-8, not \u escapes
    assert text == json.dumps(metadata, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["beat.json"]  # no temp file left behind


@pytest.mark.parametrize(
    ("metadata", "where"),
    [
        ({"seed": np.int64(3)}, "metadata.seed"),
        ({"a": {"b": [1, float("nan")]}}, r"metadata.a.b\[1\]"),
        ({"path": Path("/tmp/x")}, "metadata.path"),
        ({"when": {1, 2}}, "metadata.when"),
        ({1: "x"}, "key 1"),
    ],
)
def test_metadata_rejects_non_json_values_naming_the_key(
    metadata: dict[object, object], where: str, tmp_path: Path
) -> None:
    audio = tmp_path / "beat.wav"
    existing = write_metadata(audio, {"old": True})
    with pytest.raises(AudioParameterError, match=where):
        write_metadata(audio, metadata)  # type: ignore[arg-type]
    assert json.loads(existing.read_text(encoding="utf-8")) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beat.json"]


def test_metadata_write_is_atomic_when_the_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audio = tmp_path / "beat.flac"
    existing = write_metadata(audio, {"version": 1})

    def failing_replace(self: Path, target: str | os.PathLike[str]) -> Path:
        raise OSError("disk went away")

    monkeypatch.setattr(Path, "replace", failing_replace)
    with pytest.raises(OSError, match="disk went away"):
        write_metadata(audio, {"version": 2})
    monkeypatch.undo()
    assert json.loads(existing.read_text(encoding="utf-8")) == {"version": 1}  # old document intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beat.json"]  # and no temp file left
    assert json.loads(write_metadata(audio, {"version": 2}).read_text(encoding="utf-8")) == {"version": 2}
