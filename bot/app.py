"""The bot process: discord.py client, queue client and database, and nothing from the ML stack."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from beatforge.config import Settings
from beatforge.queue import connect
from bot.errors import BeatforgeTree
from bot.file_server import FileServer
from bot.links import expiry, make_link
from bot.views import JobButton
from migrations.runner import upgrade_locked
from storage.artifacts import ArtifactStore
from storage.db import make_engine, make_sessionmaker

if TYPE_CHECKING:
    from arq.connections import ArqRedis
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.cogs.generate",
    "bot.cogs.watcher",
    "bot.cogs.reactions",
    "bot.cogs.admin",
    "bot.cogs.history",
    "bot.cogs.queue",
)


class Beatforge(commands.Bot):
    def __init__(
        self,
        *,
        settings: Settings,
        redis: ArqRedis,
        sessions: async_sessionmaker[AsyncSession],
        sync_commands: bool = True,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            tree_cls=BeatforgeTree,
            # Prompts are user text echoed back: nothing the bot posts may ever ping anyone.
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings, self.redis, self.sessions = settings, redis, sessions
        self.store = ArtifactStore(settings.artifact_dir)
        self.sync_commands = sync_commands
        #: Interactions of jobs this process queued, for edits and follow-ups while their token lives.
        self.live_interactions: dict[int, discord.Interaction] = {}
        #: The text each job's status message shows now, so unchanged progress costs no API call.
        self.status_shown: dict[int, str] = {}
        #: Serves download links for files over Discord's upload limit; runs only with settings.public_url.
        self.file_server: FileServer | None = None

    async def setup_hook(self) -> None:
        await self._start_file_server()
        self.add_dynamic_items(JobButton)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if not self.sync_commands:
            return
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("commands synced", extra={"count": len(synced), "guild_id": self.settings.dev_guild_id})

    async def _start_file_server(self) -> None:
        settings = self.settings
        if settings.public_url is None or settings.link_secret is None:
            return
        server = FileServer(
            self.store, secret=settings.link_secret.get_secret_value(), host=settings.http_host, port=settings.http_port
        )
        try:
            await server.start()
        except OSError as exc:  # e.g. the port is taken: the bot still runs, big files get no link
            log.error(
                "file server could not start; download links are off",
                extra={"host": settings.http_host, "port": settings.http_port, "error": repr(exc)},
            )
            return
        self.file_server = server

    def download_link(self, relative_path: str) -> tuple[str, int] | None:
        """A signed link to an artifact and the unix second it expires, or None when links are off."""
        settings = self.settings
        if self.file_server is None or settings.public_url is None or settings.link_secret is None:
            return None
        now, ttl = time.time(), settings.link_ttl_hours * 3600
        secret = settings.link_secret.get_secret_value()
        return make_link(settings.public_url, relative_path, secret=secret, ttl=ttl, now=now), expiry(ttl, now=now)

    async def close(self) -> None:
        watcher = self.get_cog("JobWatcher")
        if watcher is not None:  # before the database and redis go away (run_bot closes them after this)
            await watcher.finish()  # type: ignore[attr-defined]
        try:
            await super().close()
        finally:
            if self.file_server is not None:
                server, self.file_server = self.file_server, None
                await server.stop()


async def run_bot(settings: Settings) -> int:
    if settings.discord_token is None:
        sys.stderr.write("beatforge: set BEATFORGE_DISCORD_TOKEN (see .env.example) to run the bot\n")
        return 2
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    engine = make_engine(settings.database_url)
    redis = await connect(settings)
    try:
        async with Beatforge(settings=settings, redis=redis, sessions=make_sessionmaker(engine)) as bot:
            await bot.start(settings.discord_token.get_secret_value())
    finally:
        await redis.aclose()
        await engine.dispose()
    return 0
