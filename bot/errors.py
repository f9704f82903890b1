"""How command errors reach users: our own errors as ephemeral replies, anything else logged with context."""

from __future__ import annotations

import logging

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


class BeatforgeTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        if isinstance(error, UserFacingError):
            await reply_privately(interaction, f"⚠️ {error}")
            return
        if isinstance(error, app_commands.CheckFailure):
            await reply_privately(interaction, f"⛔ {error}")
            return
        command = interaction.command.qualified_name if interaction.command else None
        log.error(
            "command failed",
            exc_info=error.original if isinstance(error, app_commands.CommandInvokeError) else error,
            extra={"command": command, "user_id": interaction.user.id, "namespace": dict(interaction.namespace)},
        )
        try:
            await reply_privately(
                interaction, "💥 Something went wrong on our side. It has been logged; please try again."
            )
        except discord.HTTPException as exc:
            log.warning("could not report a command error to the user", extra={"status": exc.status})
