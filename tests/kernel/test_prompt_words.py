"""Tempo and key words in prompts: a tempo or key the user asked for always wins over what the words say."""

from __future__ import annotations

import pytest

from beatforge.contract import BeatParams
from beatforge.presets import describe_music
from beatforge.prompt_words import fit_to_request, normalize_key


@pytest.mark.parametrize(
    ("prompt", "bpm", "key", "expected"),
    [
        ("harp loop, 80 bpm, dawn", 100, None, "harp loop, 100 bpm, dawn"),
        ("drums at 120-130 BPM", 100, None, "drums at 100 bpm"),
        ("pads at 72 beats per minute.", 96, None, "pads at 96 bpm."),
        ("dreamy pads", 90, None, "dreamy pads, 90 bpm"),
        ("dreamy pads in the key of Eb major", None, "A minor", "dreamy pads in A minor"),
        ("A minimal loop, 100 bpm", 100, "C major", "A minimal loop, 100 bpm, in C major"),
        ("lofi keys, 84 bpm", None, None, "lofi keys, 84 bpm"),
    ],
)
def test_prompts_are_fitted_to_the_request(prompt: str, bpm: int | None, key: str | None, expected: str) -> None:
    assert fit_to_request(prompt, bpm=bpm, key=key) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [("a minor", "A minor"), ("F#m", "F# minor"), ("Eb maj", "Eb major"), ("Bb", "Bb major"), ("c", "C major")],
)
def test_keys_are_spelled_one_way(key: str, expected: str) -> None:
    assert normalize_key(key) == expected


@pytest.mark.parametrize(
    ("prompt", "mood", "bpm", "expected"),
    [
        ("dark trap, 140 bpm", None, 100, "dark trap, 100 bpm"),  # the bpm option wins over the words
        ("dark trap", None, 100, "dark trap, 100 bpm"),
        (
            "dark trap, 140 bpm",
            "sad",
            None,
            "dark trap, 140 bpm, melancholic, sad, slow, sparse, minor key, dark low register",
        ),
        ("dark trap", "sad", None, "dark trap, melancholic, sad, slow, sparse, minor key, dark low register, 72 bpm"),
        (
            "dark trap at 90-95 bpm",
            "sad",
            120,
            "dark trap at 120 bpm, melancholic, sad, slow, sparse, minor key, dark low register",
        ),
        ("bpm counter glitch pop", None, None, "bpm counter glitch pop"),
    ],
)
def test_the_requested_tempo_is_the_one_musicgen_reads(
    prompt: str, mood: str | None, bpm: int | None, expected: str
) -> None:
    assert describe_music(prompt=prompt, style=None, mood=mood, bpm=bpm) == expected
    assert BeatParams(prompt=prompt, mood=mood, bpm=bpm, duration_s=5, seed=1).music_text == expected
