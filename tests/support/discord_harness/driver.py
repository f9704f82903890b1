"""Point a real discord.py client at ``FakeDiscord`` and feed it gateway events without a socket.

How the bot is redirected (and why this way): discord.py 2.7 builds every REST URL as
``Route.BASE + path`` where ``Route.BASE`` is a class attribute hard-coded to
``https://discord.com/api/v10``. There is no public option for the API base: ``Client(connector=)``,
``proxy=`` and ``http_trace=`` only act below the URL (the URL stays ``https://discord.com``, so a
connector/resolver trick would also need a TLS server with a trusted certificate), and
``discord.http._set_api_version`` only swaps the version number. The webhook adapter used for
interaction callbacks and followups (``discord.webhook.async_``) imports the *same* ``Route``
class, so patching that one attribute redirects both the bot's ``HTTPClient`` and all webhook
traffic. ``patch_api_base`` does that, refuses to nest with a different base (the attribute is
process-global), and always restores the original.

How events arrive: the gateway's ``DiscordWebSocket.received_message`` ends in
``client._connection.parsers[event](data)``. ``dispatch_gateway`` calls exactly that parser with a
JSON round-tripped copy of the payload, so interactions go through ``Interaction.__init__``, the
``CommandTree``, option parsing, checks, ``ViewStore`` and ``DynamicItem`` matching just as in
production. Only the socket, heartbeats and sequence numbers are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import discord
import discord.http

from .fake import FakeDiscord
from .payloads import guild_payload, new_snowflake

__all__ = [
    "DISCORD_TASK_PREFIXES",
    "connected",
    "dispatch_gateway",
    "dispatch_ready",
    "patch_api_base",
    "ready_payload",
    "settle",
]

_fakes: weakref.WeakKeyDictionary[discord.Client, FakeDiscord] = weakref.WeakKeyDictionary()
_patch_depth = 0

#: Names discord.py 2.7 gives the tasks it spawns for events, commands, views and modals.
DISCORD_TASK_PREFIXES: tuple[str, ...] = (
    "CommandTree-invoker",
    "discord.py: ",
    "discord-ui-view-dispatch-",
    "discord-ui-dynamic-item-",
    "discord-ui-modal-dispatch-",
)


@contextlib.contextmanager
def patch_api_base(api_base: str) -> Iterator[None]:
    """Temporarily make every discord.py REST and webhook request go to ``api_base``.

    Re-entrant for the same base (two bots on one fake); a different base while patched raises,
    because ``Route.BASE`` is a single process-wide attribute and the second bot would silently
    talk to the first fake.
    """
    global _patch_depth
    route = discord.http.Route
    if _patch_depth and api_base != route.BASE:
        raise RuntimeError(f"Route.BASE is already patched to {route.BASE}; one FakeDiscord per process at a time")
    original = route.BASE
    route.BASE = api_base
    _patch_depth += 1
    try:
        yield
    finally:
        _patch_depth -= 1
        route.BASE = original


def fake_for(bot: discord.Client) -> FakeDiscord | None:
    """The fake a bot was connected to with ``connected()``, if any."""
    return _fakes.get(bot)


def dispatch_gateway(bot: discord.Client, event: str, payload: Mapping[str, Any]) -> None:
    """Deliver a gateway DISPATCH event (``"INTERACTION_CREATE"``, ``"MESSAGE_REACTION_ADD"``, ...).

    Does what ``DiscordWebSocket.received_message`` does for a DISPATCH: dispatches
    ``socket_event_type`` and calls the ``ConnectionState`` parser. The payload is JSON round-tripped
    first, as it would be on the wire, so the test's dict is never mutated by discord.py and
    non-JSON values fail loudly. If the bot was connected to a fake, the fake observes the event
    first, so e.g. the interaction's callback, followups and ``@original`` can be answered.

    Callbacks run as tasks discord.py schedules; ``await settle(bot)`` or ``fake.wait_for(...)``.
    """
    parser = bot._connection.parsers.get(event)
    if parser is None:
        raise KeyError(f"discord.py has no parser for gateway event {event!r}")
    data = json.loads(json.dumps(payload))
    fake = _fakes.get(bot)
    if fake is not None:
        fake.observe_gateway_event(event, data)
    bot.dispatch("socket_event_type", event)
    parser(data)


def ready_payload(bot: discord.Client, guilds: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A READY event for the logged-in bot; guilds appear as unavailable stubs like on Discord."""
    if bot.user is None or bot.application_id is None:
        raise RuntimeError("log the bot in first (connected() does)")
    user = bot.user
    return {
        "v": 10,
        "user": {
            "id": str(user.id),
            "username": user.name,
            "discriminator": "0",
            "global_name": user.global_name,
            "avatar": None,
            "bot": True,
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
        },
        "guilds": [{"id": str(g["id"]), "unavailable": True} for g in guilds],
        "session_id": f"fake-session-{new_snowflake()}",
        "resume_gateway_url": "wss://gateway.invalid",
        "application": {"id": str(bot.application_id), "flags": 0},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": [],
        "user_settings": {},
    }


