"""/history, /show and /styles: finding past results again, and what the presets mean.

The history list is ephemeral and paged with ◀ ▶ buttons. They, and each entry's "Re-post" button,
are persistent ``DynamicItem``s whose custom_id carries everything needed to answer a press
(``bf:hist:<viewer>:<target>:<page>:<kept>``, ``bf:repost:<job>``), so they keep working after a restart;
permissions are checked again on every press, because a custom_id can be forged.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from beatforge.contract import ErrorCode, JobStatus, Relation
from beatforge.presets import MOODS, STYLES
from bot.access import is_admin
from bot.cogs.admin import fit
from bot.errors import UserFacingError, reply_privately
from bot.messages import label, quote_prompt
from storage import jobs
from storage.errors import JobNotFound
from storage.jobs import JobView

if TYPE_CHECKING:
    from bot.app import Beatforge
    from bot.cogs.watcher import JobWatcher

log = logging.getLogger(__name__)

PAGE_SIZE = 5
#: Ancestors named in an entry's lineage beyond its parent.
MAX_LINEAGE_STEPS = 3
#: How a job came from its parent, as the history says it ("re-roll of #3").
RELATIONS: dict[str, str] = {
    Relation.REROLL: "re-roll",
    Relation.EXTEND: "extend",
    Relation.EDIT: "edit",
    Relation.LOOP: "loop",
    Relation.MIDI: "MIDI",
    Relation.COVER: "new cover",
}
STATUS_TEXT = {
    JobStatus.QUEUED: "⏳ queued",
    JobStatus.RUNNING: "🎶 generating",
    JobStatus.DONE: "✅ done",
    JobStatus.FAILED: "❌ failed",
}


def message_link(guild_id: int | None, channel_id: int | None, message_id: int | None) -> str | None:
    if guild_id is None or channel_id is None or message_id is None:
        return None
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


def _status(job: JobView) -> str:
    return "🛑 cancelled" if job.error_code is ErrorCode.CANCELLED else STATUS_TEXT[job.status]


def _relation(job: JobView) -> str:
    # Loop, MIDI and cover jobs made before relations were recorded still name their kind.
    return RELATIONS.get(job.relation or job.kind, job.relation or job.kind)


def lineage_text(job: JobView, ancestors: list[JobView]) -> str | None:
    """``re-roll of #5 (#5: extend of #1)``: where the job came from, up its chain of parents."""
    if job.parent_id is None:
        return None
    text = f"{_relation(job)} of #{job.parent_id}"
    steps = [f"#{a.id}: {_relation(a)} of #{a.parent_id}" for a in ancestors if a.parent_id is not None]
    if len(steps) > MAX_LINEAGE_STEPS:  # five entries share one 2000-character message
        steps = [*steps[:MAX_LINEAGE_STEPS], "…"]
    return text + (f" ({'; '.join(steps)})" if steps else "")


def entry_text(job: JobView, ancestors: list[JobView]) -> str:
    """One history entry: label, state, model, seed, when; the prompt; lineage and a link to its message."""
    model = job.model_name or "default"
    star = " ⭐" if job.kept else ""
    seed = f" · seed `{job.params.seed}`" if job.params.seed is not None else ""  # an upload's MIDI has none
    head = (
        f"**{label(job)}**{star} — {_status(job)} · model `{model[:60]}`{seed} · <t:{int(job.queued_at.timestamp())}:R>"
    )
    prompt = " ".join(job.params.prompt.split())  # one line, whatever the user typed
    tail = [part for part in (lineage_text(job, ancestors),) if part]
    link = message_link(job.guild_id, job.channel_id, job.result_message_id)
    if link is not None:
        tail.append(f"[jump to it]({link})")
    lines = [head, f"> {quote_prompt(prompt, 90)}"]
    if tail:
        lines.append("↳ " + " · ".join(tail))
    return "\n".join(lines)


