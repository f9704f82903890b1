"""What each button, form and reaction on a result does, on top of the job service.

A job button's press arrives in ``JobActions.press`` (the bot registers it with ``bot.buttons.answer_presses``),
which picks the action by the button's ``ButtonAction`` in a ``match`` that the type checker proves covers every
action: no action is found by a name in a string. /cover and /midi on a beat run the same actions as their
buttons, and /remix the 🎛 button's.
"""

from __future__ import annotations

import logging
from typing import assert_never

import discord

from beatforge.contract import JobParams, Relation
from bot import params
from bot.buttons import ButtonAction, JobButton, cancel_view
from bot.errors import NotYours, UserFacingError
from bot.forms import EditedSettings, EditForm, ExtendForm, RemixForm, RemixSettings
from bot.jobs import JobService
from bot.messages import label, queued_text
from bot.status import StatusBoard
from storage.jobs import JobView

log = logging.getLogger(__name__)


class JobActions:
    def __init__(self, jobs: JobService, status: StatusBoard) -> None:
        self.jobs, self.status = jobs, status

    async def press(self, interaction: discord.Interaction, button: JobButton) -> None:
        """A job button was pressed: run its action on its job (and take)."""
        job_id, take = button.job_id, button.take or 1
        match button.action:
            case ButtonAction.REROLL:
                await self.reroll(interaction, job_id)
            case ButtonAction.LOOP:
                await self.make_loop(interaction, job_id, take)
            case ButtonAction.MIDI:
                await self.make_midi(interaction, job_id, take)
            case ButtonAction.COVER:
                await self.redraw_cover(interaction, job_id)
            case ButtonAction.KEEP:
                await self.toggle_keep(interaction, job_id)
            case ButtonAction.EXTEND:
                await self.extend(interaction, job_id, take)
            case ButtonAction.REMIX:
                await self.open_remix(interaction, job_id, take)
            case ButtonAction.EDIT:
                await self.edit(interaction, job_id)
            case ButtonAction.CANCEL:
                await self.cancel(interaction, job_id)
            case _:
                assert_never(button.action)

    # -- new jobs from a beat ---------------------------------------------------------------------------------

    async def reroll(self, interaction: discord.Interaction, beat_id: int) -> None:
        guild = await self.jobs.guild(interaction.guild_id)
        everyone = self.jobs.limits(guild).everyone_can_reroll
        original = await self.jobs.own_job(
            self.jobs.actor(interaction), beat_id, guild_id=interaction.guild_id, everyone=everyone
        )
        await self.jobs.submit(
            interaction, params.reroll(original), guild, parent_id=original.id, relation=Relation.REROLL
        )

    async def redraw_cover(
        self, interaction: discord.Interaction, beat_id: int, *, style: str | None = None, mood: str | None = None
    ) -> None:
        original = await self._own_beat(interaction, beat_id)
        await self._submit(interaction, params.cover(original, style=style, mood=mood), original, Relation.COVER)

    async def make_loop(self, interaction: discord.Interaction, beat_id: int, take: int = 1) -> None:
        original = await self._finished_beat(interaction, beat_id, take)
        await self._submit(interaction, params.loop(original, take), original, Relation.LOOP)

    async def make_midi(
        self, interaction: discord.Interaction, beat_id: int, take: int = 1, *, stems: bool = False
    ) -> None:
        original = await self._finished_beat(interaction, beat_id, take)
        await self._submit(interaction, params.midi(original, take, stems=stems), original, Relation.MIDI)

    async def extend(self, interaction: discord.Interaction, beat_id: int, take: int = 1) -> None:
        """⏩ opens a form for how many seconds to add; submitting it queues the extension."""
        original = await self._finished_beat(interaction, beat_id, take)
        limits = self.jobs.limits(await self.jobs.guild(interaction.guild_id))

        async def submitted(answer: discord.Interaction, seconds: float) -> None:
            await self._submit(answer, params.extend(original, take, seconds), original, Relation.EXTEND)

        await interaction.response.send_modal(ExtendForm(max_seconds=limits.max_duration_s, on_submit=submitted))

    async def open_remix(self, interaction: discord.Interaction, beat_id: int, take: int = 1) -> None:
        """🎛 opens a form for the new style and the strength; submitting it queues the remix."""
        original = await self._finished_beat(interaction, beat_id, take)

        async def submitted(answer: discord.Interaction, remix: RemixSettings) -> None:
            await self._remix_of(answer, original, take, prompt=remix.prompt, strength=remix.strength)

        await interaction.response.send_modal(RemixForm(on_submit=submitted))

    async def remix(
        self, interaction: discord.Interaction, beat_id: int, take: int = 1, *, prompt: str, strength: float
    ) -> None:
        """/remix: the form's settings typed as options."""
        original = await self._finished_beat(interaction, beat_id, take)
        await self._remix_of(interaction, original, take, prompt=prompt, strength=strength)

    async def _remix_of(
        self, interaction: discord.Interaction, original: JobView, take: int, *, prompt: str, strength: float
    ) -> None:
        p = params.remix(original, take, prompt=prompt, strength=strength)
        await self._submit(interaction, p, original, Relation.REMIX)

    async def edit(self, interaction: discord.Interaction, beat_id: int) -> None:
        """📝 opens the beat's settings in a form; submitting it queues a beat made from the edited ones."""
        original = await self._own_beat(interaction, beat_id)

        async def submitted(answer: discord.Interaction, edited: EditedSettings) -> None:
            p = params.edit(
                original,
                prompt=edited.prompt,
                presets=edited.presets,
                duration_s=edited.duration_s,
                bpm=edited.bpm,
                seed=edited.seed,
            )
            await self._submit(answer, p, original, Relation.EDIT)

        await interaction.response.send_modal(EditForm(params.beat_of(original), on_submit=submitted))

    async def reroll_by_reaction(
        self, payload: discord.RawReactionActionEvent, original: JobView, channel: discord.PartialMessageable
    ) -> None:
        """🔁 added to a result in ``channel``: a re-roll posted there (a reaction has no interaction to answer).

        Someone who may not re-roll it gets their reaction taken back, the quiet way of saying no.
        """
        member = payload.member
        if member is None or payload.guild_id is None:
            return
        guild = await self.jobs.guild(payload.guild_id)
        try:
            everyone = self.jobs.limits(guild).everyone_can_reroll
            self.jobs.check_owner(original, self.jobs.member_actor(member), everyone=everyone)
        except NotYours:
            log.info("re-roll reaction refused", extra={"job_id": original.id, "user_id": member.id})
            try:
                await channel.get_partial_message(payload.message_id).remove_reaction(payload.emoji, member)
            except discord.HTTPException as exc:  # no Manage Messages here: the reaction stays, nothing else happens
                log.info("could not remove a refused reaction", extra={"status": exc.status})
            return
        p = params.reroll(original)
        reference = discord.MessageReference(
            message_id=payload.message_id, channel_id=payload.channel_id, fail_if_not_exists=False
        )
        try:
            await self.jobs.check_limits(user_id=member.id, guild=guild, params=p)
            job, position = await self.jobs.enqueue(
                p,
                user=member,
                guild_id=payload.guild_id,
                channel_id=payload.channel_id,
                parent_id=original.id,
                relation=Relation.REROLL,
            )
        except UserFacingError as exc:
            await channel.send(f"⚠️ {member.mention}: {exc}", reference=reference, delete_after=60)
            return
        content = queued_text(job, position)
        message = await channel.send(content, reference=reference, view=cancel_view(job.id))
        await self.jobs.status_posted(job.id, message.id, content)

    # -- the job itself -----------------------------------------------------------------------------------------

    async def toggle_keep(self, interaction: discord.Interaction, job_id: int) -> None:
        job = await self._own_job(interaction, job_id)
        await self.jobs.set_kept(job, not job.kept)
        text = (
            f"⭐ {label(job)} is one of your keepers now: `/history kept:True` lists them."
            if not job.kept
            else f"{label(job)} is no longer one of your keepers."
        )
        await interaction.response.send_message(text, ephemeral=True)

    async def cancel(self, interaction: discord.Interaction, job_id: int) -> None:
        job = await self._own_job(interaction, job_id)
        if not await self.jobs.cancel(job, by=interaction.user.name):
            raise UserFacingError(f"{label(job)} has already finished; there is nothing to cancel.")
        content = f"❌ {label(job)} — cancelled by {interaction.user.mention}."
        self.status.posted(job.id, content)
        await interaction.response.edit_message(content=content, view=None)

    # -- shared steps ---------------------------------------------------------------------------------------------

    async def _own_job(self, interaction: discord.Interaction, job_id: int) -> JobView:
        return await self.jobs.own_job(self.jobs.actor(interaction), job_id, guild_id=interaction.guild_id, beat=False)

    async def _own_beat(self, interaction: discord.Interaction, beat_id: int) -> JobView:
        return await self.jobs.own_job(self.jobs.actor(interaction), beat_id, guild_id=interaction.guild_id)

    async def _finished_beat(self, interaction: discord.Interaction, beat_id: int, take: int) -> JobView:
        actor = self.jobs.actor(interaction)
        return await self.jobs.finished_beat(actor, beat_id, take, guild_id=interaction.guild_id)

    async def _submit(
        self, interaction: discord.Interaction, p: JobParams, original: JobView, relation: Relation
    ) -> None:
        guild = await self.jobs.guild(interaction.guild_id)
        await self.jobs.submit(interaction, p, guild, parent_id=original.id, relation=relation)
