"""Buttons on results and status messages, and how a press reaches the code that answers it.

Each button's custom_id names its action, its job and, for per-take buttons, the take
(``bf:loop:12``, ``bf:extend:12:3``), so buttons keep working after a restart and after any time:
the job is looked up in the database when the button is pressed, and nothing is held in the bot.

discord.py builds a persistent button from its custom_id when it is pressed, so the code that answers is
registered with the button's class, per client: ``answer_presses(client, JobButton, actions.press)``. A press
then runs the handler registered for the client it arrived on; nothing is looked up by name, and a button can
be tested with any handler.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import discord

from beatforge.bounds import MAX_TAKES
from beatforge.contract import ArtifactKind, JobKind
from bot.errors import UserFacingError, answer_privately, report_unexpected
from storage.jobs import JobView

#: What a press runs: the interaction, and the button as built from its custom_id.
PressHandler = Callable[[discord.Interaction, Any], Awaitable[None]]


class Pressable(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!)"):
    """A persistent button answered by the handler registered for its client, refusals answered privately.

    Subclasses give their own custom_id template; this class's matches nothing, as it is never registered.
    """

    #: Per client (weakly: a closed bot's handler goes with it), what its presses run.
    handlers: ClassVar[weakref.WeakKeyDictionary[discord.Client, PressHandler]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.handlers = weakref.WeakKeyDictionary()

    async def callback(self, interaction: discord.Interaction) -> None:
        """Run the press's handler; whatever goes wrong, the presser gets an answer (components bypass the command
        tree's error handler, and discord.py would only log the error, leaving "This interaction failed")."""
        try:
            on_press = type(self).handlers.get(interaction.client)
            if on_press is None:
                raise RuntimeError(f"no handler for {type(self).__name__} on this client: see answer_presses")
            await on_press(interaction, self)
        except UserFacingError as exc:
            await answer_privately(interaction, f"⚠️ {exc}")
        except Exception as exc:
            await report_unexpected(interaction, exc, where=f"{type(self).__name__} button")


P = TypeVar("P", bound=Pressable)


def answer_presses(
    client: discord.Client, item: type[P], on_press: Callable[[discord.Interaction, P], Awaitable[None]]
) -> None:
    """From now on, presses of ``item`` buttons on ``client`` (old messages' too) run ``on_press``."""
    item.handlers[client] = on_press
    client.add_dynamic_items(item)


def stop_answering(client: discord.Client, item: type[Pressable]) -> None:
    item.handlers.pop(client, None)
    client.remove_dynamic_items(item)


class ButtonAction(StrEnum):
    """What a job button does; the value is its word in the custom_id, so it never changes."""

    REROLL = "reroll"
    LOOP = "loop"
    MIDI = "midi"
    COVER = "cover"
    KEEP = "keep"
    EXTEND = "extend"
    REMIX = "remix"
    EDIT = "edit"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Look:
    label: str
    emoji: str
    #: Pressed for one take of a beat (its custom_id carries the take).
    per_take: bool = False


LOOKS: dict[ButtonAction, Look] = {
    ButtonAction.REROLL: Look("Re-roll", "🔁"),
    ButtonAction.LOOP: Look("Loop", "➰", per_take=True),
    ButtonAction.MIDI: Look("MIDI", "🎹", per_take=True),
    ButtonAction.COVER: Look("New cover", "🖼️"),
    ButtonAction.KEEP: Look("Keep", "⭐"),
    ButtonAction.EXTEND: Look("Extend", "⏩", per_take=True),
    ButtonAction.REMIX: Look("Remix", "🎛️", per_take=True),
    ButtonAction.EDIT: Look("Edit", "📝"),
    ButtonAction.CANCEL: Look("Cancel", "❌"),
}


class JobButton(
    Pressable,
    template=rf"bf:(?P<action>{'|'.join(ButtonAction)}):(?P<job_id>\d+)(?::(?P<take>\d+))?",
):
    def __init__(self, action: ButtonAction, job_id: int, take: int | None = None, *, row: int | None = None) -> None:
        look = LOOKS[action]
        label = look.label if take is None else f"{look.label} take {take}"
        custom_id = f"bf:{action}:{job_id}" + (f":{take}" if take is not None else "")
        style = discord.ButtonStyle.danger if action is ButtonAction.CANCEL else discord.ButtonStyle.secondary
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, emoji=look.emoji, style=style, custom_id=custom_id, row=row
        )
        super().__init__(button)
        self.action, self.job_id, self.take = action, job_id, take

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,  # noqa: ARG003
        item: discord.ui.Item[Any],  # noqa: ARG003
        match: re.Match[str],
        /,
    ) -> JobButton:
        return cls(ButtonAction(match["action"]), int(match["job_id"]), int(match["take"]) if match["take"] else None)


A = ButtonAction
#: A beat with one take: everything in two rows.
ONE_TAKE_ROWS = ((A.REROLL, A.LOOP, A.MIDI, A.COVER, A.KEEP), (A.EXTEND, A.REMIX, A.EDIT))
#: A beat with several takes: a row for the beat, then a row per take.
BEAT_ROW, TAKE_ROW = (A.REROLL, A.COVER, A.KEEP, A.EDIT), (A.LOOP, A.MIDI, A.EXTEND, A.REMIX)
#: Under a loop, MIDI or cover: acting on the beat it came from.
PARENT_ROW = (A.LOOP, A.MIDI, A.COVER)


def result_view(job: JobView) -> discord.ui.View | None:
    """The buttons under a result.

    A beat gets re-roll, new cover, keep and edit, and loop / MIDI / extend / remix for each take (one row per
    take when there are several). A loop, MIDI or cover gets keep for itself and the loop / MIDI / cover
    buttons of the beat it came from; an uploaded file's MIDI has no beat, so only keep.
    """
    view = discord.ui.View(timeout=None)
    if job.kind is not JobKind.BEAT:
        view.add_item(JobButton(A.KEEP, job.id, row=0))
        if job.parent_id is not None:
            for action in PARENT_ROW:
                view.add_item(JobButton(action, job.parent_id, row=0))
        return view
    takes = min(MAX_TAKES, sum(1 for a in job.artifacts if a.kind is ArtifactKind.AUDIO))  # a message has 5 rows
    if takes <= 1:
        for row, actions in enumerate(ONE_TAKE_ROWS):
            for action in actions:
                view.add_item(JobButton(action, job.id, row=row))
        return view
    for action in BEAT_ROW:
        view.add_item(JobButton(action, job.id, row=0))
    for take in range(1, takes + 1):
        for action in TAKE_ROW:
            view.add_item(JobButton(action, job.id, take, row=take))
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    """The ❌ under a queued or running job's status message."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(A.CANCEL, job_id))
    return view