async def history_page(
    bot: Beatforge, *, guild_id: int, viewer: int, target: int, page: int, kept: bool
) -> tuple[str, discord.ui.View | None]:
    """The text and buttons of one page; a page past the end (jobs gone since) shows the last one."""
    async with bot.sessions() as session:
        found, total = await jobs.list_history(
            session, user_id=target, guild_id=guild_id, offset=page * PAGE_SIZE, limit=PAGE_SIZE, kept=kept
        )
        pages = max(1, -(-total // PAGE_SIZE))
        if not found and page > 0 and total:
            page = pages - 1
            found, total = await jobs.list_history(
                session, user_id=target, guild_id=guild_id, offset=page * PAGE_SIZE, limit=PAGE_SIZE, kept=kept
            )
        chains = {job.id: await jobs.lineage(session, job.id) if job.parent_id else [] for job in found}
    whose = "Your" if target == viewer else f"<@{target}>'s"
    what = "kept generations" if kept else "generations"
    if total == 0:
        nobody = "You have" if target == viewer else f"<@{target}> has"
        return f"{nobody} no {what} on this server yet.", None
    lines = [f"**{whose} {what}** on this server — page {page + 1} of {pages} ({total} in all), newest first:"]
    lines += [entry_text(job, chains[job.id]) for job in found]
    view = discord.ui.View(timeout=None)
    view.add_item(HistoryPage(viewer, target, max(page - 1, 0), kept, label="◀", disabled=page == 0))
    view.add_item(HistoryPage(viewer, target, page + 1, kept, label="▶", disabled=page + 1 >= pages))
    for job in found:
        if job.status is JobStatus.DONE:
            view.add_item(RepostButton(job.id))
    return fit(lines), view


def _check_history_access(interaction: discord.Interaction, viewer: int, target: int) -> None:
    if interaction.user.id != viewer:
        raise UserFacingError(f"This list belongs to <@{viewer}>; use `/history` to see your own.")
    if target != viewer and not is_admin(interaction):
        raise UserFacingError("Only admins (Manage Server) can look at someone else's history.")


class HistoryPage(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"bf:hist:(?P<viewer>\d+):(?P<target>\d+):(?P<page>\d+):(?P<kept>[01])",
):
    """◀ / ▶ under a history list: shows ``page`` of ``target``'s history to ``viewer`` (and no one else)."""

    def __init__(
        self, viewer: int, target: int, page: int, kept: bool, *, label: str = "▶", disabled: bool = False
    ) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label,
            style=discord.ButtonStyle.secondary,
            custom_id=f"bf:hist:{viewer}:{target}:{page}:{int(kept)}",
            disabled=disabled,
            row=0,
        )
        super().__init__(button)
        self.viewer, self.target, self.page, self.kept = viewer, target, page, kept

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,  # noqa: ARG003
        item: discord.ui.Item[Any],  # noqa: ARG003
        match: re.Match[str],
        /,
    ) -> HistoryPage:
        return cls(int(match["viewer"]), int(match["target"]), int(match["page"]), match["kept"] == "1")

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: Beatforge = interaction.client  # type: ignore[assignment]
        try:
            if interaction.guild_id is None:
                raise UserFacingError("History lists only work in a server.")
            _check_history_access(interaction, self.viewer, self.target)
            content, view = await history_page(
                bot,
                guild_id=interaction.guild_id,
                viewer=self.viewer,
                target=self.target,
                page=self.page,
                kept=self.kept,
            )
        except UserFacingError as exc:  # components bypass the command tree's error handler
            await reply_privately(interaction, f"⚠️ {exc}")
            return
        await interaction.response.edit_message(content=content, view=view)


class RepostButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"bf:repost:(?P<job_id>\d+)"):
    """Under a history entry: posts that job's result again in the channel (its requester or an admin)."""

    def __init__(self, job_id: int) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=f"Re-post #{job_id}",
            emoji="📤",
            style=discord.ButtonStyle.primary,
            custom_id=f"bf:repost:{job_id}",
            row=1,  # under the ◀ ▶ row
        )
        super().__init__(button)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,  # noqa: ARG003
        item: discord.ui.Item[Any],  # noqa: ARG003
        match: re.Match[str],
        /,
    ) -> RepostButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            job = await finished_job(interaction, self.job_id)
            if job.user_id != interaction.user.id and not is_admin(interaction):
                raise UserFacingError(f"{label(job)} is <@{job.user_id}>'s; only they or an admin can re-post it.")
            await post_result(interaction, job)
        except UserFacingError as exc:  # components bypass the command tree's error handler
            await reply_privately(interaction, f"⚠️ {exc}")


