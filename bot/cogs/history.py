"""/history, /show and /styles: finding past results again, and what the presets mean.

The history list is ephemeral and paged with ◀ ▶ buttons. They, and each entry's "Re-post" button,
are persistent ``DynamicItem``s whose custom_id carries everything needed to answer a press
(``bf:hist:<viewer>:<target>:<page>:<kept>``, ``bf:repost:<job>``), so they keep working after a restart;
permissions are checked again on every press, because a custom_id can be forged.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.contract import ErrorCode, JobStatus, Relation
from beatforge.presets import MOODS, STYLES
from bot.access import Actor
from bot.buttons import Pressable, answer_presses, stop_answering
from bot.delivery import Delivery
from bot.errors import UserFacingError
from bot.jobs import JobService
from bot.messages import engine_limits_text, fit, label, quote_prompt
from bot.options import JobNumber
from storage import jobs
from storage.jobs import JobView

if TYPE_CHECKING:
    from bot.app import Beatforge

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
    Relation.REMIX: "remix",
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
    sessions: async_sessionmaker[AsyncSession], *, guild_id: int, viewer: int, target: int, page: int, kept: bool
) -> tuple[str, discord.ui.View | None]:
    """The text and buttons of one page; a page past the end (jobs gone since) shows the last one."""
    async with sessions() as session:
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


def _check_history_access(actor: Actor, viewer: int, target: int) -> None:
    if actor.user.id != viewer:
        raise UserFacingError(f"This list belongs to <@{viewer}>; use `/history` to see your own.")
    if target != viewer and not actor.admin:
        raise UserFacingError("Only admins (Manage Server) can look at someone else's history.")


class HistoryPage(
    Pressable,
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


class RepostButton(Pressable, template=r"bf:repost:(?P<job_id>\d+)"):
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


class History(commands.Cog):
    def __init__(
        self,
        *,
        client: discord.Client,
        sessions: async_sessionmaker[AsyncSession],
        jobs: JobService,
        delivery: Delivery,
    ) -> None:
        #: Where the buttons are registered, so presses on lists and results from before a restart work too.
        self.client = client
        self.sessions, self.jobs, self.delivery = sessions, jobs, delivery

    async def cog_load(self) -> None:
        answer_presses(self.client, HistoryPage, self.turn_page)
        answer_presses(self.client, RepostButton, self.repost)

    async def cog_unload(self) -> None:
        stop_answering(self.client, HistoryPage)
        stop_answering(self.client, RepostButton)

    async def turn_page(self, interaction: discord.Interaction, button: HistoryPage) -> None:
        """◀ / ▶ pressed: the list shows that page (for its viewer only: a custom_id can be forged)."""
        if interaction.guild_id is None:
            raise UserFacingError("History lists only work in a server.")
        _check_history_access(self.jobs.actor(interaction), button.viewer, button.target)
        content, view = await history_page(
            self.sessions,
            guild_id=interaction.guild_id,
            viewer=button.viewer,
            target=button.target,
            page=button.page,
            kept=button.kept,
        )
        await interaction.response.edit_message(content=content, view=view)

    async def repost(self, interaction: discord.Interaction, button: RepostButton) -> None:
        """📤 pressed: the result posted again in the channel, for its requester or an admin."""
        job = await self.finished_job(interaction, button.job_id)
        self.jobs.check_owner(job, self.jobs.actor(interaction), doing="re-post it")
        await self.delivery.repost(interaction, job)

    async def finished_job(self, interaction: discord.Interaction, job_id: int) -> JobView:
        """A job of this server with a result to show, or a clear reason why there is none."""
        job = await self.jobs.get(job_id)
        if interaction.guild_id is None or job.guild_id != interaction.guild_id:
            raise UserFacingError(f"Job #{job_id} was made on another server; only this server's results can be shown.")
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            raise UserFacingError(
                f"{label(job)} is still {job.status.value}; its result will be posted when it's done."
            )
        if job.status is JobStatus.FAILED:
            if job.error_code is ErrorCode.CANCELLED:
                raise UserFacingError(f"{label(job)} was cancelled, so it has no result to show.")
            reason = f": {job.error}" if job.error else "."
            raise UserFacingError(f"{label(job)} failed, so it has no result to show{reason}"[:1900])
        return job

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
        viewer = interaction.user.id
        target = viewer if user is None else user.id
        _check_history_access(self.jobs.actor(interaction), viewer, target)
        content, view = await history_page(
            self.sessions, guild_id=interaction.guild_id, viewer=viewer, target=target, page=0, kept=kept
        )
        if view is None:
            await interaction.response.send_message(content, ephemeral=True)
        else:
            await interaction.response.send_message(content, view=view, ephemeral=True)

    @app_commands.command(name="show")
    @app_commands.guild_only()
    async def show(self, interaction: discord.Interaction, job: JobNumber) -> None:
        """Bring back a past result on this server, with its files and buttons.

        Args:
            job: The job's number (the # in "Beat #N").
        """
        await self.delivery.repost(interaction, await self.finished_job(interaction, job))

    @app_commands.command(name="styles")
    async def styles(self, interaction: discord.Interaction) -> None:
        """The style and mood presets of /beat and /loop, and what each does."""
        await interaction.response.send_message(styles_text(), ephemeral=True)


def styles_text() -> str:
    lines = ["**Styles** (`style:`) — blended with your own words:"]
    lines += [f"• **{s.label}** — {s.description}" for s in STYLES.values()]
    lines.append("**Moods** (`mood:`) — each sets a tempo (unless you give one), a mode and a register:")
    lines += [f"• **{m.label}** — ~{m.bpm} bpm, {m.mode}, {m.register}; feels {m.music}" for m in MOODS.values()]
    lines.append(
        f"**Length** (`duration:`) — the most depends on the model: {engine_limits_text()}. "
        "`key:` and `time_signature:` are set exactly on ACE-Step models and asked for in words on MusicGen."
    )
    return fit(lines)


async def setup(bot: Beatforge) -> None:
    await bot.add_cog(History(client=bot, sessions=bot.sessions, jobs=bot.jobs, delivery=bot.delivery))
