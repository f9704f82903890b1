"""The tempo and key a prompt names, and setting them to the ones a user asked for.

MusicGen follows the words: a prompt saying "80 bpm" in a 100 bpm request makes a beat at neither tempo,
and the loop cutter, the file names and the pack's sidecars all follow the request. So wherever a prompt
meets a requested tempo or key (the bot's ``bpm`` option, ``--bpm``/``--key``, an LLM's answer), the
request wins: every tempo and key the words name is rewritten to it, or it is appended when they name none.
"""

from __future__ import annotations

import re

# "80 bpm", "80-90 bpm", "80 to 90 BPM", "80 beats per minute"
_TEMPO = re.compile(r"\b\d{2,3}(?:\s*(?:-|–|to)\s*\d{2,3})?\s*(?:bpm|beats (?:per|a) minute)\b", re.IGNORECASE)
# "A minor", "in F# major", "in the key of Eb minor", "C min key"
_KEY = re.compile(
    r"\b(?:in\s+(?:the\s+key\s+of\s+)?)?[A-G](?:#|b|♯|♭)?[\s-]*(?i:major|minor|maj|min)\b(?:\s+(?i:key))?"
)
_KEY_FORMAT = re.compile(r"^([A-Ga-g])([#b]?)\s*(?i:(major|minor|maj|min|m))?$")


def names_tempo(text: str) -> bool:
    """Whether ``text`` names a tempo ("90 bpm", "90-100 beats per minute")."""
    return _TEMPO.search(text) is not None


def normalize_key(key: str) -> str:
    """``"a minor"``, ``"F#m"``, ``"Eb maj"``, ``"Bb"`` → ``"A minor"``, ``"F# minor"``, ``"Eb major"``,
    ``"Bb major"`` (a bare note is a major key, as musicians write it).

    Raises:
        ValueError: not a key name.
    """
    match = _KEY_FORMAT.match(key.strip())
    if match is None:
        raise ValueError(f"{key!r} is not a key: write e.g. 'A minor' or 'F# major'")
    note, accidental, quality = match.groups()
    return f"{note.upper()}{accidental} {'major' if (quality or 'maj').lower() in ('major', 'maj') else 'minor'}"


def fit_to_request(prompt: str, *, bpm: int | None, key: str | None = None) -> str:
    """The prompt with every tempo (and key) it names set to the requested one, or the request appended.

    ``key`` must already be normalized (:func:`normalize_key`).
    """
    if bpm is not None:
        prompt, named = _TEMPO.subn(f"{bpm} bpm", prompt)
        if not named:
            prompt = f"{prompt.rstrip(' ,.')}, {bpm} bpm"
    if key is not None:
        prompt, named = _KEY.subn(f"in {key}", prompt)
        if not named:
            prompt = f"{prompt.rstrip(' ,.')}, in {key}"
    return prompt
