"""Who counts as a server's admin: one rule for /admin, buttons, reactions and /history."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

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


def is_admin(interaction: discord.Interaction, owner_ids: Collection[int]) -> bool:
    return member_is_admin(interaction.user, owner_ids, interaction.permissions)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for something to be done to a job: the user, and whether they are an admin where they ask."""

    user: discord.abc.User
    admin: bool

    @classmethod
    def of(cls, interaction: discord.Interaction, owner_ids: Collection[int]) -> Actor:
        """The user of a command, button or form, with the permissions Discord resolved for it."""
        return cls(interaction.user, is_admin(interaction, owner_ids))

    @classmethod
    def of_member(cls, member: discord.Member, owner_ids: Collection[int]) -> Actor:
        """The member behind an event without an interaction (a reaction): their roles decide."""
        return cls(member, member_is_admin(member, owner_ids))
