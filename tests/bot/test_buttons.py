"""How a button press reaches the code that answers it, tested without Discord: the custom_id carries the
action, the handler registered for the client runs it, and ``JobActions.press`` picks the action's method by
its ``ButtonAction`` (no name in a string, no cog looked up)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.actions import JobActions
from bot.buttons import LOOKS, ButtonAction, JobButton, answer_presses, stop_answering
from bot.errors import UNEXPECTED_TEXT, UserFacingError


async def built(custom_id: str) -> JobButton:
    """The button discord.py builds when a message's button with ``custom_id`` is pressed."""
    match = JobButton.__discord_ui_compiled_template__.fullmatch(custom_id)
    assert match is not None, custom_id
    return await JobButton.from_custom_id(None, None, match)  # type: ignore[arg-type]


class Client:
    """Stands in for the bot: presses are answered per client, and nothing else of it is used."""

    def __init__(self) -> None:
        self.dynamic: list[type[Any]] = []

    def add_dynamic_items(self, *items: type[Any]) -> None:
        self.dynamic += items

    def remove_dynamic_items(self, *items: type[Any]) -> None:
        self.dynamic = [i for i in self.dynamic if i not in items]


@dataclass
class Response:
    sent: list[tuple[str, bool]] = field(default_factory=list)

    def is_done(self) -> bool:
        return False

    async def send_message(self, content: str, *, ephemeral: bool = False) -> None:
        self.sent.append((content, ephemeral))


@dataclass
class Interaction:
    client: Client
    response: Response = field(default_factory=Response)


@pytest.mark.parametrize("action", list(ButtonAction))
async def test_every_action_round_trips_through_its_custom_id(action: ButtonAction) -> None:
    take = 2 if LOOKS[action].per_take else None
    sent = JobButton(action, 12, take)
    assert sent.custom_id == f"bf:{action.value}:12" + (":2" if take else "")  # what old messages carry
    pressed = await built(sent.custom_id)
    assert (pressed.action, pressed.job_id, pressed.take) == (action, 12, take)
    assert pressed.action is action  # the enum member itself, not a string


async def test_a_press_runs_the_handler_registered_for_its_client_and_only_that_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mine, other = Client(), Client()
    pressed: list[tuple[Interaction, JobButton]] = []

    async def handler(interaction: Any, button: JobButton) -> None:
        pressed.append((interaction, button))

    answer_presses(mine, JobButton, handler)  # type: ignore[arg-type]
    assert mine.dynamic == [JobButton] and other.dynamic == []
    interaction = Interaction(mine)
    button = await built("bf:keep:5")
    await button.callback(interaction)  # type: ignore[arg-type]
    assert pressed == [(interaction, button)]

    # Another client has no handler: a bug, logged, and the presser still gets an answer.
    unanswered = Interaction(other)
    with caplog.at_level(logging.ERROR, logger="bot.errors"):
        await button.callback(unanswered)  # type: ignore[arg-type]
    assert unanswered.response.sent == [(UNEXPECTED_TEXT, True)]
    (logged,) = [r for r in caplog.records if r.getMessage() == "JobButton button failed"]
    assert logged.exc_info is not None and "no handler for JobButton" in str(logged.exc_info[1])
    stop_answering(mine, JobButton)  # type: ignore[arg-type]
    assert mine.dynamic == []
    await button.callback(interaction)  # type: ignore[arg-type]
    assert interaction.response.sent == [(UNEXPECTED_TEXT, True)] and len(pressed) == 1


async def test_a_refusal_from_the_handler_is_answered_privately() -> None:
    client = Client()

    async def refuse(interaction: Any, button: JobButton) -> None:
        raise UserFacingError(f"no #{button.job_id} for you")

    answer_presses(client, JobButton, refuse)  # type: ignore[arg-type]
    interaction = Interaction(client)
    await (await built("bf:reroll:3")).callback(interaction)  # type: ignore[arg-type]
    assert interaction.response.sent == [("⚠️ no #3 for you", True)]
    stop_answering(client, JobButton)  # type: ignore[arg-type]


class Recording(JobActions):
    """The real ``press``; every action it can pick records its call instead of acting."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    async def reroll(self, interaction: Any, beat_id: int) -> None:
        self._record("reroll", beat_id)

    async def make_loop(self, interaction: Any, beat_id: int, take: int = 1) -> None:
        self._record("make_loop", beat_id, take)

    async def make_midi(self, interaction: Any, beat_id: int, take: int = 1, *, stems: bool = False) -> None:
        self._record("make_midi", beat_id, take, stems)

    async def redraw_cover(self, interaction: Any, beat_id: int, *, style: Any = None, mood: Any = None) -> None:
        self._record("redraw_cover", beat_id)

    async def toggle_keep(self, interaction: Any, job_id: int) -> None:
        self._record("toggle_keep", job_id)

    async def extend(self, interaction: Any, beat_id: int, take: int = 1) -> None:
        self._record("extend", beat_id, take)

    async def open_remix(self, interaction: Any, beat_id: int, take: int = 1) -> None:
        self._record("open_remix", beat_id, take)

    async def edit(self, interaction: Any, beat_id: int) -> None:
        self._record("edit", beat_id)

    async def cancel(self, interaction: Any, job_id: int) -> None:
        self._record("cancel", job_id)


@pytest.mark.parametrize(
    ("custom_id", "call"),
    [
        ("bf:reroll:4", ("reroll", (4,))),
        ("bf:loop:4", ("make_loop", (4, 1))),
        ("bf:loop:4:3", ("make_loop", (4, 3))),
        ("bf:midi:4:2", ("make_midi", (4, 2, False))),
        ("bf:cover:4", ("redraw_cover", (4,))),
        ("bf:keep:4", ("toggle_keep", (4,))),
        ("bf:extend:4:2", ("extend", (4, 2))),
        ("bf:remix:4:3", ("open_remix", (4, 3))),
        ("bf:edit:4", ("edit", (4,))),
        ("bf:cancel:4", ("cancel", (4,))),
    ],
)
async def test_press_picks_the_action_of_the_button(custom_id: str, call: tuple[str, tuple[Any, ...]]) -> None:
    actions = Recording()
    await actions.press(Interaction(Client()), await built(custom_id))  # type: ignore[arg-type]
    assert actions.calls == [call]


def test_every_action_has_a_look_and_the_template_knows_it() -> None:
    assert set(LOOKS) == set(ButtonAction)
    for action in ButtonAction:
        assert re.fullmatch(JobButton.__discord_ui_compiled_template__, f"bf:{action.value}:1")
