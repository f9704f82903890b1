"""How command errors reach users: our own errors as ephemeral replies, anything else logged with context."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import cast

import discord
from discord import app_commands

log = logging.getLogger(__name__)


class UserFacingError(app_commands.AppCommandError):
    """An error whose message is written for the user and is safe to show as is."""


class NotYours(UserFacingError):
    """The job is someone else's, and this user may not act on it (not an admin there)."""


async def reply_privately(interaction: discord.Interaction, content: str) -> None:
    """Answer ephemerally whether or not the interaction was already answered or deferred."""
    if not interaction.response.is_done():
        await interaction.response.send_message(content, ephemeral=True)
    elif interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
        # After a public defer the first follow-up takes the deferral's visibility, so fill it in instead.
        await interaction.edit_original_response(content=content)
    else:
        await interaction.followup.send(content, ephemeral=True)


#: What a user sees when something we did not foresee went wrong (the details are in the log, not the reply).
UNEXPECTED_TEXT = "💥 Something went wrong on our side. It has been logged; please try again."


async def answer_privately(interaction: discord.Interaction, content: str) -> bool:
    """``reply_privately`` for error paths, which must never raise themselves: a failure is logged instead.

    Returns whether the answer reached Discord.
    """
    try:
        await reply_privately(interaction, content)
    except discord.HTTPException as exc:  # an expired token, Discord down: nothing left to answer through
        log.warning(
            "could not answer the user",
            extra={**interaction_context(interaction), "status": exc.status, "error": repr(exc)},
        )
        return False
    except Exception:  # e.g. the HTTP session closed under us at shutdown: logged, and the handler still returns
        log.exception("answering the user failed", extra=interaction_context(interaction))
        return False
    return True


def _loggable(value: object) -> object:
    """An option value as the JSON log can hold it: Discord objects by id, anything else as its repr."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, discord.abc.Snowflake):
        return f"{type(value).__name__}:{value.id}"
    return repr(value)[:200]


def interaction_context(interaction: discord.Interaction) -> dict[str, object]:
    """Who did what where, for an error's log line; built so that it cannot fail (it runs while handling one).

    ``dict(interaction.namespace)`` looks natural but raises: ``Namespace`` answers None for any attribute,
    ``keys`` included, so ``dict`` takes it for a mapping and calls None.
    """
    context: dict[str, object] = {}
    try:
        context["interaction_id"] = interaction.id
        context["user_id"] = interaction.user.id
        context["guild_id"] = interaction.guild_id
        context["channel_id"] = interaction.channel_id
        command = interaction.command
        context["command"] = command.qualified_name if command is not None else None
        data = cast("Mapping[str, object]", interaction.data or {})
        if "custom_id" in data:  # a component's, which names the button pressed
            context["custom_id"] = data["custom_id"]
        context["options"] = {name: _loggable(value) for name, value in interaction.namespace}
    except Exception as exc:  # half a context beats none, and the user must still get an answer
        context["context_error"] = repr(exc)
    return context


async def report_unexpected(interaction: discord.Interaction, error: BaseException, *, where: str) -> None:
    """Log an error nobody foresaw with what the user was doing, and tell the user; never raises.

    ``where``: what failed (a command, a button), for the log.
    """
    log.error("%s failed", where, exc_info=error, extra=interaction_context(interaction))
    await answer_privately(interaction, UNEXPECTED_TEXT)


class BeatforgeTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Answer every failed command: ours in words, anything else with ``UNEXPECTED_TEXT``. It must not raise:
        discord.py only logs what escapes here, and the user would be left with "The application did not respond"."""
        if isinstance(error, UserFacingError):
            await answer_privately(interaction, f"⚠️ {error}")
        elif isinstance(error, app_commands.CheckFailure):
            await answer_privately(interaction, f"⛔ {error}")
        else:
            cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
            await report_unexpected(interaction, cause, where="command")