async def dispatch_ready(
    bot: discord.Client,
    guilds: Sequence[Mapping[str, Any]] = (),
    *,
    guild_ready_timeout: float = 0.02,
    timeout: float = 2.0,
) -> None:
    """Run discord.py's real startup sequence: READY, one GUILD_CREATE per guild, then wait until
    ``on_ready`` was dispatched (``bot.is_ready()``) and its listeners (and ``on_guild_available``)
    have finished, so tests start from a quiet bot. A listener that never returns makes this raise.

    discord.py waits ``guild_ready_timeout`` (2 s by default) of silence after the last GUILD_CREATE
    before firing ``on_ready``; it is shortened here for the duration of the call only. Note READY
    clears discord.py's caches (guilds, users), so send every guild the test needs here.
    """
    state = bot._connection
    previous = state.guild_ready_timeout
    state.guild_ready_timeout = guild_ready_timeout
    try:
        dispatch_gateway(bot, "READY", ready_payload(bot, guilds))
        for guild in guilds:
            dispatch_gateway(bot, "GUILD_CREATE", guild)
        async with asyncio.timeout(timeout):
            await bot.wait_until_ready()
        await settle(bot, timeout=timeout)
    finally:
        state.guild_ready_timeout = previous


@contextlib.asynccontextmanager
async def connected(
    bot: discord.Client,
    fake: FakeDiscord,
    *,
    token: str = "fake-token",
    guilds: Sequence[Mapping[str, Any]] | None = None,
    ready: bool = True,
) -> AsyncIterator[FakeDiscord]:
    """Log ``bot`` in against ``fake`` (no gateway), make it ready, yield, then close and unpatch.

    ``bot.login()`` is the real one: it fetches ``/users/@me`` and ``/oauth2/applications/@me`` (which
    fills ``bot.user`` and ``bot.application_id``) and runs ``setup_hook``. Then, with ``ready=True``,
    discord.py's startup sequence is replayed (``dispatch_ready``) so ``on_ready`` listeners run and
    ``wait_until_ready()`` returns; with ``ready=False`` the guilds are only GUILD_CREATEd.

    ``guilds`` defaults to one guild (``DEFAULT_GUILD_ID``) with one text channel
    (``DEFAULT_CHANNEL_ID``) and the bot as a member, matching the payload builders' defaults, so
    ``interaction.guild`` is a cached ``Guild`` and ``interaction.channel`` a ``TextChannel``. Pass
    ``guilds=[]`` for none.
    """
    with patch_api_base(fake.api_base):
        _fakes[bot] = fake
        try:
            await bot.login(token)
            if bot.user is None or bot.application_id is None:
                raise RuntimeError("login did not populate the bot user / application id")
            if guilds is None:
                bot_user = fake.bot_user
                guilds = [guild_payload(bot_user=bot_user)]
            if ready:
                await dispatch_ready(bot, guilds)
            else:
                for guild in guilds:
                    dispatch_gateway(bot, "GUILD_CREATE", guild)
            yield fake
        finally:
            try:
                if bot.loop is asyncio.get_running_loop():  # False only if login failed very early
                    await settle(bot, timeout=1.0, raise_on_timeout=False)
            finally:
                await bot.close()
                _fakes.pop(bot, None)
                await _cancel_discord_tasks()


def _pending_discord_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not current and not t.done() and t.get_name().startswith(DISCORD_TASK_PREFIXES)
    ]


async def _cancel_discord_tasks() -> None:
    """Cancel handler tasks still running after the bot closed, so none outlives the test's loop
    (asyncio would report them as destroyed-while-pending at loop shutdown)."""
    leftovers = _pending_discord_tasks()
    for task in leftovers:
        task.cancel()
    if leftovers:
        await asyncio.wait(leftovers, timeout=1.0)


async def settle(
    bot: discord.Client,
    *,
    timeout: float = 2.0,
    raise_on_timeout: bool = True,
) -> None:
    """Wait until the tasks discord.py spawned for events, commands, views and modals are done.

    discord.py never awaits handlers inline: ``CommandTree`` schedules each command as a task,
    ``Client.dispatch`` one task per listener, the ``ViewStore`` one per click. Those tasks carry
    recognisable names (``DISCORD_TASK_PREFIXES``); this waits until none is pending, including
    ones spawned while waiting. Tasks the *bot* creates itself with other names are not awaited;
    use ``fake.wait_for`` for their visible effect. A listener that never returns makes this time
    out (``TimeoutError`` naming the stuck tasks).
    """
    loop = asyncio.get_running_loop()
    if bot.loop is not loop:
        raise RuntimeError("the bot is not running on this event loop (log it in inside the test)")
    deadline = loop.time() + timeout
    while True:
        await asyncio.sleep(0)  # let just-created tasks start and spawn their children
        pending = _pending_discord_tasks()
        if not pending:
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            if raise_on_timeout:
                names = sorted(t.get_name() for t in pending)
                raise TimeoutError(f"discord.py tasks still running after {timeout}s: {names}")
            return
        await asyncio.wait(pending, timeout=remaining)
