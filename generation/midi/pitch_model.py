"""basic-pitch's note model run by onnxruntime alone, without the basic-pitch package.

Why this exists: basic-pitch 0.4.0 declares TensorFlow (1.4 GB) as a dependency on Python 3.11/Linux, although
beatforge only ever ran the ONNX file its wheel ships. So the model file is package data here
(``models/basic_pitch_nmp.onnx``, unchanged) and this module holds the few pieces of basic-pitch that turn audio
into note events: the model's input/output names, the 2 s windowing and its unwrapping, and the note decoder with
its "melodia trick". Nothing else (pitch bends, MIDI writing, sonifying) is used by beatforge, so nothing else is here.

Adapted from basic-pitch 0.4.0, https://github.com/spotify/basic-pitch, Copyright 2022 Spotify AB, licensed under
the Apache License, Version 2.0 (``models/LICENSE``, ``models/NOTICE``): ``basic_pitch/constants.py``,
``basic_pitch/inference.py`` (``Model``'s ONNX branch, ``window_audio_file``, ``unwrap_output``) and
``basic_pitch/note_creation.py`` (``model_output_to_notes`` without pitch bends, ``output_to_notes_polyphonic``,
``get_infered_onsets``, ``constrain_frequency``, ``model_frames_to_time``). Changes: type hints; window times and
pitch bends dropped; the decoder works on copies instead of changing the caller's arrays in place; a wrong-shaped
output raises instead of returning None. The thresholds, ``energy_tol`` and every step of the algorithm are the
original's, so the notes are identical (checked against basic-pitch 0.4.0 when it was removed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import numpy.typing as npt
from scipy.signal import argrelmax

__all__ = [
    "ANNOTATIONS_FPS",
    "AUDIO_N_SAMPLES",
    "AUDIO_SAMPLE_RATE",
    "FFT_HOP",
    "MODEL_PATH",
    "NoteEvent",
    "NoteModel",
    "model_output_to_notes",
    "unwrap_output",
    "window_audio_file",
]

#: The ONNX export of basic-pitch's ICASSP 2022 model (``saved_models/icassp_2022/nmp.onnx`` in its wheel).
MODEL_PATH = Path(__file__).parent / "models" / "basic_pitch_nmp.onnx"

FFT_HOP = 256
AUDIO_SAMPLE_RATE = 22_050  # the model's input rate
AUDIO_WINDOW_LENGTH = 2  # s per model call
ANNOTATIONS_FPS = AUDIO_SAMPLE_RATE // FFT_HOP  # 86 output frames per second
ANNOT_N_FRAMES = ANNOTATIONS_FPS * AUDIO_WINDOW_LENGTH  # frames per window
#: Samples per model call: the input shape (1, AUDIO_N_SAMPLES, 1) is fixed by the ONNX graph.
AUDIO_N_SAMPLES = AUDIO_SAMPLE_RATE * AUDIO_WINDOW_LENGTH - FFT_HOP
MIDI_OFFSET = 21  # the lowest of the 88 note bins is A0
MAX_FREQ_IDX = 87

_INPUT = "serving_default_input_2:0"
#: The graph's outputs in the order of ``_KEYS``.
_OUTPUTS = ("StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0")
_KEYS = ("note", "onset", "contour")

Array = npt.NDArray[Any]
#: (start_s, end_s, MIDI pitch, amplitude 0..1): basic-pitch's note event without its pitch bends.
NoteEvent = tuple[float, float, int, float]


class NoteModel:
    """One onnxruntime session of the note model, on the CPU (the model is small; basic-pitch does the same).

    Raises:
        ImportError: onnxruntime is not installed.
        FileNotFoundError: the model file is missing (a broken install).
    """

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime as ort

        path = MODEL_PATH if path is None else path
        if not path.is_file():
            raise FileNotFoundError(f"basic-pitch's note model is missing: {path}")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def predict(self, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """``x``: shape (batch, AUDIO_N_SAMPLES, 1). Returns "note" and "onset" (batch, 172, 88) activations and
        "contour" (batch, 172, 264)."""
        return dict(zip(_KEYS, self.session.run(list(_OUTPUTS), {_INPUT: x}), strict=True))


def window_audio_file(audio: npt.NDArray[np.float32], hop_size: int) -> Iterator[npt.NDArray[np.float32]]:
    """``audio`` (n,) cut into windows of shape (AUDIO_N_SAMPLES, 1) every ``hop_size`` samples, the last ones
    zero-padded to full length."""
    for i in range(0, audio.shape[0], hop_size):
        window = audio[i : i + AUDIO_N_SAMPLES]
        if len(window) < AUDIO_N_SAMPLES:
            window = np.pad(window, pad_width=[[0, AUDIO_N_SAMPLES - len(window)]])
        yield np.expand_dims(window, axis=-1)


def unwrap_output(output: Array, audio_original_length: int, n_overlapping_frames: int) -> Array:
    """Windowed predictions (n_windows, n_times_short, n_freqs) as one (n_times, n_freqs) matrix: half the overlap
    cut from each side of every window, trimmed to ``audio_original_length`` samples' worth of frames."""
    if output.ndim != 3:
        raise ValueError(f"expected (windows, frames, bins) predictions, got shape {output.shape}")
    n_olap = int(0.5 * n_overlapping_frames)
    if n_olap > 0:
        output = output[:, n_olap:-n_olap, :]
    n_output_frames_original = int(np.floor(audio_original_length * (ANNOTATIONS_FPS / AUDIO_SAMPLE_RATE)))
    unwrapped = output.reshape(output.shape[0] * output.shape[1], output.shape[2])
    return unwrapped[:n_output_frames_original, :]


