"""Proof that the Discord harness drives discord.py's real code paths end to end.

The bot here is deliberately tiny and defined in this file, so these tests exercise the harness,
not beatforge: slash command dispatch with deferred followups and files, tree-level error handling,
a persistent ``DynamicItem`` button, a modal, raw reaction events, plain channel messages, and the
failure modes (rate limit retry, unknown interaction, followup before acknowledging).
"""

from __future__ import annotations

import enum
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import discord
import discord.http
import pytest
from discord import app_commands
from discord.ext import commands

from tests.support.bot import CALLBACK, FOLLOWUP
from tests.support.discord_harness import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_USER_ID,
    FakeDiscord,
    UploadedFile,
    component_payload,
    connected,
    dispatch_gateway,
    modal_submit_payload,
    reaction_add_payload,
    settle,
    slash_command_payload,
)

pytestmark = pytest.mark.timeout(5)

CHANNEL_MESSAGES = r"^/channels/\d+/messages$"


class BoomError(app_commands.AppCommandError):
    """A domain error a command raises and the tree's on_error turns into a polite reply."""


@dataclass
class Seen:
    """What the bot's handlers observed, for assertions that the right objects reached them."""

    tree_errors: list[app_commands.AppCommandError] = field(default_factory=list)
    reactions: list[discord.RawReactionActionEvent] = field(default_factory=list)
    option_values: dict[str, Any] = field(default_factory=dict)
    interaction_context: dict[str, Any] = field(default_factory=dict)
    ready_calls: int = 0


class HarnessTree(app_commands.CommandTree):
    """Tree-wide error handling, the pattern beatforge uses: known errors become ephemeral replies."""

    seen: Seen

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        self.seen.tree_errors.append(error)
        if isinstance(error, BoomError):
            await interaction.response.send_message(f"Something broke: {error}", ephemeral=True)


class CounterButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"harness:count:(?P<n>\d+)"):
    """A persistent button whose state lives in its custom_id, so it survives bot restarts."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Count {n}", custom_id=f"harness:count:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> CounterButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(CounterButton(self.n + 1))
        await interaction.response.edit_message(content=f"count={self.n + 1}", view=view)


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[FeedbackModal] = discord.ui.TextInput(label="Text", custom_id="feedback-text")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks for: {self.text.value}", ephemeral=True)


class HarnessBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned, intents=discord.Intents.default(), tree_cls=HarnessTree
        )
        self.seen = Seen()
        assert isinstance(self.tree, HarnessTree)
        self.tree.seen = self.seen
        self._register_commands()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(CounterButton)

    async def on_ready(self) -> None:
        self.seen.ready_calls += 1

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.seen.reactions.append(payload)
        channel = self.get_partial_messageable(payload.channel_id)
        await channel.get_partial_message(payload.message_id).add_reaction("✅")

    def _register_commands(self) -> None:
        seen = self.seen

        @self.tree.command(name="echo", description="Echo text back as a file")
        async def echo(interaction: discord.Interaction, text: str) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.followup.send(
                f"you said: {text}",
                file=discord.File(io.BytesIO(text.encode()), filename="echo.txt"),
                allowed_mentions=discord.AllowedMentions.none(),
            )

        @self.tree.command(name="boom", description="Always fails")
        async def boom(interaction: discord.Interaction) -> None:
            raise BoomError("the mixer caught fire")

        @self.tree.command(name="types", description="Reports what discord.py parsed")
        async def types(
            interaction: discord.Interaction,
            count: int,
            tempo: float,
            loud: bool,
            who: discord.Member,
            sample: discord.Attachment,
        ) -> None:
            seen.option_values.update(
                count=count, tempo=tempo, loud=loud, who=who, sample=sample, sample_bytes=await sample.read()
            )
            seen.interaction_context.update(
                guild=interaction.guild,
                channel=interaction.channel,
                user=interaction.user,
                permissions=interaction.permissions,
                app_permissions=interaction.app_permissions,
                filesize_limit=interaction.filesize_limit,
            )
            await interaction.response.send_message("parsed", ephemeral=True)

        @self.tree.command(name="panel", description="Posts a persistent counter button")
        async def panel(interaction: discord.Interaction) -> None:
            view = discord.ui.View(timeout=None)
            view.add_item(CounterButton(0))
            await interaction.response.send_message("count=0", view=view)

        @self.tree.command(name="feedback", description="Opens a modal")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(FeedbackModal())

        @self.tree.command(name="ack", description="Defers")
        async def ack(interaction: discord.Interaction) -> None:
            await interaction.response.defer()

        @self.tree.command(name="eager", description="Sends a followup without acknowledging first")
        async def eager(interaction: discord.Interaction) -> None:
            await interaction.followup.send("too early")

        @self.tree.command(name="where", description="Reports where it was invoked")
        async def where(interaction: discord.Interaction) -> None:
            seen.interaction_context.update(guild=interaction.guild, channel=interaction.channel, user=interaction.user)
            await interaction.response.send_message("here")

        beat = app_commands.Group(name="beat", description="Beat commands")

        @beat.command(name="make", description="Make a beat")
        async def make(interaction: discord.Interaction, bpm: int, style: str = "lofi") -> None:
            seen.option_values.update(bpm=bpm, style=style)
            await interaction.response.send_message(f"{style} at {bpm}")

        self.tree.add_command(beat)

        @self.tree.command(name="local", description="Only in the test guild", guild=discord.Object(DEFAULT_GUILD_ID))
        async def local(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("guild command")


@pytest.fixture
async def env() -> AsyncIterator[tuple[HarnessBot, FakeDiscord]]:
    bot = HarnessBot()
    async with FakeDiscord() as fake, connected(bot, fake):
        yield bot, fake


async def test_login_runs_real_startup_and_points_discord_py_at_the_fake() -> None:
    original = discord.http.Route.BASE
    bot = HarnessBot()
    async with FakeDiscord() as fake:
        async with connected(bot, fake):
            assert fake.api_base == discord.http.Route.BASE
            assert bot.user is not None and bot.user.id == int(fake.bot_user["id"])
            assert bot.application_id == fake.application_id
            assert bot.is_ready() and bot.seen.ready_calls == 1
            guild = bot.get_guild(DEFAULT_GUILD_ID)
            assert guild is not None and guild.me is not None
            assert isinstance(guild.get_channel(DEFAULT_CHANNEL_ID), discord.TextChannel)
            synced = await bot.tree.sync()
        assert [r.path for r in fake.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
        assert fake.requests[0].headers["Authorization"] == "Bot fake-token"
        sync_request = fake.find("PUT", r"^/applications/\d+/commands$")[0]
        assert {c["name"] for c in sync_request.json} == {c.name for c in synced}
        assert all(c.id > 0 for c in synced)
    assert original == discord.http.Route.BASE
    assert bot.is_closed()


async def test_slash_command_defers_then_sends_followup_with_file(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    payload = slash_command_payload("echo", {"text": "hi @everyone"}, bot=bot)
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)

    followup = await fake.wait_for("POST", FOLLOWUP)
    (callback,) = fake.find("POST", CALLBACK)
    assert callback.index < followup.index and callback.timestamp <= followup.timestamp
    assert callback.path == f"/interactions/{payload['id']}/{payload['token']}/callback"
    assert callback.json == {"type": 5}
    assert callback.query["with_response"] == "1"

    assert followup.path == f"/webhooks/{bot.application_id}/{payload['token']}"
    assert followup.query["wait"] == "1"
    assert followup.files == [UploadedFile("echo.txt", b"hi @everyone", "application/octet-stream")]
    assert followup.json["content"] == "you said: hi @everyone"
    assert followup.json["allowed_mentions"] == {"parse": []}

    created = followup.response
    assert created["attachments"][0]["filename"] == "echo.txt"
    assert created["attachments"][0]["size"] == len(b"hi @everyone")
    original = fake.original_response(payload["token"])
    assert original is not None and original["flags"] & 128, "a thinking defer leaves a loading original"


async def test_tree_on_error_replies_ephemerally(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("boom", bot=bot))

    callback = await fake.wait_for("POST", CALLBACK)
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] == 64
    assert callback.json["data"]["content"] == "Something broke: the mixer caught fire"
    await settle(bot)
    assert [type(e) for e in bot.seen.tree_errors] == [BoomError]


async def test_options_are_typed_from_the_tree_and_resolved(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    sample = fake.add_attachment("loop.wav", b"RIFF....WAVEfmt ")
    payload = slash_command_payload(
        "types", {"count": 3, "tempo": 120, "loud": True, "who": 4242, "sample": sample}, bot=bot
    )
    assert [o["type"] for o in payload["data"]["options"]] == [4, 10, 5, 6, 11]
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    await fake.wait_for("POST", CALLBACK)
    await settle(bot)

    values = bot.seen.option_values
    assert values["count"] == 3 and isinstance(values["count"], int)
    assert values["tempo"] == 120.0 and isinstance(values["tempo"], float)
    assert values["loud"] is True
    assert isinstance(values["who"], discord.Member) and values["who"].id == 4242
    assert isinstance(values["sample"], discord.Attachment) and values["sample"].filename == "loop.wav"
    assert values["sample_bytes"] == b"RIFF....WAVEfmt "
    context = bot.seen.interaction_context
    assert context["guild"] is bot.get_guild(DEFAULT_GUILD_ID)
    assert isinstance(context["channel"], discord.TextChannel) and context["channel"].id == DEFAULT_CHANNEL_ID
    assert isinstance(context["user"], discord.Member) and context["user"].id == DEFAULT_USER_ID
    assert context["permissions"].attach_files and context["app_permissions"].embed_links
    assert context["filesize_limit"] == 10 * 1024 * 1024


async def test_payload_builder_rejects_unknown_options(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, _ = env
    with pytest.raises(LookupError, match="no option"):
        slash_command_payload("echo", {"txt": "typo"}, bot=bot)
    with pytest.raises(LookupError, match="no slash command /nope"):
        slash_command_payload("nope", bot=bot)


async def test_dynamic_button_click_updates_the_message(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    panel = slash_command_payload("panel", bot=bot)
    dispatch_gateway(bot, "INTERACTION_CREATE", panel)
    await fake.wait_for("POST", CALLBACK)
    posted = fake.original_response(panel["token"])
    assert posted is not None
    assert posted["components"][0]["components"][0]["custom_id"] == "harness:count:0"

    since = len(fake.requests)
    click = component_payload("harness:count:0", message=posted, bot=bot)
    dispatch_gateway(bot, "INTERACTION_CREATE", click)
    update = await fake.wait_for("POST", CALLBACK, since=since)
    assert update.json["type"] == 7
    assert update.json["data"]["content"] == "count=1"

    stored = fake.messages[int(posted["id"])]
    assert stored["content"] == "count=1"
    assert stored["components"][0]["components"][0]["custom_id"] == "harness:count:1"
    assert stored["edited_timestamp"] is not None


async def test_modal_round_trip(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("feedback", bot=bot))
    opened = await fake.wait_for("POST", CALLBACK)
    assert opened.json["type"] == 9
    modal_id = opened.json["data"]["custom_id"]
    # The fake saw the callback before discord.py read the answer and registered the modal; a
    # submit dispatched right now would be discarded as "unknown custom_id". Let the bot finish.
    await settle(bot)

    since = len(fake.requests)
    dispatch_gateway(bot, "INTERACTION_CREATE", modal_submit_payload(modal_id, {"feedback-text": "more cowbell"}))
    reply = await fake.wait_for("POST", CALLBACK, since=since)
    assert reply.json["type"] == 4
    assert reply.json["data"] == {**reply.json["data"], "content": "thanks for: more cowbell", "flags": 64}


async def test_channel_send_edit_fetch_and_reaction_event(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    channel = bot.get_partial_messageable(DEFAULT_CHANNEL_ID)
    message = await channel.send("beat ready", file=discord.File(io.BytesIO(b"\x00\x01"), filename="beat.mp3"))
    (sent,) = fake.find("POST", CHANNEL_MESSAGES)
    assert sent.json["content"] == "beat ready"
    assert sent.files == [UploadedFile("beat.mp3", b"\x00\x01", "application/octet-stream")]
    assert message.id == int(sent.response["id"]) and message.author.id == bot.user.id
    assert message.attachments[0].filename == "beat.mp3" and await message.attachments[0].read() == b"\x00\x01"

    edited = await message.edit(content="beat ready (v2)")
    assert edited.content == "beat ready (v2)"
    fetched = await channel.fetch_message(message.id)
    assert fetched.content == "beat ready (v2)"
    assert [a.filename for a in fetched.attachments] == ["beat.mp3"], "an edit without attachments keeps them"

    dispatch_gateway(bot, "MESSAGE_REACTION_ADD", reaction_add_payload("🎵", message_id=message.id))
    await settle(bot)
    (event,) = bot.seen.reactions
    assert event.emoji.name == "🎵" and event.user_id == DEFAULT_USER_ID and event.message_id == message.id
    assert isinstance(event.member, discord.Member) and event.member.guild.id == DEFAULT_GUILD_ID
    (reacted,) = fake.find("PUT", r"/reactions/.+/@me$")
    assert reacted.path == f"/channels/{DEFAULT_CHANNEL_ID}/messages/{message.id}/reactions/✅/@me"
    assert fake.messages[message.id]["reactions"][0]["emoji"]["name"] == "✅"


async def test_rate_limited_request_is_retried(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    fake.fail_next("POST", CHANNEL_MESSAGES, 429, {"retry_after": 0.05, "global": False})
    message = await bot.get_partial_messageable(DEFAULT_CHANNEL_ID).send("after the limit")

    attempts = fake.find("POST", CHANNEL_MESSAGES)
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[0].injected and not attempts[1].injected
    assert attempts[1].timestamp - attempts[0].timestamp >= 0.04  # discord.py slept retry_after
    assert message.content == "after the limit"
    assert len(fake.messages_in(DEFAULT_CHANNEL_ID)) == 1, "the rejected attempt must not create a message"


async def test_rate_limited_followup_webhook_is_retried(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    fake.fail_next("POST", FOLLOWUP, 429, {"retry_after": 0.05})
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("echo", {"text": "x"}, bot=bot))
    delivered = await fake.wait_for(lambda r: r.status == 200 and re.search(FOLLOWUP, r.path) is not None)
    assert [r.status for r in fake.find("POST", FOLLOWUP)] == [429, 200]
    assert delivered.files[0].data == b"x"


async def test_unknown_interaction_surfaces_as_not_found(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    fake.fail_next("POST", CALLBACK, 404, {"code": 10062, "message": "Unknown interaction"})
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("ack", bot=bot))
    await fake.wait_for("POST", CALLBACK)
    await settle(bot)

    (error,) = bot.seen.tree_errors
    assert isinstance(error, app_commands.CommandInvokeError)
    assert isinstance(error.original, discord.NotFound)
    assert error.original.code == 10062


async def test_followup_before_acknowledging_is_rejected_like_discord(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("eager", bot=bot))
    rejected = await fake.wait_for("POST", FOLLOWUP)
    assert rejected.status == 404 and rejected.response["code"] == 10015
    await settle(bot)
    (error,) = bot.seen.tree_errors
    assert isinstance(error, app_commands.CommandInvokeError) and isinstance(error.original, discord.NotFound)


async def test_unknown_routes_are_recorded_and_answer_404(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    with pytest.raises(discord.NotFound) as caught:
        await bot.http.request(discord.http.Route("GET", "/guilds/{guild_id}/audit-logs", guild_id=DEFAULT_GUILD_ID))
    assert caught.value.text == "Unknown route"
    (unknown,) = fake.unknown_requests
    assert unknown.path == f"/guilds/{DEFAULT_GUILD_ID}/audit-logs"


async def test_wait_for_timeout_lists_requests_seen() -> None:
    async with FakeDiscord() as fake:
        with pytest.raises(TimeoutError, match=r"(?s)no request matching 'DELETE .*requests seen:.*\(none\)"):
            await fake.wait_for("DELETE", r"^/channels/", timeout=0.05)


async def test_subcommands_and_guild_commands_route_through_the_tree(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    payload = slash_command_payload("beat", {"bpm": 90}, bot=bot, subcommand="make")
    assert payload["data"]["options"] == [
        {"name": "make", "type": 1, "options": [{"name": "bpm", "type": 4, "value": 90}]}
    ]
    dispatch_gateway(bot, "INTERACTION_CREATE", payload)
    reply = await fake.wait_for("POST", CALLBACK)
    assert reply.json["data"]["content"] == "lofi at 90"

    local = slash_command_payload("local", bot=bot)
    assert local["data"]["guild_id"] == str(DEFAULT_GUILD_ID), "guild commands are looked up by data.guild_id"
    since = len(fake.requests)
    dispatch_gateway(bot, "INTERACTION_CREATE", local)
    reply = await fake.wait_for("POST", CALLBACK, since=since)
    assert reply.json["data"]["content"] == "guild command"


async def test_dm_interaction_has_user_and_dm_channel(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("where", bot=bot, guild_id=None, channel_id=77))
    reply = await fake.wait_for("POST", CALLBACK)
    assert reply.status == 200 and reply.response["resource"]["message"]["channel_id"] == "77"
    await settle(bot)
    context = bot.seen.interaction_context
    assert context["guild"] is None
    assert isinstance(context["channel"], discord.DMChannel)
    assert type(context["user"]) is discord.User


@pytest.mark.parametrize(
    ("status", "body", "exception"),
    [
        (403, {"code": 50013, "message": "Missing Permissions"}, discord.Forbidden),
        (404, {"code": 10003, "message": "Unknown Channel"}, discord.NotFound),
        (413, {"code": 40005, "message": "Request entity too large"}, discord.HTTPException),
    ],
)
async def test_injected_errors_map_to_discord_py_exceptions(
    env: tuple[HarnessBot, FakeDiscord], status: int, body: dict[str, Any], exception: type[discord.HTTPException]
) -> None:
    bot, fake = env
    fake.fail_next("POST", CHANNEL_MESSAGES, status, body)
    with pytest.raises(exception) as caught:
        await bot.get_partial_messageable(DEFAULT_CHANNEL_ID).send("nope")
    assert caught.value.status == status and caught.value.code == body["code"]
    assert fake.messages_in(DEFAULT_CHANNEL_ID) == []


async def test_server_error_is_retried_by_discord_py(env: tuple[HarnessBot, FakeDiscord]) -> None:
    bot, fake = env
    fake.fail_next("POST", CHANNEL_MESSAGES, 500)  # discord.py sleeps 1 s before its retry
    message = await bot.get_partial_messageable(DEFAULT_CHANNEL_ID).send("eventually")
    assert [r.status for r in fake.find("POST", CHANNEL_MESSAGES)] == [500, 200]
    assert message.content == "eventually"


async def test_fake_enforces_upload_limit_and_ack_deadline() -> None:
    bot = HarnessBot()
    async with FakeDiscord(upload_limit=8, interaction_ack_deadline=0.0) as fake, connected(bot, fake):
        with pytest.raises(discord.HTTPException) as caught:
            await bot.get_partial_messageable(DEFAULT_CHANNEL_ID).send(file=discord.File(io.BytesIO(b"x" * 9), "big"))
        assert caught.value.status == 413 and caught.value.code == 40005

        dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("ack", bot=bot))
        late = await fake.wait_for("POST", CALLBACK)
        assert late.status == 404 and late.response["code"] == 10062
        await settle(bot)
        (error,) = bot.seen.tree_errors
        assert isinstance(error, app_commands.CommandInvokeError) and isinstance(error.original, discord.NotFound)


class Mode(enum.Enum):
    fast = "fast"
    slow = "slow"


def test_payload_builder_without_bot_infers_types_from_python_values() -> None:
    payload = slash_command_payload("x", {"s": "a", "i": 1, "b": True, "f": 1.5, "mode": Mode.fast}, guild_id=None)
    assert [(o["name"], o["type"], o["value"]) for o in payload["data"]["options"]] == [
        ("s", 3, "a"),
        ("i", 4, 1),
        ("b", 5, True),
        ("f", 10, 1.5),
        ("mode", 3, "fast"),
    ]
    assert "member" not in payload and payload["user"]["id"] == str(DEFAULT_USER_ID)
    assert payload["attachment_size_limit"] == 10485760 and payload["entitlements"] == []


async def test_login_failure_surfaces_and_still_restores_route_base() -> None:
    original = discord.http.Route.BASE
    bot = HarnessBot()
    async with FakeDiscord() as fake:
        fake.fail_next("GET", r"^/users/@me$", 401, {"message": "401: Unauthorized", "code": 0})
        with pytest.raises(discord.LoginFailure):
            async with connected(bot, fake):
                pytest.fail("connected() must not yield after a failed login")
    assert original == discord.http.Route.BASE
    assert bot.is_closed()
