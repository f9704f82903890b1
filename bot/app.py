"""The bot process: discord.py client, queue client and database, and nothing from the ML stack.

``Beatforge`` is where the bot's parts are made and wired, once: the job service and the actions on top of it,
delivery and the job watcher, download links. Each cog gets the parts it uses from its extension's ``setup``;
nothing looks a part up on the bot later, and buttons reach their actions through
``bot.buttons.answer_presses``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import asdict
from typing import Any

import discord
from arq.connections import ArqRedis
from discord.ext import commands
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from beatforge.queue import connect
from bot.actions import JobActions
from bot.buttons import JobButton, answer_presses
from bot.cogs.watcher import JobWatcher
from bot.delivery import Delivery
from bot.edit_budget import EditBudget
from bot.errors import BeatforgeTree
from bot.file_server import Downloads
from bot.jobs import JobService
from bot.results import ResultComposer
from bot.status import StatusBoard
from migrations.runner import upgrade_locked
from storage.artifacts import ArtifactStore
from storage.backends import ArtifactBackendError, open_backend
from storage.db import make_engine, make_sessionmaker
from storage.reconcile import reconcile

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
            **self._shard_options(settings),
        )
        self.settings, self.redis, self.sessions = settings, redis, sessions
        self.sync_commands = sync_commands
        #: The one run of the orderly shutdown (``close``).
        self._shutdown: asyncio.Task[None] | None = None
        #: Where attached files are read from: the artifacts themselves, or (s3) this bot's download cache.
        self.store = ArtifactStore(settings.artifact_dir)
        #: Where finished files live for good (``BEATFORGE_ARTIFACT_BACKEND``); the composer fetches from it.
        self.artifacts = open_backend(settings, self.store)
        #: Links for files over Discord's upload limit: presigned with s3, else served by this bot (public_url).
        self.downloads = Downloads(self.store, settings, self.artifacts)
        self.status_board = board = StatusBoard(
            self, EditBudget(per_second=settings.status_edits_per_s, job_every_s=settings.status_edit_every_s)
        )
        self.jobs = JobService(
            sessions=sessions, redis=redis, settings=settings, store=self.store, status=board, artifacts=self.artifacts
        )
        self.actions = JobActions(self.jobs, board)
        composer = ResultComposer(self.store, self.downloads, self.artifacts)
        self.delivery = delivery = Delivery(
            client=self,
            sessions=sessions,
            composer=composer,
            status=board,
            max_attempts=settings.delivery_max_attempts,
            claim_s=settings.delivery_claim_s,
        )
        self.watcher = JobWatcher(sessions=sessions, redis=redis, settings=settings, status=board, delivery=delivery)

    @staticmethod
    def _shard_options(settings: Settings) -> dict[str, Any]:  # noqa: ARG004 (ShardedBeatforge's use it)
        """Client options for sharding: none for the one unsharded process."""
        return {}

    async def setup_hook(self) -> None:
        # Jobs a crash or a redis restart left behind while no worker was there to notice are set right first.
        try:
            done = await reconcile(self.sessions, self.redis, self.settings)
        except (RedisError, OSError) as exc:  # the workers' own passes will do it once redis is back
            log.warning("could not reconcile jobs at start-up", extra={"error": repr(exc)})
        else:
            log.info("reconciled jobs at start-up", extra=asdict(done))
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
        """Shut down in order, once: a signal and leaving ``async with`` both close, and both wait for the one run."""
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._shut_down(), name="beatforge-shutdown")
        await asyncio.shield(self._shutdown)

    async def _shut_down(self) -> None:
        log.info("bot shutting down")
        await self.watcher.finish()  # before the database and redis go away (run_bot closes them after this)
        try:
            await super().close()
        finally:
            await self.downloads.stop()
        log.info("bot shut down")


class ShardedBeatforge(Beatforge, commands.AutoShardedBot):
    """The same bot on discord.py's AutoShardedBot, running ``settings.shard_ids`` of ``settings.shard_count`` shards
    in this process: one gateway connection each, one shared cache. Other processes run the other shards on the same
    database; each delivers its own guilds' results (``bot/cogs/watcher.py``), and delivery claims keep any two
    from posting one result twice (``bot/delivery.py``)."""

    @staticmethod
    def _shard_options(settings: Settings) -> dict[str, Any]:
        # shard_ids None: discord.py runs every shard of shard_count in this process.
        return {"shard_count": settings.shard_count, "shard_ids": settings.shard_ids}


def make_bot(
    *,
    settings: Settings,
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
    sync_commands: bool = True,
) -> Beatforge:
    """The bot the settings ask for: sharded when ``settings.shard_count`` is set, else one unsharded client."""
    cls = ShardedBeatforge if settings.shard_count is not None else Beatforge
    return cls(settings=settings, redis=redis, sessions=sessions, sync_commands=sync_commands)


#: How long the bot may take to stop after its orderly close before it is cancelled.
STOP_WAIT_S = 15.0


async def serve(bot: Beatforge, token: str) -> None:
    """Run ``bot`` until it stops for good or SIGTERM / SIGINT asks it to, then close it in order.

    Without the handlers, SIGTERM (``docker stop``, systemd) ends the process where it stands: no delivery in
    flight finishes, and ``Beatforge.close`` never runs.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(received: signal.Signals) -> None:
        log.info("signal received; closing", extra={"signal": received.name})
        stop.set()

    handled = (signal.SIGTERM, signal.SIGINT)
    for received in handled:
        loop.add_signal_handler(received, on_signal, received)
    running = asyncio.create_task(bot.start(token), name="beatforge-bot")
    stopping = asyncio.create_task(stop.wait(), name="beatforge-stop")
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            await bot.close()
            if not (await asyncio.wait({running}, timeout=STOP_WAIT_S))[0]:
                log.warning("the bot did not stop after closing; cancelling it")
                return
        await running  # raises what ended the bot, if anything did
    finally:
        for received in handled:
            loop.remove_signal_handler(received)
        for task in (stopping, running):
            task.cancel()
        await asyncio.gather(stopping, running, return_exceptions=True)


async def run_bot(settings: Settings) -> int:
    if settings.discord_token is None:
        sys.stderr.write("beatforge: set BEATFORGE_DISCORD_TOKEN (see .env.example) to run the bot\n")
        return 2
    try:
        open_backend(settings, ArtifactStore(settings.artifact_dir))  # checked before anything starts
    except ArtifactBackendError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2
    await asyncio.to_thread(upgrade_locked, settings.database_url)
    engine = make_engine(settings.database_url)
    redis = await connect(settings)
    try:
        async with make_bot(settings=settings, redis=redis, sessions=make_sessionmaker(engine)) as bot:
            await serve(bot, settings.discord_token.get_secret_value())
    finally:
        await redis.aclose()
        await engine.dispose()
    return 0
