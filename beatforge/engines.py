"""What each music engine can do, and what its weights' licence lets a user do with a beat: one table for all sides.

The bot decides its options and refusals from it before a job is queued (it never imports the engines), the
worker checks a job against it again before generating, and the engines themselves declare their capabilities
from it (``generation/music/musicgen.py``, ``generation/music/acestep.py``), so the three cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

EngineName = Literal["musicgen", "acestep"]
ENGINE_NAMES: Final[tuple[str, ...]] = get_args(EngineName)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one engine does natively; a model adds whether it follows a melody (``ModelInfo.melody``)."""

    #: The engine's own name for people: "MusicGen", "ACE-Step 1.5".
    label: str
    #: The longest beat it makes (MusicGen continues window by window; ACE-Step makes the whole song at once).
    max_duration_s: float
    #: Tempo, key and time signature are conditioning inputs, not just words in the prompt.
    native_controls: bool
    #: ⏩ Extend continues a take: by its codec's tokens (MusicGen) or by repainting new time after it (ACE-Step).
    extend: bool
    #: /remix: re-imagine existing audio in a new style, with a strength (an audio-to-audio path).
    remix: bool
    #: LoRA adapters from the registry.
    lora: bool


ENGINES: Final[dict[str, Capabilities]] = {
    "musicgen": Capabilities(
        label="MusicGen", max_duration_s=120.0, native_controls=False, extend=True, remix=False, lora=True
    ),
    "acestep": Capabilities(
        label="ACE-Step 1.5", max_duration_s=240.0, native_controls=True, extend=True, remix=True, lora=True
    ),
}


def capabilities(engine: str) -> Capabilities:
    """An engine's capabilities; an engine this version does not know (a newer worker's) gets MusicGen's."""
    return ENGINES.get(engine, ENGINES["musicgen"])


def refusal(
    engine: str,
    *,
    model: str,
    duration_s: float,
    remix: bool = False,
) -> str | None:
    """Why a beat cannot run on ``model`` (an ``engine`` model), in words for its user; None when it can.

    (A melody needs a melody model: that is a property of the model, checked where the models are listed.)
    """
    caps = capabilities(engine)
    if duration_s > caps.max_duration_s:
        return (
            f"`{model}` ({caps.label}) makes beats of up to {caps.max_duration_s:g} s; "
            f"{duration_s:g} s is too long for it."
        )
    if remix and not caps.remix:
        remixers = ", ".join(e.label for e in ENGINES.values() if e.remix)
        return (
            f"`{model}` ({caps.label}) cannot remix audio; a server admin can switch to a model that can ({remixers})."
        )
    return None


@dataclass(frozen=True, slots=True)
class Licence:
    """What a licence means for someone who wants to sell or release a beat."""

    #: True: commercial use allowed; False: not allowed; None: unknown (check before selling).
    commercial: bool | None
    #: The provenance line shown with every result, e.g. "MIT: you may use this commercially".
    line: str


_NON_COMMERCIAL = ("-nc", " nc", "non-commercial", "noncommercial", "research only")
_PERMISSIVE = ("mit", "apache", "bsd", "cc0", "cc-by 4.0", "cc-by-4.0", "cc-by-sa", "openrail")


def licence_terms(licence: str) -> Licence:
    """Read a registry entry's licence string ("MIT", "CC-BY-NC 4.0 (non-commercial)", "unknown", ...)."""
    text = licence.strip()
    lowered = f" {text.lower()}"
    short = text.split(" (")[0] or "unknown licence"
    if any(marker in lowered for marker in _NON_COMMERCIAL):
        return Licence(False, f"{short}: non-commercial use only")
    if any(lowered.lstrip().startswith(name) for name in _PERMISSIVE):
        return Licence(True, f"{short}: you may use this commercially")
    if "random weights" in lowered or "none needed" in lowered:
        return Licence(True, f"{text}: test output, use it as you like")
    return Licence(None, f"licence {short if text else 'unknown'}: check it before you sell or release this")
