"""/admin: a server's model, its limits, cancelling any job on it, the audit log of all that, and the bot's status.

Who may: members with Manage Server in the channel the command is used in, and the bot's owners
(``settings.owner_ids``) everywhere. ``default_permissions`` only hides the group in Discord's client
(and a server can change that in its integration settings), so the same rule is checked again on every
call. Every change is written to the audit log in the transaction that makes it; reading the model list,
the limits or the log changes nothing and is not logged. All answers are ephemeral: they are the admin's
business, not the channel's.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import discord
from arq.connections import ArqRedis
from discord import app_commands
from discord.ext import commands
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.bounds import MAX_DURATION_S, MIN_DURATION_S
from beatforge.config import Settings
from beatforge.contract import MAX_TRAIN_STEPS, JobStatus
from beatforge.engines import capabilities, licence_terms
from beatforge.fleet import ModelInfo, WorkerInfo, read_models
from beatforge.queue import queue_names
from bot.access import is_admin
from bot.errors import UserFacingError
from bot.jobs import JobService
from bot.limits import Limits, effective_limits
from bot.messages import engine_limits_text, fit, label
from bot.model_choice import server_models
from bot.options import JobNumber
from bot.training import TrainingRequests
from storage import guilds
from storage.guilds import GuildSettings
from storage.stats import OpsStatus, gather_status

if TYPE_CHECKING:
    from bot.app import Beatforge

log = logging.getLogger(__name__)

#: What ``/admin model use`` takes to go back to the bot's default model.
DEFAULT_CHOICE = "default"


def _settings_max(field: str) -> int:
    """The largest value the bot-wide setting ``field`` accepts (``beatforge.config.Settings``): a server may
    choose what the bot's operator could."""
    return next(int(m.le) for m in Settings.model_fields[field].metadata if hasattr(m, "le"))  # Field(le=...)


#: Bounds for ``/admin limits``, taken from the settings so they are written once.
JOBS_PER_HOUR_MAX = _settings_max("jobs_per_hour")
CONCURRENT_JOBS_MAX = _settings_max("concurrent_jobs")
PACK_LOOPS_MAX = _settings_max("pack_max_loops")
LIMIT_FIELDS = ("jobs_per_hour", "concurrent_jobs", "max_duration_s", "everyone_can_reroll", "max_pack_loops")
#: Each numeric option of ``/admin limits``: its column, the range Discord's client enforces (a crafted
#: payload reaches the bot unchecked, so it is checked again) and its unit.
_NUMERIC_LIMITS: dict[str, tuple[str, float, float, str]] = {
    "jobs_per_hour": ("jobs_per_hour", 1, JOBS_PER_HOUR_MAX, ""),
    "concurrent_jobs": ("concurrent_jobs", 1, CONCURRENT_JOBS_MAX, ""),
    "max_duration": ("max_duration_s", MIN_DURATION_S, MAX_DURATION_S, " seconds"),
    "pack_loops": ("max_pack_loops", 1, PACK_LOOPS_MAX, ""),
}


def model_terms(info: ModelInfo) -> str:
    """Its engine and what its licence allows: "ACE-Step 1.5 · MIT: you may use this commercially"."""
    return f"{capabilities(info.engine).label} · {licence_terms(info.licence).line}"


def models_text(models: tuple[list[ModelInfo], str] | None, current: str | None) -> str:
    """The model list: each model's engine, kind, what its licence allows and its description, marking the server's
    and the default."""
    if models is None:
        server = f" This server is set to `{current}`." if current else ""
        return f"No worker has reported its models yet (none has started since redis was last cleared).{server}"
    available, default = models
    lines = [f"**Models** (this server uses `{current or default}`{'' if current else ', the default'}):"]
    for m in available:
        marks = [mark for mark, on in (("⭐ this server", m.name == current), ("default", m.name == default)) if on]
        extras = [flag for flag, on in (("melody", m.melody), ("stereo", m.stereo)) if on]
        extras += [f"on `{m.base}`"] if m.base else []
        head = f"• `{m.name}`" + (f" — **{', '.join(marks)}**" if marks else "")
        details = " · ".join([model_terms(m), m.kind, *extras])
        lines.append(f"{head}\n  {details} — {m.description}")
    if current and current not in {m.name for m in available}:
        lines.append(
            f"⚠️ This server's model `{current}` is not among them any more; its new beats will fail until an admin "
            "picks another (`/admin model use`)."
        )
    lines.append("Change it with `/admin model use NAME` (`default` goes back to the bot's default).")
    return fit(lines)


