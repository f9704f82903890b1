"""Builders for Discord API v10 objects, shaped like what Discord really sends.

Everything here returns plain ``dict`` objects (the wire format), never discord.py models, because the
point of the harness is to push these dicts through discord.py's *own* parsers (``ConnectionState``
parsers for gateway events, ``Message``/``Attachment`` constructors for REST answers). If a builder
omits a key that discord.py requires, the test fails the same way production would on a malformed
payload, which is exactly the class of bug the harness is meant to catch.

Ids are real-looking snowflakes (timestamp-based) so ``created_at`` and friends are plausible.
"""

from __future__ import annotations

import datetime
import enum
import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

if TYPE_CHECKING:
    from discord.app_commands.commands import Command, Group

__all__ = [
    "DEFAULT_APPLICATION_ID",
    "DEFAULT_ATTACHMENT_SIZE_LIMIT",
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_BOT_USER_ID",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_GUILD_ID",
    "DEFAULT_MEMBER_PERMISSIONS",
    "DEFAULT_USER_ID",
    "attachment_payload",
    "component_payload",
    "guild_payload",
    "iso_now",
    "member_payload",
    "message_payload",
    "modal_submit_payload",
    "new_snowflake",
    "new_token",
    "reaction_add_payload",
    "role_payload",
    "slash_command_payload",
    "text_channel_payload",
    "user_payload",
]

DISCORD_EPOCH_MS = 1_420_070_400_000

# Modern bot accounts share their id with the application, so the defaults do too.
DEFAULT_APPLICATION_ID = 1_180_000_000_000_000_001
DEFAULT_BOT_USER_ID = DEFAULT_APPLICATION_ID
DEFAULT_GUILD_ID = 1_180_000_000_000_000_100
DEFAULT_CHANNEL_ID = 1_180_000_000_000_000_200
DEFAULT_USER_ID = 1_180_000_000_000_000_300

#: Discord's default per-file upload limit for an unboosted guild (what ``attachment_size_limit`` carries).
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024

#: What an ordinary member may do in a channel: enough to run slash commands, read and react.
DEFAULT_MEMBER_PERMISSIONS: int = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    read_message_history=True,
    add_reactions=True,
    attach_files=True,
    embed_links=True,
    use_external_emojis=True,
    use_application_commands=True,
    connect=True,
    speak=True,
).value

#: What a typically-invited bot may do: post files and embeds, react, and edit its own messages.
DEFAULT_BOT_PERMISSIONS: int = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    read_message_history=True,
    add_reactions=True,
    attach_files=True,
    embed_links=True,
    use_external_emojis=True,
    use_application_commands=True,
).value

_sequence = itertools.count()
_last_snowflake = 0


def new_snowflake() -> int:
    """Return a fresh, strictly increasing snowflake whose timestamp part is *now*.

    Strictly increasing matters: discord.py and bots sort/compare ids (``before=``/``after=``), and
    Discord's own ids are monotonic, so tests should not see two objects with out-of-order ids.
    """
    global _last_snowflake
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    candidate = (ms << 22) | (next(_sequence) & 0xFFF)
    _last_snowflake = max(candidate, _last_snowflake + 1)
    return _last_snowflake


def new_token() -> str:
    """An interaction token: opaque, URL-safe and unique (discord.py puts it in the webhook URL)."""
    return "fake-interaction-token-" + secrets.token_hex(16)


def iso_now() -> str:
    """Current UTC time in the ISO-8601 form Discord uses for timestamps."""
    return datetime.datetime.now(datetime.UTC).isoformat()


def _sid(value: int | str) -> str:
    """Discord sends snowflakes as strings; accept ints for convenience."""
    return str(int(value))


# ---------------------------------------------------------------------------------------------
# Plain objects
# ---------------------------------------------------------------------------------------------


def user_payload(
    user_id: int = DEFAULT_USER_ID,
    *,
    username: str | None = None,
    global_name: str | None = None,
    bot: bool = False,
) -> dict[str, Any]:
    """A v10 user object (the subset discord.py reads, plus ``bot`` when it is one)."""
    data: dict[str, Any] = {
        "id": _sid(user_id),
        "username": username or f"user{int(user_id) % 100000}",
        "discriminator": "0",
        "global_name": global_name,
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
    }
    if bot:
        data["bot"] = True
    return data


