"""Prompts for bulk "auto" mode: an LLM writes varied prompts for a use case, or templates do.

The LLM's answer is untrusted: it must be a JSON array of strings (structured output asks for
``{"prompts": [...]}``; a server that ignores the schema may answer a bare array), each a sane length
with no control characters, or it is thrown away and the templates take over (and say so).

Every prompt carries the requested tempo (and key): MusicGen follows the words, and the loop cutter
and the file names follow ``--bpm``, so a prompt saying "80 bpm" for a 100 bpm batch makes loops
that fit neither. The LLM is asked for the tempo, and its answers are corrected where they name another.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Literal

from beatforge.bounds import PROMPT_MAX_CHARS
from beatforge.prompt_words import fit_to_request, normalize_key
from generation.prompts.llm import ChatClient, LLMError, clean_llm_text

log = logging.getLogger(__name__)

MAX_COUNT = 500
_GENRES = (
    "lofi hip hop", "orchestral fantasy", "chiptune", "synthwave", "ambient electronic", "jazz trio", "trap",
    "celtic folk", "drum and bass", "downtempo", "piano ballad", "funk", "cinematic", "house", "acoustic guitar",
)  # fmt: skip
_MOODS = ("calm", "uplifting", "tense", "mysterious", "melancholic", "heroic", "playful", "dreamy", "driving")
_INSTRUMENTS = (
    "soft piano", "warm analog synth pads", "plucked strings", "808 bass", "brushed drums", "flute", "marimba",
    "electric piano", "string ensemble", "arpeggiated synth", "acoustic guitar", "choir pads", "tight breakbeat",
)  # fmt: skip

_SYSTEM = (
    "You write text prompts for MusicGen, a model that generates instrumental music. Each prompt is one "
    "sentence of 10 to 40 words naming genre, mood, instruments and tempo in bpm, suitable for a seamless "
    'loop. Answer ONLY with JSON, no prose: an object whose "prompts" member is an array of strings.'
)
#: Structured output (OpenAI ``response_format``); the root must be an object for strict schemas.
PROMPTS_SCHEMA: dict[str, Any] = {
    "name": "loop_prompts",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"prompts": {"type": "array", "items": {"type": "string"}}},
        "required": ["prompts"],
        "additionalProperties": False,
    },
}


@dataclass(frozen=True, slots=True)
class PromptPlan:
    prompts: tuple[str, ...]
    source: Literal["llm", "templates"]
    note: str | None = None  # why the templates were used, for the user


def template_prompts(
    *, use_case: str, count: int, rng: random.Random, bpm: int | None = None, key: str | None = None
) -> list[str]:
    """Varied prompts from genre × mood × instruments × tempo, flavoured by the use case.

    The tempo is ``bpm`` when given (random otherwise); ``key`` (normalized) is named when given.
    """
    prompts = []
    for _ in range(count):
        a, b = rng.sample(_INSTRUMENTS, 2)
        tempo = bpm if bpm is not None else rng.randrange(70, 150, 2)
        in_key = f" in {key}" if key else ""
        prompts.append(
            f"{rng.choice(_MOODS)} {rng.choice(_GENRES)} loop{in_key} with {a} and {b}, {tempo} bpm, "
            f"for {use_case.strip().rstrip('.').lower()}"
        )
    return prompts


def _structured_items(text: str) -> object:
    """The ``prompts`` member of a schema-following answer, or None when the answer is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data.get("prompts") if isinstance(data, dict) else None


def parse_llm_prompts(answer: str, *, count: int, bpm: int | None = None, key: str | None = None) -> list[str]:
    """Validate the LLM's answer: at least ``count`` usable strings, fitted to the requested tempo and key.

    The answer is ``{"prompts": [...]}`` when the server honoured the schema; otherwise the first JSON
    array in it (servers that ignore ``response_format`` wrap arrays in prose and code fences).

    Raises:
        LLMError: not JSON, not an array of strings, or too few usable prompts.
    """
    text = answer.strip()
    items = _structured_items(text)
    if items is None:
        start, end = text.find("["), text.rfind("]")
        if start < 0 or end < start:
            raise LLMError("the LLM did not answer with a JSON array")
        try:
            items = json.loads(text[start : end + 1])
        except json.JSONDecodeError as exc:
            raise LLMError(f"the LLM's JSON array does not parse ({exc.msg})") from exc
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise LLMError("the LLM's answer is not an array of strings")
    prompts = []
    for item in items:
        try:
            prompt = clean_llm_text(item, max_chars=PROMPT_MAX_CHARS)
        except LLMError as exc:
            log.info("dropping an unusable LLM prompt", extra={"reason": str(exc)})
            continue
        fitted = fit_to_request(prompt, bpm=bpm, key=key)
        if fitted != prompt:
            log.info("corrected an LLM prompt to the requested tempo/key", extra={"prompt": prompt})
        if len(prompt.split()) >= 3 and len(fitted) <= PROMPT_MAX_CHARS:
            prompts.append(fitted)
    if len(prompts) < count:
        raise LLMError(f"the LLM gave {len(prompts)} usable prompts; {count} were asked for")
    return prompts[:count]


def plan_prompts(
    *, use_case: str, count: int, client: ChatClient | None, seed: int, bpm: int | None = None, key: str | None = None
) -> PromptPlan:
    """Ask the LLM when one is configured; fall back to templates on any failure, saying why.

    Every prompt names ``bpm`` (and ``key``) when given.

    Raises:
        ValueError: ``count`` out of range, an empty use case, or ``key`` not a key name.
    """
    if key is not None:
        key = normalize_key(key)
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count={count} must be between 1 and {MAX_COUNT}")
    if not use_case.strip():
        raise ValueError("the use case is empty: say what the loops are for, e.g. 'background music for RPG levels'")
    rng = random.Random(seed)
    note = "no LLM is configured (BEATFORGE_LLM_BASE_URL), so built-in templates wrote the prompts"
    if client is not None:
        lines = [f"Use case: {use_case.strip()}"]
        if bpm is not None:
            lines.append(f"Tempo: every prompt must say exactly {bpm} bpm, no other tempo.")
        if key is not None:
            lines.append(f"Key: every prompt must say it is in {key}.")
        lines.append(f"Write {count} varied prompts.")
        try:
            answer = client.complete(
                system=_SYSTEM, user="\n".join(lines), max_tokens=min(4000, 80 * count + 100), schema=PROMPTS_SCHEMA
            )
            return PromptPlan(tuple(parse_llm_prompts(answer, count=count, bpm=bpm, key=key)), "llm")
        except LLMError as exc:
            note = f"the LLM failed ({exc}), so built-in templates wrote the prompts"
            log.warning("LLM prompt planning failed; using templates", extra={"reason": str(exc)})
    prompts = template_prompts(use_case=use_case, count=count, rng=rng, bpm=bpm, key=key)
    return PromptPlan(tuple(prompts), "templates", note)
