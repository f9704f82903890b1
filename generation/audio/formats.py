"""Encoded audio in the formats users can ask for (wav, flac, ogg, mp3), sized to fit Discord, plus metadata sidecars.

libsndfile (through soundfile) does the encoding wherever it can: it is already loaded, needs no
subprocess and, from 1.1 on, writes MP3 itself. ffmpeg is the fallback for what the installed
libsndfile cannot write (builds without MP3 or Vorbis, MP3 at sample rates MPEG-1 has no slot for).
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal, get_args

import numpy as np
import soundfile as sf

from generation.audio.signal import Samples
from generation.errors import AudioParameterError, GenerationError
from storage.files import atomic_write_text

AudioFormat = Literal["wav", "flac", "ogg", "mp3"]
FORMATS: Final[tuple[AudioFormat, ...]] = get_args(AudioFormat)
MIME: Final[Mapping[AudioFormat, str]] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
}
LOSSY: Final[frozenset[AudioFormat]] = frozenset({"ogg", "mp3"})

#: The bitrates an MPEG-1 Layer III frame header can name; anything else is not a valid CBR stream.
MP3_BITRATES_KBPS: Final[tuple[int, ...]] = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
#: Vorbis has no bitrate setting, only a quality; these are libvorbis's nominal rates for
#: quality 0..10 (44.1 kHz stereo), used to turn a requested kbps into a quality.
_VORBIS_NOMINAL_KBPS: Final[tuple[int, ...]] = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 500)
DEFAULT_BITRATE_KBPS: Final[Mapping[AudioFormat, int]] = {"ogg": 192, "mp3": 320}

#: What encode_to_fit falls back to, biggest first, when the preferred format is too large.
FIT_LADDER: Final[tuple[tuple[AudioFormat, int | None], ...]] = (
    ("flac", None),
    ("mp3", 320),
    ("mp3", 256),
    ("mp3", 192),
    ("mp3", 128),
    ("mp3", 96),
)

_SOUNDFILE: Final[Mapping[AudioFormat, tuple[str, str]]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
#: libsndfile maps an MP3 bitrate onto the MPEG version the sample rate implies; only MPEG-1 rates
#: allow every bitrate up to 320 kbps, so other rates go through ffmpeg and are resampled.
_MPEG1_RATES: Final[tuple[int, ...]] = (32_000, 44_100, 48_000)
_FFMPEG_TIMEOUT_S: Final[float] = 120.0
#: Bytes an MP3 file carries beyond its frames: ID3 tag, LAME/Xing header, a spare frame.
_MP3_OVERHEAD_BYTES: Final[int] = 16 * 1024


class AudioTooLarge(GenerationError):
    """Even the smallest encoding on the ladder is over the size limit."""

    def __init__(self, *, smallest_bytes: int, smallest: str, limit_bytes: int) -> None:
        super().__init__(
            f"the audio does not fit in {limit_bytes} bytes ({limit_bytes / 2**20:.1f} MiB): the smallest "
            f"encoding ({smallest}) is {smallest_bytes} bytes; make it shorter or raise the limit"
        )
        self.smallest_bytes = smallest_bytes
        self.limit_bytes = limit_bytes


class EncoderUnavailable(GenerationError):
    """The format needs ffmpeg and it is not installed."""


def encode(samples: Samples, *, sample_rate: int, fmt: AudioFormat, bitrate_kbps: int | None = None) -> bytes:
    """Encode ``samples`` (float, shape (channels, n), 1 or 2 channels) as a complete file in ``fmt``.

    wav and flac are 16-bit PCM (what every DAW and Discord's player open); ogg is Vorbis and mp3 is
    constant-bitrate MP3. ``bitrate_kbps`` only applies to the lossy formats: for mp3 it is exact and
    must be one of :data:`MP3_BITRATES_KBPS`; for ogg it picks the Vorbis quality whose nominal rate
    it is (Vorbis is variable-rate, so the real rate follows the music). Samples beyond ±1 are
    clipped, never wrapped.
    """
    fmt = _check_format(fmt)
    data = _check_samples(samples)
    _check_rate(sample_rate)
    if fmt in LOSSY:
        kbps = DEFAULT_BITRATE_KBPS[fmt] if bitrate_kbps is None else _check_bitrate(fmt, bitrate_kbps)
    elif bitrate_kbps is not None:
        raise AudioParameterError(f"{fmt} is lossless and takes no bitrate (got bitrate_kbps={bitrate_kbps!r})")
    else:
        kbps = None
    if _soundfile_supports(fmt, sample_rate):
        return _encode_soundfile(data, sample_rate=sample_rate, fmt=fmt, kbps=kbps)
    return _encode_ffmpeg(data, sample_rate=sample_rate, fmt=fmt, kbps=kbps)


def encode_to_fit(
    samples: Samples,
    *,
    sample_rate: int,
    limit_bytes: int,
    preferred: AudioFormat = "wav",
    bitrate_kbps: int | None = None,
) -> tuple[bytes, AudioFormat, int | None]:
    """The preferred encoding if it fits in ``limit_bytes``, else the first smaller one that does.

    Discord refuses attachments over the channel's limit (10 MiB unless boosted), so rather than fail
    the upload we step down :data:`FIT_LADDER` (flac, then mp3 at 320 → 96 kbps), only ever to a
    rung smaller than where we started. Returns ``(data, format, bitrate_kbps)``; the bitrate is
    ``None`` for lossless formats. Raises :class:`AudioTooLarge` rather than return a truncated file.
    """
    preferred = _check_format(preferred)
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes <= 0:
        raise AudioParameterError(f"limit_bytes={limit_bytes!r} must be a positive number of bytes")
    if preferred in LOSSY and bitrate_kbps is None:
        bitrate_kbps = DEFAULT_BITRATE_KBPS[preferred]
    smallest: tuple[int, str] | None = None
    for fmt, kbps in _ladder(preferred, bitrate_kbps):
        data = encode(samples, sample_rate=sample_rate, fmt=fmt, bitrate_kbps=kbps)
        if len(data) <= limit_bytes:
            return data, fmt, kbps
        if smallest is None or len(data) < smallest[0]:
            smallest = (len(data), fmt if kbps is None else f"{fmt} {kbps} kbps")
    assert smallest is not None  # the ladder always has the preferred rung
    raise AudioTooLarge(smallest_bytes=smallest[0], smallest=smallest[1], limit_bytes=limit_bytes)


def mp3_bitrate_to_fit(duration_s: float, limit_bytes: int, *, ceiling_kbps: int = 320) -> int:
    """The highest MP3 bitrate (at most ``ceiling_kbps``) whose constant-bitrate stream of ``duration_s``
    seconds fits in ``limit_bytes``.

    Computed from the duration instead of by trial encoding: a CBR stream is bitrate x duration plus a few
    KiB of headers (ID3, LAME tag, frame padding), and encoding two minutes of audio several times over
    just to find the rung costs seconds of worker time per take. Raises :class:`AudioTooLarge` when not
    even the lowest MP3 bitrate fits.
    """
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise AudioParameterError(f"duration_s={duration_s!r} must be a positive number of seconds")
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes <= 0:
        raise AudioParameterError(f"limit_bytes={limit_bytes!r} must be a positive number of bytes")
    # 2 % for frame padding and bit-reservoir slack, plus a fixed allowance for the tags.
    budget_kbps = (limit_bytes - _MP3_OVERHEAD_BYTES) * 8 / duration_s / 1000 * 0.98
    fitting = [kbps for kbps in MP3_BITRATES_KBPS if kbps <= min(ceiling_kbps, budget_kbps)]
    if not fitting:
        lowest = MP3_BITRATES_KBPS[0]
        raise AudioTooLarge(
            smallest_bytes=math.ceil(lowest * 1000 / 8 * duration_s) + _MP3_OVERHEAD_BYTES,
            smallest=f"mp3 {lowest} kbps",
            limit_bytes=limit_bytes,
        )
    return fitting[-1]


def encode_compact(samples: Samples, *, sample_rate: int, limit_bytes: int) -> tuple[bytes, AudioFormat, int]:
    """A compact MP3 of ``samples`` (float, shape (channels, n)) that fits in ``limit_bytes``, for chat uploads.

    A 120 s stereo WAV is ~15 MiB, over Discord's default 10 MiB per file; the full WAV stays available
    as a download link and this copy is what plays in the channel. MP3 rather than OGG because every
    Discord client (iOS included) plays it inline. Starts at the best bitrate the duration allows
    (:func:`mp3_bitrate_to_fit`) and still checks the real size, stepping down if an encoder ran large.
    Returns ``(data, "mp3", bitrate_kbps)``.
    """
    data = _check_samples(samples)
    _check_rate(sample_rate)
    kbps = mp3_bitrate_to_fit(data.shape[1] / sample_rate, limit_bytes)
    encoded, fmt, used = encode_to_fit(
        data, sample_rate=sample_rate, limit_bytes=limit_bytes, preferred="mp3", bitrate_kbps=kbps
    )
    assert used is not None  # an mp3 preference only ever steps down to other mp3 rungs
    return encoded, fmt, used


def write_metadata(path: Path, metadata: Mapping[str, object]) -> Path:
    """Write ``metadata`` as ``<stem>.json`` next to the audio file ``path``; returns the JSON path.

    Sorted keys and a two-space indent keep sidecars diffable; the file appears atomically (temp file
    in the same directory, then rename) so a reader never sees half a document, even if arq runs
    the job twice. Values must be plain JSON (str, finite numbers, bool, None, lists, str-keyed
    mappings): anything else raises :class:`AudioParameterError` naming the key, instead of being
    silently turned into a string.
    """
    if not isinstance(metadata, Mapping):
        raise AudioParameterError(f"metadata must be a mapping, got {type(metadata).__name__}")
    _check_json(metadata, where="metadata")
    text = json.dumps(metadata, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    target = path.with_suffix(".json")
    if target == path:
        raise AudioParameterError(f"{path} is already a .json file; pass the audio file's path")
    return atomic_write_text(target, text)


def duration_of(data: bytes) -> float:
    """Seconds of audio in an encoded file, as a player would play it (MP3 encoder delay excluded).

    Callers use it to check what they are about to send. libsndfile reads all four formats here;
    where it cannot (an older build and MP3), ffmpeg decodes the file and the samples are counted.
    """
    if not data:
        raise AudioParameterError("no audio data (0 bytes)")
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError) as exc:
        soundfile_error: Exception = exc
    else:
        if info.frames > 0 and info.samplerate > 0 and info.frames < 2**62:
            return int(info.frames) / int(info.samplerate)
        soundfile_error = AudioParameterError(f"libsndfile reports {info.frames} frames")
    return _duration_ffmpeg(data, soundfile_error=soundfile_error)


# -- validation ---------------------------------------------------------------------------------


def _check_format(fmt: object) -> AudioFormat:
    if fmt not in FORMATS:
        raise AudioParameterError(f"unknown format {fmt!r}; choose {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    return fmt  # narrowed by the membership test


def _check_samples(samples: object) -> Samples:
    if not isinstance(samples, np.ndarray):
        raise AudioParameterError(f"samples must be a numpy array, got {type(samples).__name__}")
    if samples.ndim != 2 or samples.shape[0] not in (1, 2):
        raise AudioParameterError(f"expected (channels, samples) with 1 or 2 channels, got shape {samples.shape}")
    if samples.shape[1] == 0:
        raise AudioParameterError(f"no samples to encode (shape {samples.shape})")
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioParameterError(f"expected float samples in [-1, 1], got dtype {samples.dtype}")
    if not np.isfinite(samples).all():
        bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
        raise AudioParameterError(f"samples contain {bad} non-finite values (NaN or inf)")
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def _check_rate(sample_rate: object) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or not 1_000 <= sample_rate <= 384_000:
        raise AudioParameterError(f"sample_rate={sample_rate!r} must be a whole number of Hz in 1000..384000")


def _check_bitrate(fmt: AudioFormat, kbps: object) -> int:
    if isinstance(kbps, bool) or not isinstance(kbps, int):
        raise AudioParameterError(f"bitrate_kbps={kbps!r} must be a whole number of kbps")
    if fmt == "mp3" and kbps not in MP3_BITRATES_KBPS:
        raise AudioParameterError(f"mp3 bitrate_kbps={kbps} is not an MP3 bitrate; choose one of {MP3_BITRATES_KBPS}")
    if fmt == "ogg" and not _VORBIS_NOMINAL_KBPS[0] <= kbps <= _VORBIS_NOMINAL_KBPS[-1]:
        raise AudioParameterError(
            f"ogg bitrate_kbps={kbps} is outside Vorbis's {_VORBIS_NOMINAL_KBPS[0]}..{_VORBIS_NOMINAL_KBPS[-1]} kbps"
        )
    return kbps


def _check_json(value: object, *, where: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AudioParameterError(f"metadata value at {where} is {value!r}, which JSON cannot hold")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AudioParameterError(f"metadata key {key!r} in {where} is not a string")
            _check_json(item, where=f"{where}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, where=f"{where}[{i}]")
        return
    raise AudioParameterError(f"metadata value at {where} is a {type(value).__name__} ({value!r:.60}), not JSON")


# -- encoders -----------------------------------------------------------------------------------


def _ladder(preferred: AudioFormat, bitrate_kbps: int | None) -> list[tuple[AudioFormat, int | None]]:
    rungs: list[tuple[AudioFormat, int | None]] = [(preferred, bitrate_kbps)]
    if preferred in LOSSY:
        # Never trade a lossy file for a bigger lossless one, nor for a higher bitrate.
        ceiling = bitrate_kbps if bitrate_kbps is not None else DEFAULT_BITRATE_KBPS[preferred]
        rungs += [(f, k) for f, k in FIT_LADDER if k is not None and k < ceiling]
    else:
        rungs += [rung for rung in FIT_LADDER if rung != (preferred, None)]
    return rungs


def _soundfile_supports(fmt: AudioFormat, sample_rate: int) -> bool:
    container, subtype = _SOUNDFILE[fmt]
    if container not in sf.available_formats() or subtype not in sf.available_subtypes(container):
        return False
    return fmt != "mp3" or sample_rate in _MPEG1_RATES


def _vorbis_quality(kbps: int) -> float:
    """Vorbis quality in 0..1 whose nominal rate is ``kbps`` (linear between libvorbis's table rows)."""
    table = _VORBIS_NOMINAL_KBPS
    return float(np.interp(kbps, table, np.linspace(0.0, 1.0, len(table))))


def _encode_soundfile(data: Samples, *, sample_rate: int, fmt: AudioFormat, kbps: int | None) -> bytes:
    container, subtype = _SOUNDFILE[fmt]
    level: float | None = None
    mode: str | None = None
    if fmt == "mp3" and kbps is not None:
        # libsndfile (mpeg_l3_encode.c) sets int(320 - level * 288) kbps for MPEG-1 rates; the half
        # step keeps float error from truncating 256 to 255.
        level, mode = min(1.0, max(0.0, (319.5 - kbps) / 288.0)), "CONSTANT"
    elif fmt == "ogg" and kbps is not None:
        level = 1.0 - _vorbis_quality(kbps)  # libsndfile's Vorbis quality is 1 - compression level
    buffer = io.BytesIO()
    try:
        sf.write(
            buffer,
            data.T,
            sample_rate,
            format=container,
            subtype=subtype,
            compression_level=level,
            bitrate_mode=mode,
        )
    except (sf.SoundFileError, RuntimeError) as exc:
        raise GenerationError(f"libsndfile could not encode {fmt} at {sample_rate} Hz: {exc}") from exc
    return buffer.getvalue()


def _ffmpeg() -> str:
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise EncoderUnavailable(
            "ffmpeg is not installed, and this libsndfile cannot write that format itself; "
            "install ffmpeg (e.g. `apt-get install ffmpeg`) or choose wav or flac"
        )
    return binary


def _encode_ffmpeg(data: Samples, *, sample_rate: int, fmt: AudioFormat, kbps: int | None) -> bytes:
    """Pipe raw float32 into ffmpeg and read the file back.

    ffmpeg writes to a temporary *file*, not stdout: on a pipe it cannot seek back to finish the
    header, which leaves FLAC/WAV without a length and MP3 without the LAME tag that tells players
    to skip the encoder delay (the decoded track then runs ~60 ms long).
    """
    codec: list[str]
    if fmt == "wav":
        codec = ["-c:a", "pcm_s16le", "-f", "wav"]
    elif fmt == "flac":
        codec = ["-c:a", "flac", "-sample_fmt", "s16", "-f", "flac"]
    elif fmt == "ogg":
        assert kbps is not None
        codec = ["-c:a", "libvorbis", "-q:a", f"{10 * _vorbis_quality(kbps):.3f}", "-f", "ogg"]
    else:
        assert kbps is not None
        out_rate = sample_rate if sample_rate in _MPEG1_RATES else _nearest_mpeg1_rate(sample_rate)
        codec = ["-c:a", "libmp3lame", "-b:a", f"{kbps}k", "-ar", str(out_rate), "-f", "mp3"]
    channels = data.shape[0]
    raw = np.ascontiguousarray(data.T, dtype="<f4").tobytes()
    with tempfile.TemporaryDirectory(prefix="beatforge-encode-") as tmp:
        out = Path(tmp) / f"out.{fmt}"
        command = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin"]
        command += ["-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0"]
        command += [*codec, "-y", str(out)]
        _run_ffmpeg(command, stdin=raw, what=f"encode {fmt}")
        return out.read_bytes()


def _nearest_mpeg1_rate(sample_rate: int) -> int:
    """The lowest MPEG-1 rate at or above ``sample_rate`` (never throw away bandwidth), else 48 kHz."""
    return next((rate for rate in _MPEG1_RATES if rate >= sample_rate), _MPEG1_RATES[-1])


def _duration_ffmpeg(data: bytes, *, soundfile_error: Exception) -> float:
    rate = 48_000
    with tempfile.TemporaryDirectory(prefix="beatforge-probe-") as tmp:
        path = Path(tmp) / "in"
        path.write_bytes(data)  # a seekable input, so ffmpeg honours the MP3 gapless (LAME) tag
        try:
            binary = _ffmpeg()
        except EncoderUnavailable as exc:
            raise AudioParameterError(
                f"libsndfile cannot read this audio ({soundfile_error}) and ffmpeg is not installed"
            ) from exc
        command = [binary, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path)]
        command += ["-f", "f32le", "-ac", "1", "-ar", str(rate), "pipe:1"]
        pcm = _run_ffmpeg(command, stdin=None, what=f"decode {len(data)} bytes", bad_input=True, temp_path=path)
    if not pcm:
        raise AudioParameterError(f"no audio in {len(data)} bytes (libsndfile: {soundfile_error})")
    return len(pcm) / 4 / rate


def _run_ffmpeg(
    command: list[str], *, stdin: bytes | None, what: str, bad_input: bool = False, temp_path: Path | None = None
) -> bytes:
    """Run ffmpeg; a failure becomes a typed error with ffmpeg's own words (minus our temp file's name)."""
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise GenerationError(f"ffmpeg did not {what} within {_FFMPEG_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip()
        if temp_path is not None:
            detail = detail.replace(f"{temp_path}: ", "")
        detail = detail[-500:] or f"exit status {result.returncode}"
        error = AudioParameterError if bad_input else GenerationError
        raise error(f"ffmpeg could not {what}: {detail}")
    return result.stdout
