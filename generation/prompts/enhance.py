"""✨ A short idea ("sad piano trap") made into a full MusicGen prompt: instruments, tempo, key, mood, production.

MusicGen does much better with a detailed description than with three words, and most people type three
words. An LLM writes the description when one is configured; its answer is untrusted text (cleaned, bounded,
and set to the requested tempo). Without one, or when it fails, the style and mood presets write it: the
idea's own words pick the closest preset (a style or mood the user chose wins), so "sad piano trap" still
gets the trap style's instruments and the sad mood's tempo and mode. The result says which of the two wrote
the prompt it shows.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from beatforge.bounds import PROMPT_MAX_CHARS
from beatforge.contract import BeatParams
from beatforge.presets import MOODS, STYLES, describe_music
from beatforge.prompt_words import fit_to_request
from generation.prompts.llm import ChatClient, LLMError, clean_llm_text

log = logging.getLogger(__name__)

_SYSTEM = (
    "You write prompts for MusicGen, a model that generates instrumental music from text. Turn the user's "
    "short idea into ONE prompt of 20 to 60 words naming: the genre, three or four specific instruments and "
    "sounds, the mood, the tempo in bpm, the key, and the production (mix, texture, space). Keep the user's "
    "idea and every word they insist on. No vocals, lyrics or artist names. Answer with the prompt only, "
    "on one line, no quotes."
)
#: Fewer words than this is not an enhanced prompt (an LLM that answered "Sure!" or echoed the idea).
_MIN_WORDS = 8

#: Words in an idea that point at a preset, when the user picked none: the template fallback's guesses.
_STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "dark-trap": ("trap", "808", "808s"),
    "melodic-psych": ("psychedelic", "psych", "melodic rap"),
    "moody-hum": ("hum", "humming", "spacey", "introspective"),
    "boom-bap": ("boom bap", "boombap", "boom-bap", "90s hip hop", "dusty"),
    "lofi": ("lofi", "lo-fi", "study", "chillhop"),
    "drill": ("drill",),
    "synthwave": ("synthwave", "80s", "retrowave", "outrun"),
    "house": ("house", "club", "four on the floor"),
}
_MOOD_WORDS: dict[str, tuple[str, ...]] = {
    "happy": ("happy", "upbeat", "joyful", "energetic", "bright", "summer"),
    "tense": ("tense", "angry", "aggressive", "hard", "menacing", "evil"),
    "sad": ("sad", "melancholic", "melancholy", "lonely", "heartbreak", "emotional", "crying"),
    "calm": ("calm", "relaxed", "peaceful", "chill", "gentle", "soft", "sleepy"),
}
_PRODUCTION = "clean punchy mix, wide stereo, warm studio sound"


@dataclass(frozen=True, slots=True)
class EnhancedPrompt:
    text: str
    source: Literal["llm", "template"]
    #: Why the templates wrote it, for the user (None when the LLM did).
    note: str | None = None


def _guess(idea: str, words: dict[str, tuple[str, ...]]) -> str | None:
    """The preset whose words the idea names first (by position in the idea), or None."""
    found = []
    for key, options in words.items():
        positions = [m.start() for w in options for m in re.finditer(rf"\b{re.escape(w)}\b", idea, re.IGNORECASE)]
        if positions:
            found.append((min(positions), key))
    return min(found)[1] if found else None


def template_prompt(params: BeatParams) -> str:
    """The idea with the preset words it points at (or the user chose), the tempo and production words."""
    style = params.style or _guess(params.prompt, _STYLE_WORDS)
    mood = params.mood or _guess(params.prompt, _MOOD_WORDS)
    text = describe_music(prompt=params.prompt, style=style, mood=mood, bpm=params.bpm)
    return f"{text}, {_PRODUCTION}"


def _ask(client: ChatClient, params: BeatParams) -> str:
    """The LLM's prompt for ``params``, checked; raises :class:`LLMError` when it is unusable."""
    lines = [f"Idea: {params.prompt}"]
    if params.style:
        lines.append(f"Style to blend in: {STYLES[params.style].music}")
    if params.mood:
        mood = MOODS[params.mood]
        lines.append(f"Mood: {mood.music}, {mood.mode}")
    tempo = params.bpm or (MOODS[params.mood].bpm if params.mood else None)
    if tempo:
        lines.append(f"Tempo: exactly {tempo} bpm.")
    text = clean_llm_text(
        client.complete(system=_SYSTEM, user="\n".join(lines), max_tokens=200), max_chars=PROMPT_MAX_CHARS
    )
    if len(text.split()) < _MIN_WORDS:
        raise LLMError(f"the LLM's prompt is {len(text.split())} words long; at least {_MIN_WORDS} are needed")
    return fit_to_request(text, bpm=params.bpm) if params.bpm else text


def enhance_prompt(params: BeatParams, *, client: ChatClient | None) -> EnhancedPrompt:
    """The prompt MusicGen reads for an ✨ enhanced beat: the LLM's, else the presets', saying why."""
    note = "no LLM is configured"
    if client is not None:
        try:
            return EnhancedPrompt(_ask(client, params), "llm")
        except LLMError as exc:
            note = f"the LLM failed: {exc}"
            log.warning("LLM prompt enhancement failed; using the presets", extra={"reason": str(exc)})
    return EnhancedPrompt(template_prompt(params), "template", note)
