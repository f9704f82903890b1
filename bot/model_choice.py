"""Which music model a beat runs on, decided in one place.

The server's choice (``/admin model use``) comes first; without one the beat names no model and the worker
runs its default. What that default is, the bot learns from the workers (``beatforge.fleet``: each one
publishes its registry and default at start-up); until a worker has reported, the bot's own setting stands in.
The queue's estimates and the melody check both ask here, so they agree on it.
"""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.contract import BeatParams, PackParams
from beatforge.fleet import ModelInfo
from storage.guilds import GuildSettings
from storage.model_registry import other_servers_models

#: What workers reported: their models and their default (``beatforge.fleet.read_models``), or None.
Reported = tuple[list[ModelInfo], str] | None


async def server_models(sessions: async_sessionmaker[AsyncSession], reported: Reported, guild_id: int) -> Reported:
    """What workers reported, less the models trained for other servers (/admin train): a server neither lists
    nor picks another's."""
    if reported is None:
        return None
    async with sessions() as session:
        hidden = await other_servers_models(session, guild_id)
    return [m for m in reported[0] if m.name not in hidden], reported[1]


def default_model(reported: Reported, settings: Settings) -> str:
    """The model a beat that names none runs on."""
    return reported[1] if reported is not None else settings.default_model


Generated = TypeVar("Generated", BeatParams, PackParams)


def with_server_model(params: Generated, guild: GuildSettings | None) -> Generated:
    """The beat (or pack) on the server's chosen model, unless it names its own (a re-roll keeps the model it
    ran on)."""
    if params.model is None and guild is not None and guild.model is not None:
        return params.model_copy(update={"model": guild.model})
    return params


def model_of(params: BeatParams, reported: Reported, settings: Settings) -> str:
    """The model a beat will run on."""
    return params.model or default_model(reported, settings)
