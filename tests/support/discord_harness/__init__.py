"""Run a real discord.py bot against a loopback fake of Discord's HTTP API.

See ``tests/README.md``. Typical use::

    async with FakeDiscord() as fake, connected(bot, fake):
        dispatch_gateway(bot, "INTERACTION_CREATE", slash_command_payload("echo", {"text": "hi"}, bot=bot))
        followup = await fake.wait_for("POST", r"^/webhooks/")
"""

from .driver import (
    DISCORD_TASK_PREFIXES,
    connected,
    dispatch_gateway,
    dispatch_ready,
    fake_for,
    patch_api_base,
    ready_payload,
    settle,
)
from .fake import API_PREFIX, FakeDiscord, FakeInteraction, RecordedRequest, Stall, UploadedFile
from .gateway import FakeGateway, running, shard_of
from .payloads import (
    DEFAULT_APPLICATION_ID,
    DEFAULT_ATTACHMENT_SIZE_LIMIT,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_BOT_USER_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_MEMBER_PERMISSIONS,
    DEFAULT_USER_ID,
    attachment_payload,
    component_payload,
    guild_payload,
    member_payload,
    message_payload,
    modal_submit_payload,
    new_snowflake,
    reaction_add_payload,
    role_payload,
    slash_command_payload,
    text_channel_payload,
    user_payload,
)

__all__ = [
    "API_PREFIX",
    "DEFAULT_APPLICATION_ID",
    "DEFAULT_ATTACHMENT_SIZE_LIMIT",
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_BOT_USER_ID",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_GUILD_ID",
    "DEFAULT_MEMBER_PERMISSIONS",
    "DEFAULT_USER_ID",
    "DISCORD_TASK_PREFIXES",
    "FakeDiscord",
    "FakeGateway",
    "FakeInteraction",
    "RecordedRequest",
    "Stall",
    "UploadedFile",
    "attachment_payload",
    "component_payload",
    "connected",
    "dispatch_gateway",
    "dispatch_ready",
    "fake_for",
    "guild_payload",
    "member_payload",
    "message_payload",
    "modal_submit_payload",
    "new_snowflake",
    "patch_api_base",
    "reaction_add_payload",
    "ready_payload",
    "role_payload",
    "running",
    "settle",
    "shard_of",
    "slash_command_payload",
    "text_channel_payload",
    "user_payload",
]