def limits_text(limits: Limits, guild: GuildSettings, heading: str) -> str:
    """The limits in force, saying which are this server's own and which the bot's defaults."""

    def source(own: object) -> str:
        return "this server" if own is not None else "bot default"

    reroll = "anyone" if limits.everyone_can_reroll else "the requester and admins"
    return "\n".join(
        [
            heading,
            f"• jobs per hour per user: **{limits.jobs_per_hour}** ({source(guild.jobs_per_hour)})",
            f"• jobs at once per user: **{limits.concurrent_jobs}** ({source(guild.concurrent_jobs)})",
            f"• longest beat: **{limits.max_duration_s:g} s** ({source(guild.max_duration_s)}; the model's own "
            f"limit also applies: {engine_limits_text()})",
            f"• loops in one pack: **{limits.max_pack_loops}** ({source(guild.max_pack_loops)})",
            f"• who can re-roll a result: **{reroll}** ({source(guild.everyone_can_reroll)})",
        ]
    )


def _numeric_changes(options: dict[str, float | None]) -> dict[str, Any]:
    """The numeric options given, by column, each checked against its range."""
    changes: dict[str, Any] = {}
    for option, value in options.items():
        if value is None:
            continue
        column, low, high, unit = _NUMERIC_LIMITS[option]
        if not low <= value <= high:
            raise UserFacingError(f"{option} must be between {low:g} and {high:g}{unit}, not {value:g}.")
        changes[column] = value
    return changes


def _detail_text(detail: dict[str, Any]) -> str:
    """An audit entry's detail in one short line (``before``/``after`` as ``name: old → new``)."""
    before, after = detail.get("before"), detail.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        return ", ".join(f"{name}: {before.get(name)} → {value}" for name, value in after.items())
    text = ", ".join(f"{name}: {value}" for name, value in detail.items())
    return text if len(text) <= 200 else json.dumps(detail)[:199] + "…"


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _worker_text(worker: WorkerInfo) -> str:
    gpu = (
        f"GPU {_gib(worker.gpu.allocated)} allocated · {_gib(worker.gpu.reserved)} reserved of {_gib(worker.gpu.total)}"
        if worker.gpu
        else "no GPU"
    )
    return (
        f"• `{worker.id}` ({worker.device}): **{worker.jobs_running}**/{worker.max_jobs} jobs running, "
        f"{worker.jobs_finished} finished since <t:{int(worker.started_at)}:R> — {gpu}"
    )


def status_text(status: OpsStatus) -> str:
    """``status`` for Discord: the facts ``beatforge status`` prints (``storage.stats.gather_status``)."""
    jobs = status.jobs
    lines = ["**beatforge status**"]
    if status.redis_error:
        lines.append("⚠️ **Redis is unreachable**: workers and the queue are unknown; the database says:")
    else:
        alive = len(status.workers)
        lines.append(f"**Workers alive: {alive}**" + ("" if alive else " — ⚠️ no worker is running, nothing will start"))
        lines += [_worker_text(w) for w in status.workers]
        named = len(status.queues) > 1  # a queue split off for CPU work: say which is which
        lines += [f"**Queue**{f' `{name}`' if named else ''}: {depth} waiting" for name, depth in status.queues.items()]
    lines.append(f"**Jobs now**: {jobs.queued} queued, {jobs.running} running")
    lines.append(f"**Last hour**: {jobs.done_recently} done, {jobs.failed_recently} failed")
    lines += [f"• `{code}`: {count}" for code, count in jobs.failures_by_code.items()]
    return fit(lines)