async def finished_job(interaction: discord.Interaction, job_id: int) -> JobView:
    """A job of this server with a result to show, or a clear reason why there is none."""
    bot: Beatforge = interaction.client  # type: ignore[assignment]
    async with bot.sessions() as session:
        try:
            job = await jobs.get_job(session, job_id)
        except JobNotFound as exc:
            raise UserFacingError(f"There is no job #{job_id}.") from exc
    if interaction.guild_id is None or job.guild_id != interaction.guild_id:
        raise UserFacingError(f"Job #{job_id} was made on another server; only this server's results can be shown.")
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise UserFacingError(f"{label(job)} is still {job.status.value}; its result will be posted when it's done.")
    if job.status is JobStatus.FAILED:
        if job.error_code is ErrorCode.CANCELLED:
            raise UserFacingError(f"{label(job)} was cancelled, so it has no result to show.")
        reason = f": {job.error}" if job.error else "."
        raise UserFacingError(f"{label(job)} failed, so it has no result to show{reason}"[:1900])
    return job


async def post_result(interaction: discord.Interaction, job: JobView) -> discord.Message:
    """Post a finished job's result publicly in the interaction's channel, files and working buttons included."""
    bot: Beatforge = interaction.client  # type: ignore[assignment]
    watcher: JobWatcher | None = bot.get_cog("JobWatcher")  # type: ignore[assignment]
    if watcher is None:
        raise UserFacingError("Results can't be posted right now (the bot is starting or stopping); try again.")
    try:
        result = watcher.compose(job, interaction.filesize_limit)
        # Opening the files here, before the public defer, keeps a missing file a private explanation.
        kwargs = result.send_kwargs()
    except (LookupError, OSError) as exc:
        log.warning("cannot re-post a result", extra={"job_id": job.id, "error": repr(exc)})
        raise UserFacingError(f"The files of {label(job)} are no longer available, so it can't be posted.") from exc
    files: list[discord.File] = kwargs.pop("files")
    try:
        await interaction.response.defer(thinking=True)  # uploads can outlast Discord's 3 seconds
        message = await interaction.edit_original_response(content=result.content, attachments=files, **kwargs)
    except discord.HTTPException as exc:
        log.warning("re-posting a result failed", extra={"job_id": job.id, "status": exc.status, "error": repr(exc)})
        raise UserFacingError(f"Discord refused to post {label(job)} ({exc.status}); please try again.") from exc
    finally:
        for file in files:  # closed after a successful upload already; this covers a failed one
            file.close()
    log.info("result re-posted", extra={"job_id": job.id, "user_id": interaction.user.id})
    return message


class History(commands.Cog):
    def __init__(self, bot: Beatforge) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        # The buttons answer presses on lists and results posted before a restart too.
        self.bot.add_dynamic_items(HistoryPage, RepostButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(HistoryPage, RepostButton)

    @app_commands.command(name="history")
    @app_commands.guild_only()
    async def history(
        self, interaction: discord.Interaction, user: discord.User | None = None, kept: bool = False
    ) -> None:
        """Your past generations on this server, newest first.

        Args:
            user: Someone else's history (admins only).
            kept: Only the ones marked ⭐ keep.
        """
        assert interaction.guild_id is not None  # guild_only
        target = interaction.user.id if user is None else user.id
        if target != interaction.user.id and not is_admin(interaction):
            raise UserFacingError("Only admins (Manage Server) can look at someone else's history.")
        content, view = await history_page(
            self.bot, guild_id=interaction.guild_id, viewer=interaction.user.id, target=target, page=0, kept=kept
        )
        if view is None:
            await interaction.response.send_message(content, ephemeral=True)
        else:
            await interaction.response.send_message(content, view=view, ephemeral=True)

    @app_commands.command(name="show")
    @app_commands.guild_only()
    async def show(self, interaction: discord.Interaction, job: app_commands.Range[int, 1]) -> None:
        """Bring back a past result on this server, with its files and buttons.

        Args:
            job: The job's number (the # in "Beat #N").
        """
        await post_result(interaction, await finished_job(interaction, job))

    @app_commands.command(name="styles")
    async def styles(self, interaction: discord.Interaction) -> None:
        """The style and mood presets of /beat and /loop, and what each does."""
        await interaction.response.send_message(styles_text(), ephemeral=True)


def styles_text() -> str:
    lines = ["**Styles** (`style:`) — blended with your own words:"]
    lines += [f"• **{s.label}** — {s.description}" for s in STYLES.values()]
    lines.append("**Moods** (`mood:`) — each sets a tempo (unless you give one), a mode and a register:")
    lines += [f"• **{m.label}** — ~{m.bpm} bpm, {m.mode}, {m.register}; feels {m.music}" for m in MOODS.values()]
    return fit(lines)


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(History(bot))
