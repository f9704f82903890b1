"""Tempo hints and bar phase (issue 15): a tempo the user names is honoured where the audio allows it and
questioned where it does not; loops start on beat 1 even when the kick is as loud on beat 3, and say how sure
that is, down to the sidecar, LoopMeta and the line the user reads.

Renders come from tests/support/grooves.py (kicks equal on 1 and 3, cross-rhythms) and tests/support/synth.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from beatforge.contract import ArtifactKind
from beatforge.contract.artifacts import DOWNBEAT_CONFIDENT, LoopMeta
from bot.messages import loop_line
from generation.analysis import beat_model
from generation.analysis.tempo import SIGNAL_CUES, detect_tempo
from generation.loops.cut import make_loop
from generation.loops.export import warm_up
from tests.support.grooves import cross_rhythm, even_kick_groove
from tests.support.synth import render_beat

SR = 32_000


@pytest.fixture
def signal_cues_only() -> Iterator[None]:
    """madmom's networks switched off, as an operator who sells loops may (BEATFORGE_LEARNED_DOWNBEATS=false)."""
    beat_model.use(False)
    yield
    beat_model.use(True)


def test_a_hint_is_honoured_where_the_pulse_is_ambiguous(signal_cues_only: None) -> None:
    # 133 bpm drums under a louder 100 bpm stab: librosa's estimate follows the stab
    render = cross_rhythm(bpm=133, other_bpm=100, level=3.0)
    assert detect_tempo(render.samples, sr=SR).bpm == pytest.approx(100, rel=0.01)
    asked = detect_tempo(render.samples, sr=SR, bpm_hint=133)
    assert asked.bpm == pytest.approx(133, rel=0.003)
    assert asked.tempo_note is None
    other = detect_tempo(render.samples, sr=SR, bpm_hint=100)  # the other reading is as good: honoured too
    assert other.bpm == pytest.approx(100, rel=0.003) and other.tempo_note is None


def test_the_networks_hear_the_drums_pulse_and_bar_under_a_louder_cross_rhythm() -> None:
    render = cross_rhythm(bpm=133, other_bpm=100, level=3.0)
    info = detect_tempo(render.samples, sr=SR)
    assert info.bpm == pytest.approx(133, rel=0.003)
    assert info.downbeats_from == beat_model.LICENCE
    bar = 4 * 60 / 133
    assert all(abs((t + bar / 2) % bar - bar / 2) < 0.03 for t in info.downbeat_times)  # on the drums' bar lines


def test_without_the_networks_the_signal_cues_still_place_the_bar(signal_cues_only: None) -> None:
    render = even_kick_groove(bpm=110, bars=10, lead_in_s=1.1, rng=np.random.default_rng(110))
    loop = make_loop(render.samples, sr=SR, bars=4)
    assert np.abs(render.downbeats - loop.start_sample / SR).min() < 0.015
    assert loop.to_metadata()["downbeats_from"] == SIGNAL_CUES


def test_the_worker_switch_turns_the_networks_off_and_on() -> None:
    try:
        warm_up(learned_downbeats=False)
        assert not beat_model.available()
    finally:
        warm_up(learned_downbeats=True)
    assert beat_model.available()  # the worker extra installs them: CI runs with them


def test_a_disagreeing_hint_gets_a_tempo_note() -> None:
    render = render_beat(bpm=120, bars=6, chords=True, jitter_ms=3, rng=np.random.default_rng(3))
    info = detect_tempo(render.samples, sr=SR, bpm_hint=105)  # no simple ratio of 105 is 120
    assert info.bpm == pytest.approx(120, rel=0.005)
    assert info.tempo_note == "the audio's pulse is 120.0 bpm, not the 105 asked for"
    assert detect_tempo(render.samples, sr=SR, bpm_hint=121).tempo_note is None  # a rounded hint is no disagreement
    assert detect_tempo(render.samples, sr=SR, bpm_hint=60).bpm == pytest.approx(60, rel=0.005)  # the octave asked


@pytest.mark.parametrize(("bpm", "lead_in_s"), [(96, 1.1), (133, 0.3)])
def test_kicks_on_1_and_3_and_harmony_at_the_bar_line_start_the_loop_on_beat_1(bpm: int, lead_in_s: float) -> None:
    render = even_kick_groove(bpm=bpm, bars=10, lead_in_s=lead_in_s, rng=np.random.default_rng(bpm))
    loop = make_loop(render.samples, sr=SR, bars=4)
    assert np.abs(render.downbeats - loop.start_sample / SR).min() < 0.015  # on a bar line, not beat 3
    assert loop.downbeat_confidence >= DOWNBEAT_CONFIDENT


def test_confidence_is_lower_when_only_the_drums_say_where_the_bar_is() -> None:
    sure, unsure = [
        detect_tempo(
            even_kick_groove(bpm=120, bars=10, chords=chords, bass=chords, rng=np.random.default_rng(7)).samples,
            sr=SR,
        ).downbeat_confidence
        for chords in (True, False)
    ]
    assert 0 <= unsure < DOWNBEAT_CONFIDENT <= sure <= 1


def test_the_sidecar_and_loop_meta_carry_the_new_fields() -> None:
    render = render_beat(bpm=120, bars=6, chords=True, jitter_ms=3, rng=np.random.default_rng(3))
    meta = make_loop(render.samples, sr=SR, bars=2, target_bpm=105).to_metadata()
    assert meta["tempo_note"] == "the audio's pulse is 120.0 bpm, not the 105 asked for"
    assert 0 <= meta["downbeat_confidence"] <= 1
    loop = LoopMeta.model_validate(meta)
    assert loop.downbeat_confidence == meta["downbeat_confidence"] and loop.tempo_note == meta["tempo_note"]
    assert loop.downbeats_from == meta["downbeats_from"] == beat_model.LICENCE  # the licence travels with it
    old = LoopMeta.model_validate({k: v for k, v in meta.items() if k not in ("downbeat_confidence", "tempo_note")})
    assert old.downbeat_confidence is None and old.tempo_note is None and not old.downbeat_uncertain


def _job(**meta: Any) -> Any:
    loop = {"bars": 4, "bpm": 120.0, "seam_score": 1.02, "key": {"label": "A minor"}, **meta}
    return cast(Any, SimpleNamespace(artifacts=[SimpleNamespace(kind=ArtifactKind.LOOP, meta=loop)]))


def test_loop_line_says_when_the_downbeat_or_the_tempo_is_in_doubt() -> None:
    sure = loop_line(_job(downbeat_confidence=0.9))
    assert sure is not None and "uncertain" not in sure and "Tempo" not in sure
    unsure = loop_line(
        _job(downbeat_confidence=0.1, tempo_note="the audio's pulse is 100.7 bpm, not the 133 asked for")
    )
    assert unsure is not None
    assert "Downbeat uncertain (confidence 0.10): check the first beat" in unsure
    assert "Tempo: the audio's pulse is 100.7 bpm, not the 133 asked for" in unsure
    assert "uncertain" not in (loop_line(_job()) or "")  # rows from before the field: no claim either way
