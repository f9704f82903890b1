"""Who counts as a server's admin: one rule for /admin, buttons, reactions and /history."""

from __future__ import annotations

from collections.abc import Collection

import discord


def member_is_admin(
    user: discord.abc.User, owner_ids: Collection[int], permissions: discord.Permissions | None = None
) -> bool:
    """Manage Server, or one of the bot's owners (who may lack it on servers they help with).

    ``permissions``: what Discord resolved for an interaction (the authority there); a reaction event
    carries none, so there the member's cached roles (and server ownership) decide.
    """
    if user.id in owner_ids:
        return True
    if permissions is None:
        permissions = user.guild_permissions if isinstance(user, discord.Member) else discord.Permissions.none()
    return permissions.manage_guild


def is_admin(interaction: discord.Interaction) -> bool:
    settings = interaction.client.settings  # type: ignore[attr-defined]
    return member_is_admin(interaction.user, settings.owner_ids, interaction.permissions)
