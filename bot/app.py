"""The bot process: discord.py client, queue client and database, and nothing from the ML stack.

``Beatforge`` is where the bot's parts are made and wired, once: the job service and the actions on top of it,
delivery and the job watcher, download links. Each cog gets the parts it uses from its extension's ``setup``;
nothing looks a part up on the bot later, and buttons reach their actions through
``bot.buttons.answer_presses``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import discord
from arq.connections import ArqRedis
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.queue import connect
from bot.actions import JobActions
from bot.buttons import JobButton, answer_presses
from bot.cogs.watcher import JobWatcher
from bot.delivery import Delivery
from bot.errors import BeatforgeTree
from bot.file_server import Downloads
from bot.jobs import JobService
from bot.results import ResultComposer
from bot.status import StatusBoard
from migrations.runner import upgrade_locked
from storage.artifacts import ArtifactStore
from storage.db import make_engine, make_sessionmaker

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
        self.sync_commands = sync_commands
        self.store = ArtifactStore(settings.artifact_dir)
        #: Serves download links for files over Discord's upload limit; runs only with settings.public_url.
        self.downloads = Downloads(self.store, settings)
        self.status_board = board = StatusBoard(self)
        self.jobs = JobService(sessions=sessions, redis=redis, settings=settings, store=self.store, status=board)
        self.actions = JobActions(self.jobs, board)
        composer = ResultComposer(self.store, self.downloads)
        self.delivery = delivery = Delivery(client=self, sessions=sessions, composer=composer, status=board)
        self.watcher = JobWatcher(sessions=sessions, redis=redis, settings=settings, status=board, delivery=delivery)

    async def setup_hook(self) -> None:
        await self.downloads.start()
        # Result and status buttons, also on messages posted before a restart (their custom_ids say it all).
        answer_presses(self, JobButton, self.actions.press)
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

    async def close(self) -> None:
        await self.watcher.finish()  # before the database and redis go away (run_bot closes them after this)
        try:
            await super().close()
        finally:
            await self.downloads.stop()


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
