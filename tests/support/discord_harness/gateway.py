"""A loopback gateway for a real, sharded discord.py client: the socket ``connected()`` does without.

``connected()`` replays READY by calling discord.py's parsers, which fits one unsharded client; discord.py's
``AutoShardedClient`` instead opens one websocket per shard, IDENTIFYs each with ``[shard_id, shard_count]`` and
waits for each shard's own READY. ``FakeGateway`` serves that exchange for real over a websocket on 127.0.0.1:
HELLO, the client's IDENTIFY (recorded, with its shard), READY for that shard and one GUILD_CREATE per guild Discord
would put on it (``(guild_id >> 22) % shard_count``), and ACKs to heartbeats. Frames are uncompressed JSON text,
which discord.py reads whatever compression it asked for (it only inflates binary frames).

``running(bot, fake, gateway)`` then runs the bot's real ``start()``: login over REST, ``setup_hook``, the shards'
connections, until ``on_ready``. The gateway URL discord.py uses with an explicit shard count is the class attribute
``DiscordWebSocket.DEFAULT_GATEWAY`` (it asks ``/gateway/bot`` only when it picks the count itself), so it is
patched for the duration, like ``Route.BASE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web
from discord.gateway import DiscordWebSocket

from .driver import _fakes, patch_api_base
from .fake import FakeDiscord
from .payloads import new_snowflake

__all__ = ["FakeGateway", "running", "shard_of"]

#: Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
DISPATCH, HEARTBEAT, IDENTIFY, HELLO, HEARTBEAT_ACK = 0, 1, 2, 10, 11


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard Discord puts a guild on."""
    return (guild_id >> 22) % shard_count


class FakeGateway:
    """Discord's gateway for ``guilds`` (``GUILD_CREATE`` payloads, e.g. ``guild_payload(...)``), on loopback."""

    def __init__(self, fake: FakeDiscord, guilds: Sequence[Mapping[str, Any]]) -> None:
        self.fake = fake
        self.guilds = [dict(g) for g in guilds]
        #: Each IDENTIFY's ``d`` as received, in order.
        self.identifies: list[dict[str, Any]] = []
        #: What this gateway failed at itself (a harness bug): raised on exit so it cannot pass silently.
        self.errors: list[BaseException] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeGateway is not started")
        return f"ws://127.0.0.1:{self._port}/"

    @property
    def shards_identified(self) -> list[tuple[int, int]]:
        """``(shard_id, shard_count)`` of each IDENTIFY, sorted; ``(0, 1)`` for an unsharded client."""
        return sorted(tuple(d.get("shard", (0, 1))) for d in self.identifies)

    async def __aenter__(self) -> FakeGateway:
        app = web.Application()
        app.router.add_get("/", self._serve)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if exc_type is None and self.errors:
            raise AssertionError(f"FakeGateway failed {len(self.errors)} time(s)") from self.errors[0]

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sequence = 0

        async def dispatch(event: str, data: dict[str, Any]) -> None:
            nonlocal sequence
            sequence += 1
            self.fake.observe_gateway_event(event, data)  # so REST answers agree with what the bot was told
            await ws.send_str(json.dumps({"op": DISPATCH, "t": event, "s": sequence, "d": data}))

        await ws.send_str(json.dumps({"op": HELLO, "d": {"heartbeat_interval": 45_000}}))
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    break
                frame = json.loads(message.data)
                if frame["op"] == HEARTBEAT:
                    await ws.send_str(json.dumps({"op": HEARTBEAT_ACK}))
                elif frame["op"] == IDENTIFY:
                    self.identifies.append(frame["d"])
                    shard_id, shard_count = frame["d"].get("shard", (0, 1))
                    mine = [g for g in self.guilds if shard_of(int(g["id"]), shard_count) == shard_id]
                    await dispatch("READY", self._ready(mine, [shard_id, shard_count]))
                    for guild in mine:
                        await dispatch("GUILD_CREATE", json.loads(json.dumps(guild)))
        except Exception as exc:  # a harness bug: the client would only see a closed socket and reconnect
            self.errors.append(exc)
            raise
        return ws

    def _ready(self, guilds: Sequence[Mapping[str, Any]], shard: list[int]) -> dict[str, Any]:
        return {
            "v": 10,
            "user": {k: self.fake.bot_user[k] for k in ("id", "username", "discriminator", "avatar", "bot")},
            "guilds": [{"id": str(g["id"]), "unavailable": True} for g in guilds],
            "session_id": f"fake-session-{new_snowflake()}",
            "resume_gateway_url": self.url,
            "application": {"id": str(self.fake.application_id), "flags": 0},
            "shard": shard,
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
        }


@contextlib.contextmanager
def _gateway_url(url: str) -> Iterator[None]:
    original = DiscordWebSocket.DEFAULT_GATEWAY
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
    try:
        yield
    finally:
        DiscordWebSocket.DEFAULT_GATEWAY = original


@contextlib.asynccontextmanager
async def running(
    bot: discord.Client,
    fake: FakeDiscord,
    gateway: FakeGateway,
    *,
    token: str = "fake-token",
    timeout: float = 10.0,
) -> AsyncIterator[None]:
    """Run ``bot.start(token)`` against ``fake`` (REST) and ``gateway`` until it is ready, yield, then close it.

    Two waits discord.py makes for real Discord are shortened: the 5 s between one process's IDENTIFYs (Discord's
    session-start rate limit, ``before_identify_hook``) and the 2 s of silence after the last GUILD_CREATE.
    """

    async def no_identify_wait(shard_id: int | None, *, initial: bool = False) -> None:
        return None

    bot.before_identify_hook = no_identify_wait  # type: ignore[method-assign]
    bot._connection.guild_ready_timeout = 0.05
    with patch_api_base(fake.api_base), _gateway_url(gateway.url):
        _fakes[bot] = fake
        started = asyncio.create_task(bot.start(token), name="fake-gateway-bot")
        try:
            ready = asyncio.create_task(bot.wait_until_ready())
            done, _ = await asyncio.wait({started, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if ready not in done:
                ready.cancel()
                if started in done:
                    started.result()  # raises why the bot stopped
                raise TimeoutError(f"the bot was not ready after {timeout}s; identified: {gateway.shards_identified}")
            yield
        finally:
            await bot.close()
            await asyncio.wait({started}, timeout=timeout)
            _fakes.pop(bot, None)
            if not started.done():
                started.cancel()
                raise TimeoutError(f"the bot did not stop within {timeout}s of closing")
        started.result()  # raises what ended the bot, if anything did
