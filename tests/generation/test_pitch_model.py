"""basic-pitch's note model as beatforge ships it (``generation/midi/pitch_model.py``): the packaged ONNX file, the
windowing, and notes from known tones, all without the basic-pitch package (which would pull TensorFlow in)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from generation.errors import ModelUnavailable
from generation.midi import pitch_model
from generation.midi.pitch_model import (
    ANNOTATIONS_FPS,
    AUDIO_N_SAMPLES,
    AUDIO_SAMPLE_RATE,
    MODEL_PATH,
    NoteModel,
    unwrap_output,
    window_audio_file,
)
from generation.midi.transcribe import PitchTracker

SR = AUDIO_SAMPLE_RATE
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tracker() -> PitchTracker:
    return PitchTracker()


def _tone(freq: float, seconds: float) -> npt.NDArray[np.float32]:
    """A sine with 5 ms/10 ms ramps, so its start and end click no more than a real note's."""
    t = np.arange(int(SR * seconds)) / SR
    ramp = np.minimum(1.0, np.minimum(t / 0.005, (seconds - t) / 0.01))
    return (0.5 * np.sin(2 * np.pi * freq * t) * ramp).astype(np.float32)


def _silence(seconds: float) -> npt.NDArray[np.float32]:
    return np.zeros(int(SR * seconds), dtype=np.float32)


def test_the_model_ships_with_the_package_and_loads() -> None:
    assert MODEL_PATH.is_file() and MODEL_PATH.stat().st_size == 230_444  # basic-pitch 0.4.0's nmp.onnx
    assert (MODEL_PATH.parent / "NOTICE").is_file() and (MODEL_PATH.parent / "LICENSE").is_file()
    out = NoteModel().predict(np.zeros((1, AUDIO_N_SAMPLES, 1), dtype=np.float32))
    assert {k: v.shape for k, v in out.items()} == {
        "note": (1, 172, 88),
        "onset": (1, 172, 88),
        "contour": (1, 172, 264),
    }


def test_a_sine_at_a3_is_one_a3_note_where_it_sounds(tracker: PitchTracker) -> None:
    notes = tracker.notes(np.concatenate([_silence(0.5), _tone(220.0, 1.0), _silence(0.5)]), SR)
    assert [n.pitch for n in notes] == [57]
    assert abs(notes[0].start_s - 0.5) < 0.05 and abs(notes[0].end_s - 1.5) < 0.05


def test_two_notes_in_a_row_keep_their_pitches_and_onsets(tracker: PitchTracker) -> None:
    audio = np.concatenate([_silence(0.3), _tone(220.0, 0.7), _silence(0.2), _tone(329.63, 0.7), _silence(0.4)])
    notes = tracker.notes(audio, SR)
    assert [n.pitch for n in notes] == [57, 64]  # A3, E4
    assert abs(notes[0].start_s - 0.3) < 0.05 and abs(notes[1].start_s - 1.2) < 0.05


def test_the_pitch_bounds_keep_only_notes_inside_them(tracker: PitchTracker) -> None:
    audio = np.concatenate([_silence(0.3), _tone(220.0, 0.7), _silence(0.2), _tone(329.63, 0.7), _silence(0.4)])
    assert [n.pitch for n in tracker.notes(audio, SR, max_pitch=59)] == [57]
    assert [n.pitch for n in tracker.notes(audio, SR, min_pitch=60)] == [64]


def test_audio_longer_than_a_window_unwraps_to_one_frame_row_per_hop() -> None:
    n = int(SR * 5.3)  # more than two 2 s windows
    overlap_frames = 30
    hop = AUDIO_N_SAMPLES - overlap_frames * 256
    padded = np.concatenate([np.zeros(overlap_frames * 256 // 2, np.float32), _tone(440.0, n / SR)])
    windows = list(window_audio_file(padded, hop))
    assert len(windows) == -(-padded.size // hop) > 2
    assert all(w.shape == (AUDIO_N_SAMPLES, 1) for w in windows)
    model = NoteModel()
    notes = np.concatenate([model.predict(w[None])["note"] for w in windows])
    unwrapped = unwrap_output(notes, n, overlap_frames)
    assert unwrapped.shape == (int(n * ANNOTATIONS_FPS / SR), 88)
    with pytest.raises(ValueError, match="shape"):
        unwrap_output(notes[0], n, overlap_frames)


def test_a_tone_across_window_boundaries_stays_one_note(tracker: PitchTracker) -> None:
    notes = tracker.notes(np.concatenate([_silence(0.25), _tone(220.0, 4.5), _silence(0.25)]), SR)
    assert [n.pitch for n in notes] == [57] and abs(notes[0].start_s - 0.25) < 0.05
    assert abs(notes[0].end_s - 4.75) < 0.1


def test_a_missing_model_file_or_onnxruntime_is_model_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pitch_model, "MODEL_PATH", Path("/nowhere/basic_pitch_nmp.onnx"))
    with pytest.raises(ModelUnavailable, match="model file"):
        PitchTracker()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when not installed
    with pytest.raises(ModelUnavailable, match="onnxruntime"):
        PitchTracker()


def test_transcription_never_needs_the_basic_pitch_package() -> None:
    code = """
import sys
sys.modules["basic_pitch"] = None  # any `import basic_pitch...` now raises ImportError
import numpy as np
from generation.midi.transcribe import PitchTracker
t = np.arange(22050) / 22050
audio = np.concatenate([np.zeros(11025), 0.5 * np.sin(2 * np.pi * 220 * t), np.zeros(11025)]).astype(np.float32)
print([n.pitch for n in PitchTracker().notes(audio, 22050)])
print(sorted(name for name in sys.modules if name.startswith(("basic_pitch", "tensorflow", "resampy"))))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[57]", "['basic_pitch']"]  # only our own None placeholder