def model_frames_to_time(n_frames: int) -> npt.NDArray[np.float64]:
    """Seconds at each output frame, corrected for the frames the windowing adds (basic-pitch's magic 0.0018 s)."""
    original_times = librosa.frames_to_time(np.arange(n_frames), sr=AUDIO_SAMPLE_RATE, hop_length=FFT_HOP)
    window_numbers = np.floor(np.arange(n_frames) / ANNOT_N_FRAMES)
    window_offset = (FFT_HOP / AUDIO_SAMPLE_RATE) * (ANNOT_N_FRAMES - (AUDIO_N_SAMPLES / FFT_HOP)) + 0.0018
    times: npt.NDArray[np.float64] = original_times - (window_offset * window_numbers)
    return times


def get_infered_onsets(onsets: Array, frames: Array, n_diff: int = 2) -> Array:
    """The larger of the predicted onsets and the frames' rises over 1..``n_diff`` frames (scaled to the onsets'
    maximum): a note restruck without a detected onset still starts."""
    diffs = []
    for n in range(1, n_diff + 1):
        frames_appended = np.concatenate([np.zeros((n, frames.shape[1])), frames])
        diffs.append(frames_appended[n:, :] - frames_appended[:-n, :])
    frame_diff = np.min(diffs, axis=0)
    frame_diff[frame_diff < 0] = 0
    frame_diff[:n_diff, :] = 0
    frame_diff = np.max(onsets) * frame_diff / np.max(frame_diff)  # rescale to have the same max as onsets
    inferred: Array = np.max([onsets, frame_diff], axis=0)
    return inferred


def constrain_frequency(
    onsets: Array, frames: Array, max_freq: float | None, min_freq: float | None
) -> tuple[Array, Array]:
    """Zero the activations above ``max_freq``/below ``min_freq`` (Hz), in place."""
    if max_freq is not None:
        max_freq_idx = int(np.round(librosa.hz_to_midi(max_freq) - MIDI_OFFSET))
        onsets[:, max_freq_idx:] = 0
        frames[:, max_freq_idx:] = 0
    if min_freq is not None:
        min_freq_idx = int(np.round(librosa.hz_to_midi(min_freq) - MIDI_OFFSET))
        onsets[:, :min_freq_idx] = 0
        frames[:, :min_freq_idx] = 0
    return onsets, frames


def _extent(remaining: Array, i: int, step: int, stop: int, freq_idx: int, frame_thresh: float, tol: int) -> int:
    """The melodia trick's walk from frame ``i`` by ``step`` until ``tol`` frames in a row fall below
    ``frame_thresh`` (or ``stop``), zeroing the bin and its neighbours on the way; returns the last frame above."""
    k = 0
    while (i < stop if step > 0 else i > stop) and k < tol:
        k = k + 1 if remaining[i, freq_idx] < frame_thresh else 0
        remaining[i, freq_idx] = 0
        if freq_idx < MAX_FREQ_IDX:
            remaining[i, freq_idx + 1] = 0
        if freq_idx > 0:
            remaining[i, freq_idx - 1] = 0
        i += step
    return i - step * (1 + k)


