"""User text in, user sentences out: how prompts are cleaned, and how a refused request is explained."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationError

from beatforge.bounds import PROMPT_MAX_CHARS, TITLE_MAX_CHARS
from beatforge.presets import MOODS, STYLES

_MENTION = re.compile(r"@(everyone|here)|<@[!&]?\d+>|<#\d+>", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Make user text safe to feed the model and to echo back into Discord.

    Control and format characters are dropped (they confuse tokenizers and can hide text),
    mentions are defused so echoing the prompt can never ping anyone even if a message
    forgot its ``allowed_mentions``, and whitespace runs collapse to one space.
    """
    kept = "".join(" " if ch in "\t\n\r" else ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch)[0] != "C")
    # Defused with visible look-alikes, not invisible characters, so cleaning twice changes nothing.
    kept = _MENTION.sub(
        lambda m: m.group(0).replace("<", "‹") if m.group(0).startswith("<") else "＠" + m.group(1), kept
    )
    kept = _SPACES.sub(" ", kept).strip()
    if not kept:
        raise ValueError("is empty: describe the beat, e.g. 'dark trap, 808s, 140 bpm'")
    return kept


Prompt = Annotated[str, AfterValidator(clean_prompt), Field(max_length=PROMPT_MAX_CHARS)]
#: Set on the cover as typography.
Title = Annotated[str, AfterValidator(clean_prompt), Field(max_length=TITLE_MAX_CHARS)]


def _known(table: Mapping[str, object], what: str) -> AfterValidator:
    def check(key: str | None) -> str | None:
        if key is not None and key not in table:
            raise ValueError(f"{key!r} is not a known {what}; choose one of: {', '.join(table)}")
        return key

    return AfterValidator(check)


StyleKey = Annotated[str | None, _known(STYLES, "style")]
MoodKey = Annotated[str | None, _known(MOODS, "mood")]


_FIELD_NAMES = {
    "duration_s": "duration",
    "params": "parameters",
    "cover_size": "size",
    "min_duration_s": "min_duration",
    "max_duration_s": "max_duration",
    "target_bpm": "bpm",
}


def explain(exc: ValidationError) -> str:
    """One short sentence per problem, in the words of the command's options, for users to read."""
    parts = []
    for error in exc.errors():
        field = ".".join(_FIELD_NAMES.get(str(loc), str(loc)) for loc in error["loc"])
        ctx = error.get("ctx", {})
        match error["type"]:
            case "too_long" | "string_too_long":
                message = f"is {len(error['input'])} characters long; the limit is {ctx['max_length']}"
            case "less_than_equal":
                message = f"must be at most {ctx['le']}"
            case "greater_than_equal":
                message = f"must be at least {ctx['ge']}"
            case _:
                message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{field} {message}" if field else message)
    return "; ".join(parts)
