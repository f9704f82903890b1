"""The words the diffusion model sees for a cover: preset look + the beat's description, minus text artefacts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from beatforge.presets import MOODS, STYLES
from generation.prompts.llm import ChatClient, clean_llm_text

#: Diffusion models love to scribble fake lettering on "album covers"; the title is set by us instead.
NEGATIVE_PROMPT = (
    "text, letters, words, typography, caption, watermark, signature, logo, frame, border, "
    "blurry, lowres, jpeg artifacts, deformed, disfigured, nsfw, nudity"
)
_BASE = "square album cover art, professional, highly detailed, striking composition"
MAX_PROMPT_WORDS = 60
_AUDIO_JARGON = re.compile(r"\b\d{2,3}\s*bpm\b|\bbpm\b|\b808s?\b|\b\d+(\.\d+)?\s*k?hz\b", re.IGNORECASE)
_EMPTY_CLAUSES = re.compile(r"(\s*,\s*)+")  # CLIP reads 77 tokens; keep room for the preset words


@dataclass(frozen=True, slots=True)
class CoverPrompt:
    prompt: str
    negative: str


def build_cover_prompt(*, description: str, style: str | None = None, mood: str | None = None) -> CoverPrompt:
    """Preset words first: CLIP truncates at 77 tokens, and the look matters more than the beat's tempo.

    Tempo and production words ("140 bpm", "808s") are dropped from the description: they mean
    nothing to an image model and push the look aside.
    """
    parts = [_BASE]
    if style:
        parts.append(STYLES[style].visual)
    if mood:
        parts.append(f"{MOODS[mood].visual} mood")
    text = _AUDIO_JARGON.sub("", description)
    text = " ".join(_EMPTY_CLAUSES.sub(", ", text).split()[:MAX_PROMPT_WORDS]).strip(" ,")
    if text:
        parts.append(f"inspired by: {text}")
    return CoverPrompt(prompt=", ".join(parts), negative=NEGATIVE_PROMPT)


_LLM_SYSTEM = (
    "You write prompts for an image model that paints album covers. Answer with ONE line of at most "
    "40 words describing only what is seen: subject, setting, colours, lighting, art style. "
    "Never ask for text, letters, logos or real people's faces. No quotes, no preamble."
)


def write_cover_prompt(
    client: ChatClient, *, description: str, style: str | None = None, mood: str | None = None
) -> CoverPrompt:
    """Let the LLM turn the beat's description into a scene; the template's negative prompt still applies.

    Raises:
        LLMError: the LLM failed or answered something unusable (callers fall back to the template).
    """
    brief = [f"Beat description: {description}"]
    if style:
        brief.append(f"Style: {STYLES[style].label} ({STYLES[style].visual})")
    if mood:
        brief.append(f"Mood: {MOODS[mood].label} ({MOODS[mood].visual})")
    answer = client.complete(system=_LLM_SYSTEM, user="\n".join(brief), max_tokens=120)
    scene = clean_llm_text(answer, max_chars=400)
    return CoverPrompt(prompt=f"{_BASE}, {scene}", negative=NEGATIVE_PROMPT)