def member_payload(
    user: Mapping[str, Any] | int = DEFAULT_USER_ID,
    *,
    roles: Iterable[int] = (),
    nick: str | None = None,
    permissions: int | None = None,
) -> dict[str, Any]:
    """A guild member object.

    ``permissions`` is only present on members embedded in interactions (it is the member's resolved
    permission set in the channel); discord.py reads it into ``Interaction.permissions``.
    """
    user_data = dict(user) if isinstance(user, Mapping) else user_payload(user)
    data: dict[str, Any] = {
        "user": user_data,
        "roles": [_sid(r) for r in roles],
        "nick": nick,
        "avatar": None,
        "banner": None,
        "joined_at": iso_now(),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def role_payload(
    role_id: int,
    *,
    name: str,
    permissions: int,
    position: int = 0,
    managed: bool = False,
    bot_id: int | None = None,
) -> dict[str, Any]:
    """A role. The ``@everyone`` role must have ``role_id == guild_id`` and position 0."""
    data: dict[str, Any] = {
        "id": _sid(role_id),
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": managed,
        "mentionable": False,
        "flags": 0,
    }
    if bot_id is not None:
        data["tags"] = {"bot_id": _sid(bot_id)}
    return data


def text_channel_payload(
    channel_id: int = DEFAULT_CHANNEL_ID,
    *,
    guild_id: int = DEFAULT_GUILD_ID,
    name: str = "general",
    position: int = 0,
    topic: str | None = None,
    parent_id: int | None = None,
    nsfw: bool = False,
) -> dict[str, Any]:
    """A guild text channel (type 0) as returned by ``GET /channels/{id}`` and in ``GUILD_CREATE``."""
    return {
        "id": _sid(channel_id),
        "type": 0,
        "guild_id": _sid(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "topic": topic,
        "nsfw": nsfw,
        "parent_id": None if parent_id is None else _sid(parent_id),
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def guild_payload(
    guild_id: int = DEFAULT_GUILD_ID,
    *,
    name: str = "Harness Guild",
    owner_id: int = DEFAULT_USER_ID,
    channels: Sequence[Mapping[str, Any]] | None = None,
    members: Sequence[Mapping[str, Any]] = (),
    roles: Sequence[Mapping[str, Any]] = (),
    everyone_permissions: int = DEFAULT_MEMBER_PERMISSIONS,
    bot_user: Mapping[str, Any] | None = None,
    bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
) -> dict[str, Any]:
    """A full ``GUILD_CREATE`` payload.

    Why each default exists:

    * one text channel with ``DEFAULT_CHANNEL_ID``, so interactions from that channel resolve to a
      real cached ``TextChannel`` (discord.py prefers the cached channel over the interaction's
      partial ``channel`` object);
    * an ``@everyone`` role, because discord.py computes permissions from it;
    * when ``bot_user`` is given, the bot is added as a member with a managed role carrying
      ``bot_permissions`` so ``guild.me`` and ``channel.permissions_for(guild.me)`` work;
    * ``member_count == len(members)`` so discord.py considers the guild *chunked* and does not try
      to request members over the (non-existent) gateway socket when the members intent is on;
    * ``unavailable: False`` marks it as the lazy-load ``GUILD_CREATE`` a real gateway sends at
      startup (dispatches ``on_guild_available``; ``on_guild_join`` if the key were absent).
    """
    gid = int(guild_id)
    role_list = [role_payload(gid, name="@everyone", permissions=everyone_permissions)]
    role_list.extend(dict(r) for r in roles)
    member_list = [dict(m) for m in members]
    if bot_user is not None:
        bot_role_id = new_snowflake()
        role_list.append(
            role_payload(
                bot_role_id,
                name=str(bot_user.get("username", "bot")),
                permissions=bot_permissions,
                position=1,
                managed=True,
                bot_id=int(bot_user["id"]),
            )
        )
        member_list.append(member_payload(bot_user, roles=[bot_role_id]))
    channel_list = (
        [text_channel_payload(DEFAULT_CHANNEL_ID, guild_id=gid)]
        if channels is None
        else [{**dict(c), "guild_id": _sid(gid)} for c in channels]
    )
    return {
        "id": _sid(gid),
        "name": name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": _sid(owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "vanity_url_code": None,
        "features": [],
        "emojis": [],
        "stickers": [],
        "roles": role_list,
        "joined_at": iso_now(),
        "large": False,
        "unavailable": False,
        "member_count": len(member_list),
        "members": member_list,
        "channels": channel_list,
        "threads": [],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def attachment_payload(
    filename: str,
    *,
    size: int = 0,
    url: str | None = None,
    content_type: str | None = None,
    attachment_id: int | None = None,
) -> dict[str, Any]:
    """An attachment object. For one whose bytes ``Attachment.read()`` can download, use
    ``FakeDiscord.add_attachment`` instead (it serves the bytes at ``url``)."""
    aid = attachment_id if attachment_id is not None else new_snowflake()
    link = url or f"https://cdn.discordapp.com/attachments/0/{aid}/{filename}"
    data: dict[str, Any] = {
        "id": _sid(aid),
        "filename": filename,
        "size": size,
        "url": link,
        "proxy_url": link,
    }
    if content_type is not None:
        data["content_type"] = content_type
    return data


def message_payload(
    content: str = "",
    *,
    channel_id: int = DEFAULT_CHANNEL_ID,
    guild_id: int | None = DEFAULT_GUILD_ID,
    author: Mapping[str, Any] | None = None,
    message_id: int | None = None,
    components: Sequence[Mapping[str, Any]] = (),
    attachments: Sequence[Mapping[str, Any]] = (),
    flags: int = 0,
) -> dict[str, Any]:
    """A message object, usable as a ``MESSAGE_CREATE`` payload or as ``component_payload(message=)``.

    ``guild_id`` and ``member`` are included the way the gateway includes them for guild messages.
    """
    author_data = dict(author) if author is not None else user_payload(DEFAULT_USER_ID)
    data: dict[str, Any] = {
        "id": _sid(message_id if message_id is not None else new_snowflake()),
        "channel_id": _sid(channel_id),
        "type": 0,
        "content": content,
        "author": author_data,
        "timestamp": iso_now(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [dict(a) for a in attachments],
        "embeds": [],
        "components": [dict(c) for c in components],
        "pinned": False,
        "flags": flags,
    }
    if guild_id is not None:
        data["guild_id"] = _sid(guild_id)
        member = member_payload(author_data)
        member.pop("user")
        data["member"] = member
    return data


# ---------------------------------------------------------------------------------------------
# Interactions
# ---------------------------------------------------------------------------------------------


def _application_id(bot: discord.Client | None, application_id: int | None) -> int:
    """The application id the payload should carry; it must match the bot's, because discord.py
    builds the followup webhook URL from ``interaction.application_id``."""
    if application_id is not None:
        return application_id
    if bot is not None and bot.application_id is not None:
        return bot.application_id
    return DEFAULT_APPLICATION_ID


def _bot_author(bot: discord.Client | None) -> dict[str, Any]:
    if bot is not None and bot.user is not None:
        return user_payload(bot.user.id, username=bot.user.name, bot=True)
    return user_payload(DEFAULT_BOT_USER_ID, username="beatforge", bot=True)


def _interaction_base(
    interaction_type: int,
    *,
    bot: discord.Client | None,
    application_id: int | None,
    user_id: int,
    user: Mapping[str, Any] | None,
    guild_id: int | None,
    channel_id: int,
    permissions: int,
    app_permissions: int,
    locale: str,
    guild_locale: str,
    attachment_size_limit: int,
    member_roles: Iterable[int],
) -> dict[str, Any]:
    """Fields common to every INTERACTION_CREATE, in the shape Discord sends them (API v10)."""
    user_data = dict(user) if user is not None else user_payload(user_id)
    payload: dict[str, Any] = {
        "id": _sid(new_snowflake()),
        "application_id": _sid(_application_id(bot, application_id)),
        "type": interaction_type,
        "token": new_token(),
        "version": 1,
        "locale": locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": attachment_size_limit,
        "app_permissions": str(app_permissions),
        "channel_id": _sid(channel_id),
    }
    if guild_id is not None:
        channel = text_channel_payload(channel_id, guild_id=guild_id)
        channel["permissions"] = str(permissions)
        payload.update(
            {
                "guild_id": _sid(guild_id),
                "guild_locale": guild_locale,
                "guild": {"id": _sid(guild_id), "locale": guild_locale, "features": []},
                "member": member_payload(user_data, roles=member_roles, permissions=permissions),
                "channel": channel,
                "context": 0,  # GUILD
                "authorizing_integration_owners": {"0": _sid(guild_id)},
            }
        )
    else:
        payload.update(
            {
                "user": user_data,
                "channel": {"id": _sid(channel_id), "type": 1, "recipients": [user_data], "flags": 0},
                "context": 1,  # BOT_DM
                "authorizing_integration_owners": {"0": "0"},
            }
        )
    return payload


_PY_TYPE_TO_OPTION = (
    (bool, discord.AppCommandOptionType.boolean),  # before int: bool is an int subclass
    (int, discord.AppCommandOptionType.integer),
    (float, discord.AppCommandOptionType.number),
    (str, discord.AppCommandOptionType.string),
)


def _unwrap_choice(value: Any) -> Any:
    """What the Discord client sends for a ``Choice`` or ``Enum`` argument: the choice value; for
    enums the member's value when it is a str/int (discord.py's value-based choices), else its name
    (discord.py falls back to name-based choices for other enums)."""
    if isinstance(value, app_commands.Choice):
        return value.value
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str | int) else value.name
    return value


def _infer_option_type(name: str, value: Any) -> discord.AppCommandOptionType:
    """Fallback when the command is not in a tree: derive the option type from the Python value."""
    value = _unwrap_choice(value)
    for py_type, option_type in _PY_TYPE_TO_OPTION:
        if isinstance(value, py_type):
            return option_type
    if isinstance(value, Mapping):
        if "filename" in value:
            return discord.AppCommandOptionType.attachment
        if "username" in value:
            return discord.AppCommandOptionType.user
    if isinstance(value, discord.abc.User):
        return discord.AppCommandOptionType.user
    raise TypeError(
        f"cannot infer the Discord option type of {name}={value!r}; pass bot= so the type comes from the "
        "command tree, or pass a str/int/float/bool, a user_payload() or an attachment dict"
    )


def _find_command(
    bot: discord.Client, name: str, subcommand: str | None, guild_id: int | None
) -> tuple[app_commands.Command[Any, ..., Any], bool]:
    """Look the command up the way ``CommandTree._get_app_command_options`` will, so the payload's
    ``data.guild_id`` matches where the command is registered. Returns (command, is_guild_command)."""
    tree: app_commands.CommandTree[Any] | None = bot._connection._command_tree
    if tree is None:
        raise LookupError(f"{bot!r} has no CommandTree; cannot resolve /{name}")
    root: Command[Any, ..., Any] | Group | app_commands.ContextMenu | None = None
    is_guild = False
    if guild_id is not None:
        root = tree.get_command(name, guild=discord.Object(guild_id))
        is_guild = root is not None
    if root is None:
        root = tree.get_command(name)
    if root is None or isinstance(root, app_commands.ContextMenu):
        known = sorted(c.name for c in tree.get_commands()) + sorted(
            f"{c.name} (guild {guild_id})" for c in tree.get_commands(guild=discord.Object(guild_id or 0))
        )
        raise LookupError(f"no slash command /{name} in the bot's tree; known: {known}")
    node: Any = root
    for part in (subcommand or "").split():
        if not isinstance(node, app_commands.Group):
            raise LookupError(f"/{node.qualified_name} has no subcommands (asked for {subcommand!r})")
        child = node.get_command(part)
        if child is None:
            raise LookupError(f"/{node.qualified_name} has no subcommand {part!r}")
        node = child
    if isinstance(node, app_commands.Group):
        raise LookupError(f"/{node.qualified_name} is a group; pass subcommand=")
    return node, is_guild


# (option name, value, the interaction's resolved data to add to, guild id) -> the option's value: a snowflake
_Resolver = Callable[[str, Any, dict[str, dict[str, Any]], int | None], Any]


def _resolve_user(name: str, value: Any, resolved: dict[str, dict[str, Any]], guild_id: int | None) -> Any:
    """A user (or mentionable) option: the user, and in a guild the member, go into ``resolved``."""
    if isinstance(value, Mapping):
        user_data = dict(value)
    elif isinstance(value, discord.abc.User):
        user_data = user_payload(value.id, username=value.name, bot=value.bot)
    else:
        user_data = user_payload(int(value))
    uid = user_data["id"]
    resolved.setdefault("users", {})[uid] = user_data
    if guild_id is not None:
        member = member_payload(user_data, permissions=DEFAULT_MEMBER_PERMISSIONS)
        member.pop("user")
        resolved.setdefault("members", {})[uid] = member
    return uid


def _resolve_channel(name: str, value: Any, resolved: dict[str, dict[str, Any]], guild_id: int | None) -> Any:
    if isinstance(value, Mapping):
        channel_data = dict(value)
    else:
        channel_data = text_channel_payload(int(value), guild_id=guild_id or DEFAULT_GUILD_ID)
    channel_data.setdefault("permissions", str(DEFAULT_MEMBER_PERMISSIONS))
    resolved.setdefault("channels", {})[channel_data["id"]] = channel_data
    return channel_data["id"]


def _resolve_role(name: str, value: Any, resolved: dict[str, dict[str, Any]], guild_id: int | None) -> Any:
    role_data = (
        dict(value) if isinstance(value, Mapping) else role_payload(int(value), name=f"role{value}", permissions=0)
    )
    resolved.setdefault("roles", {})[role_data["id"]] = role_data
    return role_data["id"]


def _resolve_attachment(name: str, value: Any, resolved: dict[str, dict[str, Any]], guild_id: int | None) -> Any:
    if not isinstance(value, Mapping) or "filename" not in value:
        raise TypeError(f"attachment option {name} needs an attachment dict (fake.add_attachment(...)), got {value!r}")
    resolved.setdefault("attachments", {})[str(value["id"])] = dict(value)
    return str(value["id"])


# Plain values are cast; snowflake-typed ones are also described in the interaction's ``resolved`` data.
_CASTS: dict[discord.AppCommandOptionType, Callable[[Any], Any]] = {
    discord.AppCommandOptionType.string: str,
    discord.AppCommandOptionType.integer: int,
    discord.AppCommandOptionType.boolean: bool,
    discord.AppCommandOptionType.number: float,
}
_RESOLVERS: dict[discord.AppCommandOptionType, _Resolver] = {
    discord.AppCommandOptionType.user: _resolve_user,
    discord.AppCommandOptionType.mentionable: _resolve_user,
    discord.AppCommandOptionType.channel: _resolve_channel,
    discord.AppCommandOptionType.role: _resolve_role,
    discord.AppCommandOptionType.attachment: _resolve_attachment,
}


def _encode_option(
    name: str,
    option_type: discord.AppCommandOptionType,
    value: Any,
    resolved: dict[str, dict[str, Any]],
    guild_id: int | None,
) -> dict[str, Any]:
    """Encode one option value as Discord does, adding snowflake-typed values to ``resolved``."""
    value = _unwrap_choice(value)
    if option_type in _CASTS:
        return {"name": name, "type": option_type.value, "value": _CASTS[option_type](value)}
    if option_type in _RESOLVERS:
        return {
            "name": name,
            "type": option_type.value,
            "value": _RESOLVERS[option_type](name, value, resolved, guild_id),
        }
    raise TypeError(f"option {name}: unsupported option type {option_type!r}")


def slash_command_payload(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    bot: discord.Client | None = None,
    subcommand: str | None = None,
    user_id: int = DEFAULT_USER_ID,
    user: Mapping[str, Any] | None = None,
    guild_id: int | None = DEFAULT_GUILD_ID,
    channel_id: int = DEFAULT_CHANNEL_ID,
    attachments: Sequence[Mapping[str, Any]] = (),
    permissions: int = DEFAULT_MEMBER_PERMISSIONS,
    app_permissions: int = DEFAULT_BOT_PERMISSIONS,
    member_roles: Iterable[int] = (),
    locale: str = "en-US",
    guild_locale: str = "en-US",
    attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
    application_id: int | None = None,
    command_id: int | None = None,
    focused: str | None = None,
) -> dict[str, Any]:
    """An INTERACTION_CREATE for a chat-input command (type 2; type 4 autocomplete if ``focused``).

    ``options`` maps the option's *Discord* name (after ``@app_commands.rename``) to a value. When
    ``bot`` is given, the command is looked up in its ``CommandTree`` and each option is encoded with
    the parameter's declared type (so ``3`` for a ``float`` parameter becomes ``3.0``, type 10, as
    Discord would send it); unknown option names raise instead of silently vanishing. Without
    ``bot`` the type comes from the Python value.

    ``subcommand`` is ``"sub"`` or ``"group sub"``. ``guild_id=None`` makes it a DM interaction
    (``user`` instead of ``member``). User options take an id, a ``user_payload()`` or a
    ``discord.User``; attachment options take a dict from ``FakeDiscord.add_attachment()`` or
    ``attachment_payload()`` and are placed in ``data.resolved.attachments``. ``attachments`` adds
    extra resolved attachments that no option references.
    """
    options = dict(options or {})
    resolved: dict[str, dict[str, Any]] = {}
    encoded: list[dict[str, Any]] = []
    is_guild_command = False
    if bot is not None:
        command, is_guild_command = _find_command(bot, name, subcommand, guild_id)
        params = {p.display_name: p for p in command.parameters}
        params.update({p.name: p for p in command.parameters if p.name not in params})
        unknown = set(options) - set(params)
        if unknown:
            raise LookupError(
                f"/{command.qualified_name} has no option(s) {sorted(unknown)}; it takes {sorted(params)}"
            )
        for key, value in options.items():
            param = params[key]
            encoded.append(_encode_option(param.display_name, param.type, value, resolved, guild_id))
    else:
        for key, value in options.items():
            encoded.append(_encode_option(key, _infer_option_type(key, value), value, resolved, guild_id))
    if focused is not None:
        for option in encoded:
            if option["name"] == focused:
                option["focused"] = True
                break
        else:
            raise LookupError(f"focused option {focused!r} is not among the options {[o['name'] for o in encoded]}")
    for extra in attachments:
        resolved.setdefault("attachments", {})[str(extra["id"])] = dict(extra)

    wrapped: list[dict[str, Any]] = encoded
    parts = (subcommand or "").split()
    for part, kind in reversed(list(zip(parts, [2, 1] if len(parts) == 2 else [1], strict=False))):
        wrapped = [{"name": part, "type": kind, "options": wrapped}]

    data: dict[str, Any] = {
        "id": _sid(command_id if command_id is not None else new_snowflake()),
        "name": name,
        "type": 1,
        "options": wrapped,
    }
    if resolved:
        data["resolved"] = resolved
    if is_guild_command and guild_id is not None:
        data["guild_id"] = _sid(guild_id)

    payload = _interaction_base(
        4 if focused is not None else 2,
        bot=bot,
        application_id=application_id,
        user_id=user_id,
        user=user,
        guild_id=guild_id,
        channel_id=channel_id,
        permissions=permissions,
        app_permissions=app_permissions,
        locale=locale,
        guild_locale=guild_locale,
        attachment_size_limit=attachment_size_limit,
        member_roles=member_roles,
    )
    payload["data"] = data
    return payload


def component_payload(
    custom_id: str,
    *,
    message: Mapping[str, Any] | None = None,
    bot: discord.Client | None = None,
    component_type: int = 2,
    values: Sequence[str] | None = None,
    user_id: int = DEFAULT_USER_ID,
    user: Mapping[str, Any] | None = None,
    guild_id: int | None = DEFAULT_GUILD_ID,
    channel_id: int | None = None,
    permissions: int = DEFAULT_MEMBER_PERMISSIONS,
    app_permissions: int = DEFAULT_BOT_PERMISSIONS,
    member_roles: Iterable[int] = (),
    locale: str = "en-US",
    guild_locale: str = "en-US",
    attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
    application_id: int | None = None,
) -> dict[str, Any]:
    """An INTERACTION_CREATE for a message component (type 3): a button (2) or string select (3).

    ``message`` is the message the component lives on, ideally the one the bot really posted
    (``fake.messages[id]``), because discord.py rebuilds ``DynamicItem``\\s from that message's
    ``components`` and silently ignores the click if the custom_id is not in it. Without
    ``message`` a bot-authored message holding just this one component is synthesised.
    ``channel_id`` defaults to the message's channel.
    """
    if message is None:
        if component_type == 2:
            component: dict[str, Any] = {"type": 2, "style": 1, "label": custom_id[:80], "custom_id": custom_id}
        elif component_type == 3:
            opts = list(values or ["option"])
            component = {
                "type": 3,
                "custom_id": custom_id,
                "options": [{"label": v, "value": v} for v in opts],
                "min_values": 1,
                "max_values": len(opts),
            }
        else:
            raise ValueError(f"cannot synthesise a message for component type {component_type}; pass message=")
        message_data = message_payload(
            "",
            channel_id=channel_id if channel_id is not None else DEFAULT_CHANNEL_ID,
            guild_id=guild_id,
            author=_bot_author(bot),
            components=[{"type": 1, "components": [component]}],
        )
        message_data.pop("member", None)
    else:
        message_data = dict(message)
    effective_channel = channel_id if channel_id is not None else int(message_data["channel_id"])

    payload = _interaction_base(
        3,
        bot=bot,
        application_id=application_id,
        user_id=user_id,
        user=user,
        guild_id=guild_id,
        channel_id=effective_channel,
        permissions=permissions,
        app_permissions=app_permissions,
        locale=locale,
        guild_locale=guild_locale,
        attachment_size_limit=attachment_size_limit,
        member_roles=member_roles,
    )
    data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
    if component_type in (3, 5, 6, 7, 8):
        data["values"] = list(values or [])
    payload["data"] = data
    payload["message"] = message_data
    return payload


def modal_submit_payload(
    custom_id: str,
    values: Mapping[str, str | Sequence[str]],
    *,
    bot: discord.Client | None = None,
    message: Mapping[str, Any] | None = None,
    user_id: int = DEFAULT_USER_ID,
    user: Mapping[str, Any] | None = None,
    guild_id: int | None = DEFAULT_GUILD_ID,
    channel_id: int = DEFAULT_CHANNEL_ID,
    permissions: int = DEFAULT_MEMBER_PERMISSIONS,
    app_permissions: int = DEFAULT_BOT_PERMISSIONS,
    member_roles: Iterable[int] = (),
    locale: str = "en-US",
    guild_locale: str = "en-US",
    attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
    application_id: int | None = None,
) -> dict[str, Any]:
    """An INTERACTION_CREATE for a modal submission (type 5).

    ``values`` maps each input's ``custom_id`` to its value: a ``str`` for a text input (type 4), a
    list of strings for a select (type 3). discord.py only dispatches it if a modal with this
    ``custom_id`` was sent by the bot earlier (``response.send_modal``) and is still alive.
    """
    rows: list[dict[str, Any]] = []
    for input_id, value in values.items():
        if isinstance(value, str):
            rows.append({"type": 1, "components": [{"type": 4, "custom_id": input_id, "value": value}]})
        else:
            rows.append({"type": 18, "component": {"type": 3, "custom_id": input_id, "values": list(value)}})
    payload = _interaction_base(
        5,
        bot=bot,
        application_id=application_id,
        user_id=user_id,
        user=user,
        guild_id=guild_id,
        channel_id=channel_id,
        permissions=permissions,
        app_permissions=app_permissions,
        locale=locale,
        guild_locale=guild_locale,
        attachment_size_limit=attachment_size_limit,
        member_roles=member_roles,
    )
    payload["data"] = {"custom_id": custom_id, "components": rows}
    if message is not None:
        payload["message"] = dict(message)
    return payload


_CUSTOM_EMOJI = re.compile(r"<?(?P<animated>a?):?(?P<name>[A-Za-z0-9_~]+):(?P<id>\d+)>?")


def reaction_add_payload(
    emoji: str,
    *,
    message_id: int,
    channel_id: int = DEFAULT_CHANNEL_ID,
    user_id: int = DEFAULT_USER_ID,
    guild_id: int | None = DEFAULT_GUILD_ID,
    message_author_id: int | None = None,
    burst: bool = False,
) -> dict[str, Any]:
    """A MESSAGE_REACTION_ADD event. ``emoji`` is a unicode emoji or ``name:id`` / ``<:name:id>``."""
    match = _CUSTOM_EMOJI.fullmatch(emoji)
    if match:
        emoji_data: dict[str, Any] = {
            "id": match["id"],
            "name": match["name"],
            "animated": bool(match["animated"]),
        }
    else:
        emoji_data = {"id": None, "name": emoji}
    payload: dict[str, Any] = {
        "user_id": _sid(user_id),
        "channel_id": _sid(channel_id),
        "message_id": _sid(message_id),
        "emoji": emoji_data,
        "burst": burst,
        "burst_colors": [],
        "type": 1 if burst else 0,
    }
    if message_author_id is not None:
        payload["message_author_id"] = _sid(message_author_id)
    if guild_id is not None:
        payload["guild_id"] = _sid(guild_id)
        payload["member"] = member_payload(user_id)
    return payload
