"""What a new job asks for, built from what users typed or from the beat it is made from (pure: no I/O).

Every model is validated here, at the boundary: a bad value becomes a private explanation in the words of the
command's options, before anything is recorded or queued.
"""

from __future__ import annotations

import random
import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from beatforge.bounds import MAX_DURATION_S, MAX_SEED, PROMPT_MAX_CHARS
from beatforge.contract import (
    ArtifactKind,
    AudioMeta,
    BeatParams,
    CoverParams,
    LoopJobParams,
    LoopParams,
    MidiParams,
    explain,
)
from beatforge.presets import MOODS, STYLES
from bot.errors import UserFacingError
from storage.artifacts import ArtifactRecord
from storage.jobs import JobView

M = TypeVar("M", bound=BaseModel)


def validated(schema: type[M], /, **fields: object) -> M:
    """Build a contract model from command options; bad input becomes a private explanation."""
    try:
        return schema.model_validate(fields)
    except ValidationError as exc:
        raise UserFacingError(f"Can't do that: {explain(exc)}.") from exc


def new_seed(highest: int = MAX_SEED) -> int:
    return random.randint(0, highest)


def beat_of(job: JobView) -> BeatParams:
    """A beat's own parameters. Callers found the job as a beat, so this only narrows the type."""
    if not isinstance(job.params, BeatParams):
        raise UserFacingError(f"There is no beat #{job.id} on this server.")
    return job.params


def parse_presets(text: str) -> tuple[str | None, str | None]:
    """ "dark-trap, sad" (keys or labels, any order, any case) → (style, mood), for the 📝 Edit form."""
    style = mood = None
    for word in filter(None, (w.strip().lower() for w in re.split(r"[,/;]", text))):
        styles = {k for k, s in STYLES.items() if word in (k, s.label.lower())}
        moods = {k for k, m in MOODS.items() if word in (k, m.label.lower())}
        if styles:
            style = styles.pop()
        elif moods:
            mood = moods.pop()
        else:
            raise UserFacingError(
                f"{word!r} is neither a style nor a mood. Styles: {', '.join(STYLES)}; moods: {', '.join(MOODS)}."
            )
    return style, mood


def reroll(original: JobView) -> BeatParams:
    """Same settings (best of N included), on the model that made it, with a new seed."""
    return beat_of(original).model_copy(update={"seed": new_seed(), "model": original.model_name})


def cover(original: JobView, *, style: str | None = None, mood: str | None = None) -> CoverParams:
    """A new cover from the beat's words; another style or mood changes its look."""
    p = beat_of(original)
    return validated(
        CoverParams, prompt=p.prompt, title=p.title, style=style or p.style, mood=mood or p.mood, seed=new_seed()
    )


def loop(original: JobView, take: int) -> LoopJobParams:
    """A loop of one take: a /loop beat's own loop settings, else the beat's tempo."""
    p = beat_of(original)
    return validated(
        LoopJobParams,
        prompt=p.prompt,
        style=p.style,
        mood=p.mood,
        title=p.title,
        seed=p.seed,
        take=take,
        loop=p.loop or LoopParams(target_bpm=p.bpm),
    )


def midi(original: JobView, take: int, *, stems: bool) -> MidiParams:
    p = beat_of(original)
    return validated(
        MidiParams, prompt=p.prompt, style=p.style, mood=p.mood, title=p.title, seed=p.seed, take=take, stems=stems
    )


def _take_audio(original: JobView, take: int) -> ArtifactRecord:
    return [a for a in original.artifacts if a.kind is ArtifactKind.AUDIO][take - 1]


def take_seconds(original: JobView, take: int) -> float:
    """How long a take is: the beat's new seconds, after the audio it continued when it was an extend."""
    continued = AudioMeta.model_validate(_take_audio(original, take).meta or {}).continued_s
    return beat_of(original).duration_s + (continued or 0.0)


def remix(original: JobView, take: int, *, prompt: str, strength: float) -> BeatParams:
    """One take re-imagined in new words, as long as the take, at its tempo, key and metre.

    It names no model: the server's (or the worker's default) runs it, not the one that made the take, which
    may be an engine that cannot remix; the refusal before queueing says so when the chosen one cannot either.
    """
    p = beat_of(original)
    seconds = take_seconds(original, take)
    if seconds > MAX_DURATION_S:
        raise UserFacingError(
            f"Take {take} of beat #{original.id} is {seconds:g} s long; a remix can be at most {MAX_DURATION_S:g} s."
        )
    return validated(
        BeatParams,
        prompt=prompt,
        title=p.title,
        duration_s=seconds,
        bpm=p.bpm,
        key=p.key,
        time_signature=p.time_signature,
        remix_from=_take_audio(original, take).path,
        remix_strength=strength,
        seed=new_seed(),
    )


def extend(original: JobView, take: int, seconds: float) -> BeatParams:
    """``seconds`` more of one take, on the model that made it: one take, no loop, no melody.

    An ✨ enhanced take is continued from the very prompt it was made from, not from a newly written one.
    """
    audio = _take_audio(original, take)
    used = AudioMeta.model_validate(audio.meta or {}).prompt_used
    words: dict[str, object] = {"prompt": used, "style": None, "mood": None, "enhance": False}
    update = {
        **(words if used and len(used) <= PROMPT_MAX_CHARS else {}),
        "continue_from": audio.path,
        "duration_s": seconds,
        "seed": new_seed(),
        "takes": 1,
        "best_of": None,  # one continuation of the chosen take
        "loop": None,
        "melody": None,
        "remix_from": None,  # an extend of a remix continues the remix's own audio
        "remix_strength": None,
        "model": original.model_name,
    }
    # Validated as a whole, so no mix of settings the contract forbids reaches the queue.
    return validated(BeatParams, **{**beat_of(original).model_dump(), **update})


def edit(
    original: JobView, *, prompt: str, presets: str, duration_s: float, bpm: int | None, seed: int | None
) -> BeatParams:
    """The 📝 form's settings, with the beat's title, takes (and best of N), sampling, key and metre, on the model
    that made it.

    (The form holds Discord's most of five inputs already, so key and metre are kept rather than edited.)
    """
    style, mood = parse_presets(presets)
    p = beat_of(original)
    return validated(
        BeatParams,
        prompt=prompt,
        style=style,
        mood=mood,
        duration_s=duration_s,
        bpm=bpm,
        seed=new_seed() if seed is None else seed,
        title=p.title,
        takes=p.takes,
        best_of=p.best_of,
        sampling=p.sampling,
        enhance=p.enhance,
        key=p.key,
        time_signature=p.time_signature,
        model=original.model_name,
    )
