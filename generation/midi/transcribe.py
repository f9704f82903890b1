"""A beat as MIDI parts: split the mix into stems, then drums by onset band, bass and melody by basic-pitch.

Transcribing the pitched parts without the drums is the point: basic-pitch on a full mix hears the drums as
bursts of short notes (bench/midi.py measures both ways on the same audio). Bass and melody are read from one
basic-pitch pass over everything but the drums (bass + other stems), split at B3: with sampled instruments
(``bench/midi.py --set gm``) the low-passed bass stem alone lost the attacks (notes came out 18-63 ms late) and
left basic-pitch only the partials, so 1 note in 5 came out an octave or two high (F1 0.47 against 0.83 from the
wider band). Two corrections follow, both measured there: bass onsets move to the attack in the wide band's
spectral flux (basic-pitch marks a low note where its level peaks, tens of ms after the pluck), and a bass note
that starts while a note an octave, a twelfth or two octaves below it is still sounding is that note's overtone.
The melody is the top voice: a note starting with a higher one is dropped (:func:`top_voice`), and so is one
starting under a held lead note just as the bass plays a note it is a partial of (:func:`drop_bass_partials`).
A fast lead keeps its short notes (:func:`melody_min_note_ms`), and the notes' onsets go to the drum detector,
which looks for ghost snares under hats only where no note starts (``generation/midi/drums.py``).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from generation.analysis.checks import SILENCE_PEAK
from generation.analysis.key import detect_key
from generation.analysis.tempo import detect_tempo
from generation.audio.signal import Samples
from generation.errors import AudioParameterError, ModelUnavailable
from generation.midi.drums import detect_drums, quantize
from generation.midi.notes import DrumHit, Note, Transcription
from generation.midi.pitch_model import (
    AUDIO_N_SAMPLES,
    AUDIO_SAMPLE_RATE,
    FFT_HOP,
    NoteModel,
    model_output_to_notes,
    unwrap_output,
    window_audio_file,
)
from generation.midi.stems import DemucsSeparator, Stems, split_stems

__all__ = ["DrumHit", "Note", "PitchTracker", "Transcription", "transcribe"]

log = logging.getLogger(__name__)

PITCH_SR = AUDIO_SAMPLE_RATE  # basic-pitch's model rate
#: The split between the parts: bass notes up to B3 (from the low stem), the melody (top voice) above it.
BASS_MAX_PITCH = 59
#: Below this level relative to the mix (RMS, about -18 dB), the percussive stem holds only the attacks of
#: pitched notes, not drums (synthetic tones: 0.04-0.07; drum beats: 0.3-0.4).
MIN_DRUM_LEVEL = 0.12
#: Tempo-detection confidence from which the beat counts as steady enough to quantise drums to its grid.
STEADY_BEAT = 0.5
#: A note starting this close (s) to a louder one an octave, a twelfth, two octaves or two octaves and a major
#: third (the 5th harmonic) below it is that note's overtone, not a note of its own: basic-pitch reports the
#: strong overtones of bright tones as notes.
OVERTONE_ONSET_S = 0.05
OVERTONES = (12, 19, 24, 28)
#: A bass note's partials that reach the melody range: 2nd to 8th harmonic (octave, twelfth, two octaves, two
#: octaves and a third, and a fifth, three octaves); and how long a lead note must go on being held over a new
#: lower note for that note to count as such a partial (:func:`drop_bass_partials`).
BASS_PARTIALS = (12, 19, 24, 28, 31, 36)
HELD_S = 0.25
#: Bass onsets: basic-pitch's start moves to the strongest attack in the pitched signal's spectral flux (below
#: ONSET_MAX_HZ) from ONSET_BEFORE_S before it to ONSET_AFTER_S after it, when that attack reaches ONSET_REL of the
#: track's strong attacks (99th percentile of the flux). HOP 4 ms: finer than basic-pitch's 11.6 ms frames.
ONSET_BEFORE_S = 0.07
ONSET_AFTER_S = 0.02
ONSET_REL = 0.1
ONSET_MAX_HZ = 2000.0
ONSET_N_FFT = 2048
ONSET_HOP = 128
#: Melody notes shorter than basic-pitch's minimum (127.7 ms): a fast lead's sixteenths last less than that (110 ms
#: at 124 bpm), so the melody's minimum is SHORT_NOTE_SIXTEENTHS of a sixteenth at the detected tempo when that is
#: shorter, and a note only this shorter minimum admits must reach SHORT_NOTE_VELOCITY (see :func:`drop_quiet_short`).
SHORT_NOTE_SIXTEENTHS = 0.8
SHORT_NOTE_VELOCITY = 60


class PitchTracker:
    """basic-pitch's note model (``generation/midi/pitch_model.py``, its ONNX file shipped with beatforge), loaded
    once per worker.

    Thresholds are basic-pitch's own names: ``onset_threshold`` (how sure an onset must be),
    ``frame_threshold`` (how sure a sounding frame must be) and the shortest note kept.

    Raises:
        ModelUnavailable: onnxruntime is not installed (the ``worker`` extra) or the model file is missing.
    """

    def __init__(self, *, onset_threshold: float = 0.5, frame_threshold: float = 0.3, min_note_ms: float = 127.7):
        try:
            self.model = NoteModel()
        except ImportError as exc:
            raise ModelUnavailable(
                "MIDI transcription needs onnxruntime: pip install -e '.[worker]' (or pip install '.[worker]')"
            ) from exc
        except FileNotFoundError as exc:
            raise ModelUnavailable(f"MIDI transcription needs its model file; reinstall beatforge ({exc})") from exc
        self.onset_threshold, self.frame_threshold, self.min_note_ms = onset_threshold, frame_threshold, min_note_ms
        self._lock = threading.Lock()  # one ONNX session, used from worker threads

    def _model_output(self, audio: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        """basic-pitch's ``run_inference`` on an array instead of a file path (same windows, same overlap)."""
        overlap_frames = 30
        overlap = overlap_frames * FFT_HOP
        padded = np.concatenate([np.zeros(overlap // 2, dtype=np.float32), audio])
        output: dict[str, list[npt.NDArray[np.float32]]] = {"note": [], "onset": [], "contour": []}
        with self._lock:
            for window in window_audio_file(padded, AUDIO_N_SAMPLES - overlap):
                for key, value in self.model.predict(window[None]).items():
                    output[key].append(value)
        return {k: unwrap_output(np.concatenate(v), audio.shape[0], overlap_frames) for k, v in output.items()}

    def model_output(self, mono: npt.NDArray[np.floating], sr: int) -> dict[str, npt.NDArray[Any]] | None:
        """basic-pitch's activations ("note", "onset", "contour") for ``mono``; None for empty or silent audio."""
        import librosa

        audio = np.asarray(mono, dtype=np.float32)
        if sr != PITCH_SR:
            audio = librosa.resample(audio, orig_sr=sr, target_sr=PITCH_SR)
        if audio.size == 0 or not np.any(audio):
            return None
        return self._model_output(audio)

    def notes_from_output(
        self,
        output: dict[str, npt.NDArray[Any]] | None,
        *,
        min_pitch: int | None = None,
        max_pitch: int | None = None,
        min_note_ms: float | None = None,
    ) -> list[Note]:
        """The notes in one :meth:`model_output`, sorted by start; ``min_pitch``/``max_pitch`` bound the MIDI
        numbers (one model pass can so give both the bass and the melody); ``min_note_ms`` overrides the
        tracker's shortest note for this call (the melody's tempo-based one, :func:`melody_min_note_ms`)."""
        import librosa

        if output is None:
            return []
        frames_per_s = PITCH_SR / FFT_HOP
        shortest_ms = self.min_note_ms if min_note_ms is None else min_note_ms
        events = model_output_to_notes(
            output,
            onset_thresh=self.onset_threshold,
            frame_thresh=self.frame_threshold,
            min_note_len=round(shortest_ms / 1000 * frames_per_s),
            min_freq=float(librosa.midi_to_hz(min_pitch - 0.5)) if min_pitch is not None else None,
            max_freq=float(librosa.midi_to_hz(max_pitch + 0.5)) if max_pitch is not None else None,
            melodia_trick=True,
        )
        notes = [
            Note(start, end, pitch, int(np.clip(round(127 * amplitude), 1, 127)))
            for start, end, pitch, amplitude in events
            if (min_pitch is None or pitch >= min_pitch) and (max_pitch is None or pitch <= max_pitch)
        ]
        return sorted(notes, key=lambda n: (n.start_s, n.pitch))

    def notes(
        self, mono: npt.NDArray[np.floating], sr: int, *, min_pitch: int | None = None, max_pitch: int | None = None
    ) -> list[Note]:
        """Notes in ``mono`` (shape (n,)), sorted by start; ``min_pitch``/``max_pitch`` bound the MIDI numbers."""
        return self.notes_from_output(self.model_output(mono, sr), min_pitch=min_pitch, max_pitch=max_pitch)


def _mono(x: Samples) -> npt.NDArray[np.float32]:
    return cast(npt.NDArray[np.float32], x.mean(axis=0).astype(np.float32))


def _rms(x: npt.NDArray[np.float32]) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def melody_min_note_ms(bpm: float | None, default_ms: float) -> float:
    """The shortest melody note: ``SHORT_NOTE_SIXTEENTHS`` of a sixteenth at ``bpm`` when that is below
    ``default_ms`` (basic-pitch's minimum), else ``default_ms``; no tempo, no change.

    basic-pitch's 127.7 ms minimum is a sixteenth at 117 bpm: faster leads lose their sixteenths (mozart155 at
    124 bpm on the GM set: 13 of its 110 ms notes). Lowering the minimum for every song let drum and pad
    fragments through (GM melody F1 0.82 -> 0.79-0.80 at 60-100 ms); tied to the tempo and gated by
    :func:`drop_quiet_short`, GM 0.821 -> 0.830 (mozart155 0.88 -> 0.94), synthetic 0.884 -> 0.889.
    """
    if bpm is None or bpm <= 0:
        return default_ms
    return min(default_ms, SHORT_NOTE_SIXTEENTHS * 15000.0 / bpm)


def drop_quiet_short(notes: list[Note], default_ms: float) -> list[Note]:
    """``notes`` without those that basic-pitch's own minimum (``default_ms``) would have dropped unless they reach
    ``SHORT_NOTE_VELOCITY``.

    On the GM and synthetic sets the short notes a tempo-based minimum adds were real at velocity 61-101 (all 18)
    and false at 40-59 (all 16: drum and pad fragments). A note is "short" when it spans no more frames than
    the default minimum: 1 ms of slack covers basic-pitch's per-window time correction (about 10 ms per 2 s
    window), which can make a note crossing a window boundary look a frame shorter.
    """
    frames_per_s = PITCH_SR / FFT_HOP
    limit_s = round(default_ms / 1000 * frames_per_s) / frames_per_s + 0.001
    return [n for n in notes if n.end_s - n.start_s > limit_s or n.velocity >= SHORT_NOTE_VELOCITY]


def drop_overtones(notes: list[Note], fundamentals: list[Note]) -> list[Note]:
    """``notes`` without those that only repeat an overtone of a louder note among ``fundamentals``
    (which may be ``notes`` itself).

    Octave doublings played as loudly as their lower note survive: only a quieter upper note is dropped.
    """
    by_start = sorted(fundamentals, key=lambda f: f.start_s)
    starts = [f.start_s for f in by_start]

    def overtone(n: Note) -> bool:
        lo = bisect.bisect_left(starts, n.start_s - OVERTONE_ONSET_S)
        hi = bisect.bisect_right(starts, n.start_s + OVERTONE_ONSET_S)
        return any(f.pitch + step == n.pitch and f.velocity > n.velocity for f in by_start[lo:hi] for step in OVERTONES)

    return [n for n in notes if not overtone(n)]


def top_voice(notes: list[Note]) -> list[Note]:
    """``notes`` without those that start with a higher one (within ``OVERTONE_ONSET_S``): the melody part is
    the lead line, its highest voice.

    What else basic-pitch reports at a lead note's onset is, on these mixes, a partial of the bass or of the lead
    itself louder than :func:`drop_overtones` allows, or a pad's chord tone: on the GM set 40 of the 60 wrong
    melody notes sat at an overtone interval of the bass (precision 0.79 -> 0.84, F1 0.78 -> 0.81), on the
    synthetic set the unscored pad went (F1 0.78 -> 0.88). A chord played by the lead instrument keeps only its
    top note, as a one-line melody part would.
    """
    by_start = sorted(notes, key=lambda n: n.start_s)
    starts = [n.start_s for n in by_start]

    def under(n: Note) -> bool:
        lo = bisect.bisect_left(starts, n.start_s - OVERTONE_ONSET_S)
        hi = bisect.bisect_right(starts, n.start_s + OVERTONE_ONSET_S)
        return any(m.pitch > n.pitch for m in by_start[lo:hi])

    return [n for n in notes if not under(n)]


def drop_bass_partials(melody: list[Note], bass: list[Note]) -> list[Note]:
    """``melody`` without notes that start with a ``bass`` note (within ``OVERTONE_ONSET_S``) at one of its
    partials' intervals (``BASS_PARTIALS``) while a higher melody note is held on (to at least ``HELD_S`` after).

    The lead is one line: while it holds a note, a new lower note starting just as the bass plays is the bass's
    partial that basic-pitch reports in the melody range (the tones :func:`top_voice` cannot remove, because
    nothing higher starts with them). Dropping every such partial alone cost real lead notes (F1 0.77 -> 0.62 on
    the GM set): they are chord tones. With the held lead: 23 -> 17 false notes at bass partials there, F1 0.81 -> 0.82.
    """
    by_start = sorted(bass, key=lambda b: b.start_s)
    starts = [b.start_s for b in by_start]

    def partial(n: Note) -> bool:
        lo = bisect.bisect_left(starts, n.start_s - OVERTONE_ONSET_S)
        hi = bisect.bisect_right(starts, n.start_s + OVERTONE_ONSET_S)
        return any(n.pitch - b.pitch in BASS_PARTIALS for b in by_start[lo:hi])

    def under_held(n: Note) -> bool:
        return any(
            m.pitch > n.pitch and m.start_s < n.start_s - OVERTONE_ONSET_S and m.end_s >= n.start_s + HELD_S
            for m in melody
        )

    return [n for n in melody if not (partial(n) and under_held(n))]


def drop_sounding_overtones(notes: list[Note]) -> list[Note]:
    """``notes`` without those starting while a note an octave, a twelfth, two octaves or two octaves and a third
    below is still sounding (from just before its start to its end).

    A sampled bass's upper partials often outlast or re-excite after the attack, so basic-pitch reports them as
    notes of their own, later than the fundamental's onset (outside :func:`drop_overtones`' window). A bass line
    rarely holds a note under its own octave, so the upper note is dropped whatever its level.
    """
    by_start = sorted(notes, key=lambda n: n.start_s)

    def overtone(n: Note) -> bool:
        return any(
            f is not n and n.pitch - f.pitch in OVERTONES and f.start_s - OVERTONE_ONSET_S <= n.start_s <= f.end_s
            for f in by_start
        )

    return [n for n in notes if not overtone(n)]


def onset_flux(mono: npt.NDArray[np.float32], sr: int) -> npt.NDArray[np.float32]:
    """Spectral flux (log-compressed magnitudes, summed rises) below ``ONSET_MAX_HZ``, one value per ``ONSET_HOP``
    samples, frame ``i`` centred on sample ``i * ONSET_HOP``."""
    import librosa

    spec = np.abs(librosa.stft(mono, n_fft=ONSET_N_FFT, hop_length=ONSET_HOP))
    spec = spec[librosa.fft_frequencies(sr=sr, n_fft=ONSET_N_FFT) <= ONSET_MAX_HZ]
    compressed = np.log1p(100.0 * spec / max(float(spec.max()), 1e-9))
    return cast(
        npt.NDArray[np.float32],
        np.maximum(0.0, np.diff(compressed, axis=1, prepend=compressed[:, :1])).sum(axis=0).astype(np.float32),
    )


def snap_onsets(notes: list[Note], flux: npt.NDArray[np.float32], sr: int) -> list[Note]:
    """Each note's start moved to the strongest attack of ``flux`` (:func:`onset_flux`) from ``ONSET_BEFORE_S``
    before to ``ONSET_AFTER_S`` after it, when there is one of at least ``ONSET_REL`` of the track's strong ones."""
    if flux.size == 0 or not notes:
        return notes
    floor = ONSET_REL * float(np.percentile(flux, 99))
    frames_per_s = sr / ONSET_HOP
    out = []
    for n in notes:
        frame = round(n.start_s * frames_per_s)
        lo = max(0, frame - round(ONSET_BEFORE_S * frames_per_s))
        hi = min(flux.size, frame + round(ONSET_AFTER_S * frames_per_s) + 1)
        if hi <= lo:
            out.append(n)
            continue
        best = lo + int(np.argmax(flux[lo:hi]))
        start = best / frames_per_s
        out.append(Note(start, max(n.end_s, start + 1e-3), n.pitch, n.velocity) if flux[best] >= floor else n)
    return sorted(out, key=lambda n: (n.start_s, n.pitch))


def transcribe(
    samples: Samples, sr: int, *, tracker: PitchTracker, separator: DemucsSeparator | None = None
) -> Transcription:
    """Transcribe a mix (float32, (channels, n)) into drum, bass and melody parts.

    Raises:
        AudioParameterError: the audio is silent or not finite.
    """
    stems = separate(samples, sr, separator=separator)
    return transcribe_stems(stems, mix=samples, tracker=tracker)


def separate(samples: Samples, sr: int, *, separator: DemucsSeparator | None = None) -> Stems:
    if samples.ndim != 2 or samples.shape[-1] == 0:
        raise AudioParameterError("there is no audio to transcribe")
    if not np.all(np.isfinite(samples)):
        raise AudioParameterError("the audio contains invalid (non-finite) samples")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioParameterError("the audio is silent: there are no notes to transcribe")
    return split_stems(samples, sr, separator)


#: The steps :func:`transcribe_stems` reports to ``on_progress``: drums (with tempo, after the basic-pitch pass:
#: ghost snares need the notes' onsets), bass, melody (with key).
TRANSCRIBE_STEPS = 3


def transcribe_stems(
    stems: Stems, *, mix: Samples, tracker: PitchTracker, on_progress: Callable[[int], None] | None = None
) -> Transcription:
    """The parts of ``stems``; ``on_progress(done)`` after each of the :data:`TRANSCRIBE_STEPS` steps."""

    def step(done: int) -> None:
        if on_progress is not None:
            on_progress(done)

    sr = stems.sample_rate
    mono_mix = _mono(mix)
    try:
        tempo = detect_tempo(mono_mix, sr=sr)
    except AudioParameterError as exc:  # too short, or no periodic onsets: no grid, still notes
        log.info("no steady tempo; MIDI written at 120 bpm", extra={"reason": str(exc)})
        tempo = None
    # One basic-pitch pass over everything but the drums gives both parts (see the module docstring), and the
    # notes' onsets tell the drums where a hat's low range holds a note's attack rather than a ghost snare.
    pitched = _mono(stems.bass) + _mono(stems.other)
    output = tracker.model_output(pitched, sr)
    bass = tracker.notes_from_output(output, max_pitch=BASS_MAX_PITCH)
    shortest_ms = melody_min_note_ms(tempo.bpm if tempo is not None else None, tracker.min_note_ms)
    upper = tracker.notes_from_output(output, min_pitch=BASS_MAX_PITCH + 1, min_note_ms=shortest_ms)
    drums = _mono(stems.drums)
    has_drums = _rms(drums) >= MIN_DRUM_LEVEL * _rms(mono_mix)
    onsets = [n.start_s for n in bass + upper]
    hits = detect_drums(drums, sr, pitched_onsets=onsets) if has_drums else []
    steady = tempo is not None and tempo.confidence >= STEADY_BEAT
    if steady and tempo is not None:
        hits = quantize(hits, np.asarray(tempo.beat_times))
    step(1)
    bass = drop_sounding_overtones(snap_onsets(bass, onset_flux(pitched, sr), sr))
    step(2)
    upper = drop_quiet_short(upper, tracker.min_note_ms)
    melody = drop_bass_partials(top_voice(drop_overtones(upper, upper)), bass)
    try:
        key: str | None = detect_key(pitched, sr=sr).label
    except AudioParameterError:
        key = None
    step(3)
    return Transcription(
        drums=tuple(sorted(hits, key=lambda h: (h.time_s, h.drum))),
        bass=tuple(bass),
        melody=tuple(melody),
        bpm=tempo.bpm if tempo is not None else None,
        key=key,
        separation=stems.method,
        quantized=steady,
        duration_s=mix.shape[-1] / sr,
    )