class Admin(commands.Cog):
    admin = app_commands.Group(
        name="admin",
        description="Server settings for beatforge (Manage Server only).",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )
    model = app_commands.Group(name="model", description="The music model this server uses.", parent=admin)

    def __init__(
        self,
        *,
        jobs: JobService,
        sessions: async_sessionmaker[AsyncSession],
        redis: ArqRedis,
        settings: Settings,
    ) -> None:
        self.jobs, self.sessions, self.redis, self.settings = jobs, sessions, redis, settings
        self.training = TrainingRequests(jobs)

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Every /admin command: refused (privately, by the tree's error handler) unless ``is_admin``."""
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage("/admin only works in a server.")
        if not is_admin(interaction, self.settings.owner_ids):
            raise app_commands.CheckFailure("Only members with Manage Server (or the bot's owners) can use /admin.")
        return True

    async def _guild(self, guild_id: int) -> GuildSettings:
        async with self.sessions() as session:
            return await guilds.get_guild(session, guild_id)

    async def _models(self, guild_id: int) -> tuple[list[ModelInfo], str] | None:
        """The models the workers reported, less those trained for other servers (/admin train)."""
        try:
            return await server_models(self.sessions, await read_models(self.redis), guild_id)
        except RedisError as exc:
            raise UserFacingError("Can't reach the job queue to read the models; try again in a minute.") from exc

    @model.command(name="list")
    async def model_list(self, interaction: discord.Interaction) -> None:
        """Show the models the workers can run, and which one this server uses."""
        assert interaction.guild_id is not None  # interaction_check
        guild = await self._guild(interaction.guild_id)
        await interaction.response.send_message(
            models_text(await self._models(interaction.guild_id), guild.model), ephemeral=True
        )

    @model.command(name="use")
    async def model_use(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 300]) -> None:
        """Use another model for this server's new beats.

        Args:
            name: A model from `/admin model list`, or `default` for the bot's default.
        """
        assert interaction.guild_id is not None  # interaction_check
        name = name.strip()
        if not name:
            raise UserFacingError("Give a model name (see `/admin model list`), or `default`.")
        models = await self._models(interaction.guild_id)
        choice: str | None = None if name.lower() == DEFAULT_CHOICE else name
        if choice is not None and models is not None:
            names = [m.name for m in models[0]]
            if choice not in names:
                listed = ", ".join(f"`{n}`" for n in names)
                raise UserFacingError(f"There is no model `{choice}`. Choose one of {listed}, or `default`."[:1900])
        async with self.sessions() as session:
            await guilds.update_guild(
                session, interaction.guild_id, by=interaction.user.id, action="model.use", model=choice
            )
        log.info("server model changed", extra={"guild_id": interaction.guild_id, "model": choice})
        if choice is None:
            default = f" (`{models[1]}`)" if models else ""
            text = f"✅ New beats on this server use the bot's default model{default}."
        else:
            unchecked = (
                "\n⚠️ No worker has reported its models yet, so the name could not be checked." if models is None else ""
            )
            info = next((m for m in models[0] if m.name == choice), None) if models else None
            about = f" ({model_terms(info)})" if info else ""
            text = f"✅ New beats on this server use `{choice}`{about}.{unchecked}"
        await interaction.response.send_message(text, ephemeral=True)

    @model_use.autocomplete("name")
    async def _model_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        # Autocomplete skips the cog's interaction_check, so suggestions are for admins only here.
        if not is_admin(interaction, self.settings.owner_ids):
            return []
        try:
            models = await server_models(self.sessions, await read_models(self.redis), interaction.guild_id or 0)
        except RedisError:
            log.warning("model autocomplete could not read redis")
            return []
        names = [DEFAULT_CHOICE, *(m.name for m in models[0])] if models else [DEFAULT_CHOICE]
        wanted = current.lower()
        return [app_commands.Choice(name=n[:100], value=n) for n in names if wanted in n.lower()][:25]

    @admin.command(name="limits")
    async def limits(
        self,
        interaction: discord.Interaction,
        jobs_per_hour: app_commands.Range[int, 1, JOBS_PER_HOUR_MAX] | None = None,
        concurrent_jobs: app_commands.Range[int, 1, CONCURRENT_JOBS_MAX] | None = None,
        max_duration: app_commands.Range[float, MIN_DURATION_S, MAX_DURATION_S] | None = None,
        everyone_can_reroll: bool | None = None,
        pack_loops: app_commands.Range[int, 1, PACK_LOOPS_MAX] | None = None,
        reset: bool = False,
    ) -> None:
        """Show this server's limits per user; give options to change them.

        Args:
            jobs_per_hour: Most jobs one user may start in an hour.
            concurrent_jobs: Most jobs one user may have queued or running at once.
            max_duration: Longest beat in seconds; each model's own most applies too (`/styles` lists them).
            everyone_can_reroll: Whether anyone (not only the requester and admins) may re-roll a result.
            pack_loops: Most loops one /pack may hold.
            reset: Go back to the bot's defaults for all of these.
        """
        assert interaction.guild_id is not None  # interaction_check
        given = {"jobs_per_hour": jobs_per_hour, "concurrent_jobs": concurrent_jobs, "max_duration": max_duration}
        changes = _numeric_changes({**given, "pack_loops": pack_loops})
        if everyone_can_reroll is not None:
            changes["everyone_can_reroll"] = everyone_can_reroll
        if reset and changes:
            raise UserFacingError("Either reset the limits or set some, not both at once.")
        if reset:
            changes, action, heading = dict.fromkeys(LIMIT_FIELDS), "limits.reset", "✅ Back to the bot's defaults:"
        elif changes:
            action, heading = "limits.set", "✅ Limits changed. Now in force:"
        else:
            guild = await self._guild(interaction.guild_id)
            text = limits_text(effective_limits(self.settings, guild), guild, "**Limits on this server**:")
            await interaction.response.send_message(text, ephemeral=True)
            return
        async with self.sessions() as session:
            guild = await guilds.update_guild(
                session, interaction.guild_id, by=interaction.user.id, action=action, **changes
            )
        log.info("server limits changed", extra={"guild_id": interaction.guild_id, "changes": changes})
        text = limits_text(effective_limits(self.settings, guild), guild, heading)
        await interaction.response.send_message(text, ephemeral=True)

    @admin.command(name="cancel")
    async def cancel(self, interaction: discord.Interaction, job: JobNumber) -> None:
        """Cancel anyone's queued or running job on this server.

        Args:
            job: The job's number (the # in "Beat #N").
        """
        assert interaction.guild_id is not None  # interaction_check
        found = await self.jobs.get(job)
        if found.guild_id != interaction.guild_id:
            raise UserFacingError(f"Job #{job} is not from this server; admins can only cancel their own server's.")
        if found.status in (JobStatus.DONE, JobStatus.FAILED):
            state = "finished" if found.status is JobStatus.DONE else "already failed or was cancelled"
            raise UserFacingError(f"{label(found)} has {state}; there is nothing to cancel.")
        user = interaction.user
        if not await self.jobs.cancel(found, by=f"admin {user.name} ({user.id})"):
            raise UserFacingError(f"{label(found)} finished just now; there was nothing left to cancel.")
        async with self.sessions() as session:
            await guilds.audit(
                session,
                guild_id=interaction.guild_id,
                by=user.id,
                action="job.cancel",
                job_id=found.id,
                owner_id=found.user_id,
                status=str(found.status),
            )
        await interaction.response.send_message(
            f"🛑 {label(found)} (by <@{found.user_id}>) is cancelled; its status message will say so.", ephemeral=True
        )

    @admin.command(name="train")
    async def train(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 64],
        data: discord.Attachment,
        steps: app_commands.Range[int, 1, MAX_TRAIN_STEPS] | None = None,
        base: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        """Train a model on your own clips (a LoRA), for this server to use.

        Args:
            name: The new model's name (lowercase letters, digits, . _ -).
            data: A zip of clips (wav, flac, ogg, mp3), each with a .txt caption beside it.
            steps: Training steps (more: closer to your clips, longer).
            base: The MusicGen model to start from (default: the bot's default model).
        """
        await self.training.start(
            interaction, name=name, data=data, steps=steps, base=base or self.settings.default_model
        )

    @admin.command(name="status")
    async def status(self, interaction: discord.Interaction) -> None:
        """Workers alive, the queue, and how jobs went in the last hour (for the whole bot, not only this server)."""
        status = await gather_status(sessions=self.sessions, redis=self.redis, queue_names=queue_names(self.settings))
        await interaction.response.send_message(status_text(status), ephemeral=True)

    @admin.command(name="audit")
    async def audit(self, interaction: discord.Interaction, count: app_commands.Range[int, 1, 25] = 10) -> None:
        """What admins changed on this server, newest first.

        Args:
            count: How many entries to show (1-25, default 10).
        """
        assert interaction.guild_id is not None  # interaction_check
        if not 1 <= count <= 25:
            raise UserFacingError(f"count must be between 1 and 25, not {count}.")
        async with self.sessions() as session:
            entries = await guilds.audit_log(session, guild_id=interaction.guild_id, limit=count)
        if not entries:
            await interaction.response.send_message("No admin has changed anything here yet.", ephemeral=True)
            return
        lines = ["**Audit log** (newest first):"] + [
            f"• <t:{int(e.at.timestamp())}:R> <@{e.user_id}> `{e.action}` {_detail_text(e.detail)}" for e in entries
        ]
        await interaction.response.send_message(fit(lines), ephemeral=True)


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(Admin(jobs=bot.jobs, sessions=bot.sessions, redis=bot.redis, settings=bot.settings))