def output_to_notes_polyphonic(
    frames: Array,
    onsets: Array,
    onset_thresh: float,
    frame_thresh: float,
    min_note_len: int,
    infer_onsets: bool,
    max_freq: float | None,
    min_freq: float | None,
    melodia_trick: bool = True,
    energy_tol: int = 11,
) -> list[tuple[int, int, int, float]]:
    """(start frame, end frame, MIDI pitch, amplitude) for each note: every onset peak above ``onset_thresh`` runs
    until its frames stay below ``frame_thresh`` for ``energy_tol`` frames; then, with ``melodia_trick``, the
    strongest energy left is grown into notes both ways until none above ``frame_thresh`` remains. Notes of
    ``min_note_len`` frames or fewer are dropped."""
    n_frames = frames.shape[0]
    onsets, frames = constrain_frequency(onsets, frames, max_freq, min_freq)
    if infer_onsets:
        onsets = get_infered_onsets(onsets, frames)

    peak_thresh_mat = np.zeros(onsets.shape)
    peaks = argrelmax(onsets, axis=0)
    peak_thresh_mat[peaks] = onsets[peaks]
    onset_idx = np.where(peak_thresh_mat >= onset_thresh)
    onset_time_idx = onset_idx[0][::-1]  # backwards in time
    onset_freq_idx = onset_idx[1][::-1]

    remaining_energy = np.zeros(frames.shape)
    remaining_energy[:, :] = frames[:, :]
    note_events: list[tuple[int, int, int, float]] = []
    for note_start_idx, freq_idx in zip(onset_time_idx, onset_freq_idx, strict=True):
        if note_start_idx >= n_frames - 1:  # too close to the end of the audio
            continue
        # where the frames at this pitch drop below the threshold for good
        i = note_start_idx + 1
        k = 0  # frames since the energy dropped below the threshold
        while i < n_frames - 1 and k < energy_tol:
            k = k + 1 if remaining_energy[i, freq_idx] < frame_thresh else 0
            i += 1
        i -= k  # back to the last frame above the threshold
        if i - note_start_idx <= min_note_len:
            continue
        remaining_energy[note_start_idx:i, freq_idx] = 0
        if freq_idx < MAX_FREQ_IDX:
            remaining_energy[note_start_idx:i, freq_idx + 1] = 0
        if freq_idx > 0:
            remaining_energy[note_start_idx:i, freq_idx - 1] = 0
        amplitude = float(np.mean(frames[note_start_idx:i, freq_idx]))
        note_events.append((int(note_start_idx), int(i), int(freq_idx) + MIDI_OFFSET, amplitude))

    if melodia_trick:
        while np.max(remaining_energy) > frame_thresh:
            i_mid, freq_idx = (int(v) for v in np.unravel_index(np.argmax(remaining_energy), remaining_energy.shape))
            remaining_energy[i_mid, freq_idx] = 0
            i_end = _extent(remaining_energy, i_mid + 1, 1, n_frames - 1, freq_idx, frame_thresh, energy_tol)
            i_start = _extent(remaining_energy, i_mid - 1, -1, 0, freq_idx, frame_thresh, energy_tol)
            if i_end - i_start <= min_note_len:  # too short
                continue
            amplitude = float(np.mean(frames[i_start:i_end, freq_idx]))
            note_events.append((i_start, i_end, freq_idx + MIDI_OFFSET, amplitude))

    return note_events


def model_output_to_notes(
    output: dict[str, Array],
    onset_thresh: float,
    frame_thresh: float,
    infer_onsets: bool = True,
    min_note_len: int = 11,
    min_freq: float | None = None,
    max_freq: float | None = None,
    melodia_trick: bool = True,
) -> list[NoteEvent]:
    """Note events (start_s, end_s, MIDI pitch, amplitude) from the unwrapped model output (keys "note", "onset",
    "contour"), as basic-pitch's ``model_output_to_notes(..., include_pitch_bends=False)`` returns them."""
    estimated = output_to_notes_polyphonic(
        output["note"].copy(),
        output["onset"].copy(),
        onset_thresh=onset_thresh,
        frame_thresh=frame_thresh,
        infer_onsets=infer_onsets,
        min_note_len=min_note_len,
        min_freq=min_freq,
        max_freq=max_freq,
        melodia_trick=melodia_trick,
    )
    times_s = model_frames_to_time(output["contour"].shape[0])
    return [(float(times_s[start]), float(times_s[end]), pitch, amp) for start, end, pitch, amp in estimated]
