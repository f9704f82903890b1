"""Prompts for bulk "auto" mode: an LLM writes varied prompts for a use case, or templates do.

The LLM's answer is untrusted: it must be a JSON array of strings, each a sane length with no
control characters, or it is thrown away and the templates take over (and say so).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Literal

from beatforge.bounds import PROMPT_MAX_CHARS
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
    "loop. Answer ONLY with a JSON array of strings, no prose."
)


@dataclass(frozen=True, slots=True)
class PromptPlan:
    prompts: tuple[str, ...]
    source: Literal["llm", "templates"]
    note: str | None = None  # why the templates were used, for the user


def template_prompts(*, use_case: str, count: int, rng: random.Random) -> list[str]:
    """Varied prompts from genre × mood × instruments × tempo, flavoured by the use case."""
    prompts = []
    for _ in range(count):
        a, b = rng.sample(_INSTRUMENTS, 2)
        prompts.append(
            f"{rng.choice(_MOODS)} {rng.choice(_GENRES)} loop with {a} and {b}, {rng.randrange(70, 150, 2)} bpm, "
            f"for {use_case.strip().rstrip('.').lower()}"
        )
    return prompts


def parse_llm_prompts(answer: str, *, count: int) -> list[str]:
    """Validate the LLM's answer: a JSON array of at least ``count`` usable strings.

    Raises:
        LLMError: not JSON, not an array of strings, or too few usable prompts.
    """
    text = answer.strip()
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
        if len(prompt.split()) >= 3:
            prompts.append(prompt)
    if len(prompts) < count:
        raise LLMError(f"the LLM gave {len(prompts)} usable prompts; {count} were asked for")
    return prompts[:count]


def plan_prompts(*, use_case: str, count: int, client: ChatClient | None, seed: int) -> PromptPlan:
    """Ask the LLM when one is configured; fall back to templates on any failure, saying why."""
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count={count} must be between 1 and {MAX_COUNT}")
    if not use_case.strip():
        raise ValueError("the use case is empty: say what the loops are for, e.g. 'background music for RPG levels'")
    rng = random.Random(seed)
    note = "no LLM is configured (BEATFORGE_LLM_BASE_URL), so built-in templates wrote the prompts"
    if client is not None:
        user = f"Use case: {use_case.strip()}\nWrite {count} varied prompts."
        try:
            answer = client.complete(system=_SYSTEM, user=user, max_tokens=min(4000, 80 * count + 100))
            return PromptPlan(tuple(parse_llm_prompts(answer, count=count)), "llm")
        except LLMError as exc:
            note = f"the LLM failed ({exc}), so built-in templates wrote the prompts"
            log.warning("LLM prompt planning failed; using templates", extra={"reason": str(exc)})
    return PromptPlan(tuple(template_prompts(use_case=use_case, count=count, rng=rng)), "templates", note)
