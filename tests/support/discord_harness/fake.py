"""A loopback fake of the Discord HTTP API, good enough for discord.py's real code paths.

Why a stateful fake rather than a recorder that answers ``{}``: discord.py parses every answer into
models (``Message``, ``InteractionCallbackResponse``, ``AppCommand`` ...). Answers that lack required
keys crash inside discord.py, and answers that are inconsistent (an edit that "forgets" the file
that was posted) hide bugs. So the fake keeps channels, messages, interactions and commands, and
answers the way Discord does, including the errors a careless bot meets in production (followup
before acknowledging, acknowledging twice, editing a message that does not exist).

Every request is recorded (``FakeDiscord.requests``) before the test inspects it, in the order the
fake handled them, so ordering assertions ("the defer came before the followup") are meaningful.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import mimetypes
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import quote

from aiohttp import BodyPartReader, hdrs, web

from .payloads import (
    DEFAULT_APPLICATION_ID,
    DEFAULT_ATTACHMENT_SIZE_LIMIT,
    DEFAULT_BOT_USER_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    iso_now,
    new_snowflake,
    text_channel_payload,
    user_payload,
)

__all__ = ["API_PREFIX", "FakeDiscord", "FakeInteraction", "RecordedRequest", "Stall", "UploadedFile"]

#: discord.py 2.7 talks to API v10; everything under this prefix is "the API".
API_PREFIX = "/api/v10"

# Interaction callback types (Discord's InteractionResponseType).
_PONG, _MESSAGE, _DEFERRED_MESSAGE, _DEFERRED_UPDATE, _UPDATE, _AUTOCOMPLETE, _MODAL = 1, 4, 5, 6, 7, 8, 9
_LAUNCH_ACTIVITY = 12
_EPHEMERAL, _LOADING = 1 << 6, 1 << 7


class UploadedFile(NamedTuple):
    """A file part of a multipart request: unpacks as ``(filename, data, content_type)``."""

    filename: str
    data: bytes
    content_type: str


@dataclass
class RecordedRequest:
    """One HTTP request the fake answered, with the answer it gave.

    ``path`` has the ``/api/v10`` prefix removed and is percent-decoded (so reaction emoji are
    readable). ``json`` is the JSON body, or the parsed ``payload_json`` part of a multipart body.
    ``route`` is the matched route template (``None`` for an unknown route), ``status``/``response``
    what the fake answered, ``injected`` whether that answer came from ``fail_next``.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    files: list[UploadedFile]
    timestamp: float
    body: bytes = b""
    index: int = -1
    route: str | None = None
    status: int = 0
    response: Any = None
    injected: bool = False

    def __str__(self) -> str:
        return f"#{self.index} {self.method} {self.path} -> {self.status}"


@dataclass
class FakeInteraction:
    """What the fake knows about an interaction it was told about (via ``dispatch_gateway``)."""

    id: int
    token: str
    application_id: int
    type: int
    channel_id: int
    guild_id: int | None
    user: dict[str, Any]
    created: float
    attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT
    message_id: int | None = None
    name: str | None = None
    response_type: int | None = None
    response_data: Any = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None


@dataclass
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    remaining: int


class Stall:
    """Requests held before the fake answers them (``FakeDiscord.stall``): a slow Discord, on chosen calls.

    ``arrived`` is set when the first held request came in; ``release()`` lets every held one (and any later
    match) through. ``FakeDiscord.stop`` releases all, so a held request never outlives the fake.
    """

    def __init__(self, method: str, pattern: re.Pattern[str], times: int) -> None:
        self.method, self.pattern, self.remaining = method, pattern, times
        self.arrived = asyncio.Event()
        self.held = 0
        self._gate = asyncio.Event()

    def matches(self, recorded: RecordedRequest) -> bool:
        return (
            self.remaining > 0
            and self.method in ("*", recorded.method)
            and self.pattern.search(recorded.path) is not None
        )

    async def hold(self) -> None:
        self.remaining -= 1
        self.held += 1
        self.arrived.set()
        await self._gate.wait()

    def release(self) -> None:
        self._gate.set()


class _Route(NamedTuple):
    method: str
    template: str
    regex: re.Pattern[str]
    handler: Callable[..., _Reply]


Predicate = Callable[[RecordedRequest], bool]


def _error(status: int, code: int, message: str) -> _Reply:
    return _Reply(status, {"message": message, "code": code})


class FakeDiscord:
    """An aiohttp server on 127.0.0.1 that answers like ``https://discord.com/api/v10``.

    Use ``async with FakeDiscord() as fake:`` (or ``await fake.start()`` / ``await fake.stop()``) and
    point discord.py at ``fake.api_base`` with ``connected()``.

    ``strict=True`` answers like Discord for ids it was never told about (unknown interaction
    ``10062``, unknown webhook ``10015``, unknown channel ``10003``); the default is lenient so a test
    can send to an arbitrary channel id. Messages are always strict: editing, fetching or reacting
    to a message the fake never saw is ``404 Unknown Message`` (register others with
    ``register_message``). ``interaction_ack_deadline`` (seconds) simulates Discord's 3 s window for
    the initial response; ``None`` disables it so slow CI machines do not flake.

    On exit, if a route handler of the fake itself crashed, ``__aexit__`` raises so a bug in the
    fake cannot masquerade as a passing test.
    """

    def __init__(
        self,
        *,
        application_id: int = DEFAULT_APPLICATION_ID,
        bot_user_id: int = DEFAULT_BOT_USER_ID,
        bot_username: str = "beatforge",
        bot_token: str | None = None,
        strict: bool = False,
        interaction_ack_deadline: float | None = None,
        upload_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        nonce_window_s: float = 300.0,
    ) -> None:
        self.application_id = application_id
        #: How long a message create's ``nonce`` is remembered (with ``enforce_nonce``), like Discord's few minutes.
        self.nonce_window_s = nonce_window_s
        self.bot_token = bot_token
        self.strict = strict
        self.interaction_ack_deadline = interaction_ack_deadline
        self.upload_limit = upload_limit
        self.bot_user: dict[str, Any] = {
            **user_payload(bot_user_id, username=bot_username, bot=True),
            "verified": True,
            "mfa_enabled": False,
            "locale": "en-US",
            "email": None,
        }
        self.application: dict[str, Any] = {
            "id": str(application_id),
            "name": bot_username,
            "description": "",
            "icon": None,
            "cover_image": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": user_payload(bot_user_id + 1, username="owner"),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
            "summary": "",
            "tags": [],
            "interactions_endpoint_url": None,  # non-null makes discord.py warn that it gets no interactions
            "redirect_uris": [],
            "approximate_guild_count": 1,
            "bot": user_payload(bot_user_id, username=bot_username, bot=True),
        }

        self.requests: list[RecordedRequest] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.guilds: dict[int, dict[str, Any]] = {}
        self.members: dict[tuple[int, int], dict[str, Any]] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        #: Crashes of the fake's own handlers (a bug in the harness, not in the bot).
        self.errors: list[BaseException] = []

        self._blobs: dict[int, UploadedFile] = {}
        self._failures: list[_Failure] = []
        self._stalls: list[Stall] = []
        #: (channel id, nonce) → (when, message id) of messages created with ``enforce_nonce``.
        self._nonces: dict[tuple[int, str], tuple[float, int]] = {}
        self._waiters: list[tuple[Predicate, asyncio.Future[RecordedRequest]]] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._routes = self._build_routes()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind a free loopback port and serve. Idempotent."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving and fail any pending ``wait_for``. Idempotent."""
        runner, self._runner = self._runner, None
        for stall in self._stalls:
            stall.release()
        if runner is not None:
            await runner.cleanup()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(RuntimeError("FakeDiscord stopped"))
        self._waiters.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        if exc_type is None and self.errors:
            raise AssertionError(f"FakeDiscord's own handlers crashed {len(self.errors)} time(s)") from self.errors[0]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (also where uploaded attachments are served)."""
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` must be set to: ``http://127.0.0.1:PORT/api/v10``."""
        return self.base_url + API_PREFIX

    # ------------------------------------------------------------------ querying what happened

    @staticmethod
    def _predicate(match: str | Predicate, path_regex: str | None) -> Predicate:
        if callable(match):
            if path_regex is not None:
                raise TypeError("pass either a predicate or (method, path_regex), not both")
            return match
        method = match.upper()
        pattern = re.compile(path_regex or ".*")
        return lambda r: (method in ("*", r.method)) and pattern.search(r.path) is not None

    def find(self, method: str, path_regex: str = ".*") -> list[RecordedRequest]:
        """Recorded requests with this method (``"*"`` for any) whose path matches ``re.search``."""
        pred = self._predicate(method, path_regex)
        return [r for r in self.requests if pred(r)]

    async def wait_for(
        self,
        match: str | Predicate,
        path_regex: str | None = None,
        *,
        timeout: float = 2.0,
        since: int = 0,
    ) -> RecordedRequest:
        """The first request (index >= ``since``) matching ``(method, path_regex)`` or a predicate.

        Returns immediately if one was already recorded, otherwise waits for it; pass
        ``since=len(fake.requests)`` to only accept requests made from now on. Raises
        ``TimeoutError`` listing every request seen, which usually shows what the bot did instead.
        """
        pred = self._predicate(match, path_regex)
        for recorded in self.requests[since:]:
            if pred(recorded):
                return recorded
        future: asyncio.Future[RecordedRequest] = asyncio.get_running_loop().create_future()
        entry = (pred, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            wanted = match if callable(match) else f"{match} {path_regex or '.*'}"
            seen = "\n  ".join(str(r) for r in self.requests) or "(none)"
            raise TimeoutError(f"no request matching {wanted!r} within {timeout}s; requests seen:\n  {seen}") from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    @property
    def unknown_requests(self) -> list[RecordedRequest]:
        """Requests to routes the fake does not implement (answered 404 ``Unknown route``)."""
        return [r for r in self.requests if r.route is None and not r.injected]

    def messages_in(self, channel_id: int) -> list[dict[str, Any]]:
        """Live messages in a channel, oldest first."""
        return [m for m in self.messages.values() if int(m["channel_id"]) == int(channel_id)]

    def interaction_for(self, token_or_id: str | int) -> FakeInteraction:
        """The registered interaction with this token or id."""
        for interaction in self.interactions.values():
            if token_or_id in (interaction.token, interaction.id, str(interaction.id)):
                return interaction
        raise KeyError(f"no interaction {token_or_id!r} registered with the fake")

    def original_response(self, token_or_id: str | int) -> dict[str, Any] | None:
        """The message that is an interaction's original response (None if none was created)."""
        interaction = self.interaction_for(token_or_id)
        if interaction.original_message_id is None:
            return None
        return self.messages.get(interaction.original_message_id)

    # ------------------------------------------------------------------ failure injection

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching ``(method, path_regex)`` with ``status``/``body``.

        The matched request changes no state (it failed). For 429 the body defaults to
        ``{"retry_after": 0.05, "global": false, ...}`` and the headers discord.py needs to treat it
        as a real rate limit and retry are added: ``Via`` (without it discord.py assumes a
        Cloudflare ban and raises immediately), ``Retry-After`` and ``X-RateLimit-*``. Other
        statuses default to a Discord-style ``{"message", "code"}`` body. ``headers`` override. Note
        discord.py retries 500/502/504 itself, sleeping 1 s, 3 s, ... between tries.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if status == 429:
            body = body if body is not None else {}
            if isinstance(body, dict):
                body = {"message": "You are being rate limited.", "retry_after": 0.05, "global": False, **body}
            retry_after = float(body["retry_after"]) if isinstance(body, dict) else 0.05
            is_global = bool(body.get("global")) if isinstance(body, dict) else False
            base_headers = {
                "Via": "1.1 google",
                "Retry-After": str(max(1, math.ceil(retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Bucket": "fake-injected-429",
                "X-RateLimit-Scope": "shared" if not is_global else "global",
            }
            if is_global:
                base_headers["X-RateLimit-Global"] = "true"
        else:
            base_headers = {}
            if body is None:
                body = {"message": f"{status}: injected failure", "code": 0}
        self._failures.append(
            _Failure(
                method=method.upper(),
                pattern=re.compile(path_regex),
                status=status,
                body=body,
                headers={**base_headers, **dict(headers or {})},
                remaining=times,
            )
        )

    def stall(self, method: str, path_regex: str, *, times: int = 1) -> Stall:
        """Hold the next ``times`` requests matching ``(method, path_regex)`` unanswered until ``release()``.

        A held request is recorded (and ``wait_for`` sees it) only once answered, as always; ``arrived`` tells the
        test it came in. Use it for a Discord that is slow on one call while others go on.
        """
        stall = Stall(method.upper(), re.compile(path_regex), times)
        self._stalls.append(stall)
        return stall

    def _injected_reply(self, recorded: RecordedRequest) -> _Reply | None:
        for failure in self._failures:
            if failure.method in ("*", recorded.method) and failure.pattern.search(recorded.path):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return _Reply(failure.status, failure.body, dict(failure.headers))
        return None

    # ------------------------------------------------------------------ state the tests feed in

    def observe_gateway_event(self, event: str, payload: Mapping[str, Any]) -> None:
        """Learn from a gateway event the bot is about to receive, so later REST calls about the
        same objects (answering that interaction, editing that message) are answered consistently.
        Called by ``dispatch_gateway``."""
        if event == "INTERACTION_CREATE":
            self.register_interaction(payload)
        elif event == "GUILD_CREATE" and not payload.get("unavailable"):
            self.register_guild(payload)
        elif event in ("CHANNEL_CREATE", "CHANNEL_UPDATE"):
            self.register_channel(payload)
        elif event == "MESSAGE_CREATE":
            self.register_message(payload)
        elif event == "READY":
            for guild in payload.get("guilds", []):
                if not guild.get("unavailable"):
                    self.register_guild(guild)

    def register_guild(self, payload: Mapping[str, Any]) -> None:
        guild_id = int(payload["id"])
        self.guilds[guild_id] = dict(payload)
        for channel in payload.get("channels", []):
            self.register_channel({**channel, "guild_id": str(guild_id)})
        for member in payload.get("members", []):
            self.members[(guild_id, int(member["user"]["id"]))] = dict(member)

    def register_channel(self, payload: Mapping[str, Any]) -> None:
        self.channels[int(payload["id"])] = dict(payload)

    def register_message(self, payload: Mapping[str, Any]) -> None:
        """Make a message (e.g. a user's, from MESSAGE_CREATE) exist for GET/PATCH/reactions."""
        message = dict(payload)
        message.pop("member", None)
        message.pop("guild_id", None)
        self.messages[int(message["id"])] = message

    def register_interaction(self, payload: Mapping[str, Any]) -> FakeInteraction:
        """Remember an interaction so its callback/followups/@original can be answered."""
        channel = payload.get("channel") or {}
        channel_id = int(payload.get("channel_id") or channel.get("id") or DEFAULT_CHANNEL_ID)
        guild_id = int(payload["guild_id"]) if payload.get("guild_id") else None
        if channel and int(channel["id"]) not in self.channels:
            self.register_channel({k: v for k, v in channel.items() if k != "permissions"})
        user = payload["member"]["user"] if "member" in payload else payload.get("user", {})
        message = payload.get("message")
        if message is not None and int(message["id"]) not in self.messages:
            self.register_message(message)
        data = payload.get("data") or {}
        interaction = FakeInteraction(
            id=int(payload["id"]),
            token=str(payload["token"]),
            application_id=int(payload["application_id"]),
            type=int(payload["type"]),
            channel_id=channel_id,
            guild_id=guild_id,
            user=dict(user),
            created=time.monotonic(),
            attachment_size_limit=int(payload.get("attachment_size_limit", DEFAULT_ATTACHMENT_SIZE_LIMIT)),
            message_id=int(message["id"]) if message is not None else None,
            name=data.get("name"),
        )
        self.interactions[interaction.id] = interaction
        return interaction

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        *,
        content_type: str | None = None,
        channel_id: int = DEFAULT_CHANNEL_ID,
    ) -> dict[str, Any]:
        """Host ``data`` like Discord's CDN and return its attachment object.

        Pass the result as an attachment option value to ``slash_command_payload``; then
        ``await attachment.read()`` in the bot downloads these exact bytes from the fake.
        """
        attachment_id = new_snowflake()
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        self._blobs[attachment_id] = UploadedFile(filename, bytes(data), ctype)
        url = f"{self.base_url}/cdn/attachments/{channel_id}/{attachment_id}/{quote(filename)}"
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": ctype,
        }

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        is_api = request.path.startswith(API_PREFIX + "/")
        recorded = RecordedRequest(
            method=request.method,
            path=request.path[len(API_PREFIX) :] if is_api else request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            json=None,
            files=[],
            timestamp=arrived,
        )
        try:
            recorded.json, recorded.files, recorded.body = await self._read_body(request)
        except (ValueError, UnicodeDecodeError) as exc:
            # An unparsable body is a bug in whoever built it; answer 400 (discord.py would retry a 500).
            self.errors.append(exc)
            reply = _error(400, 50109, f"The request body contains invalid JSON: {exc!r}")
        else:
            stall = next((stall for stall in self._stalls if stall.matches(recorded)), None)
            if stall is not None:
                await stall.hold()
            injected = self._injected_reply(recorded)
            recorded.injected = injected is not None
            reply = injected if injected is not None else self._dispatch(recorded, is_api=is_api)
        recorded.status = reply.status
        recorded.response = reply.body
        self._record(recorded)
        return self._to_response(reply)

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[UploadedFile], bytes]:
        """Parse JSON bodies and discord.py's multipart layout (``payload_json`` + ``files[n]``)."""
        if request.content_type.startswith("multipart/"):
            json_body: Any = None
            files: list[UploadedFile] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ValueError("nested multipart bodies are not something discord.py sends")
                content = bytes(await part.read(decode=False))
                if part.name == "payload_json":
                    json_body = json.loads(content)
                elif part.filename is not None:
                    ctype = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
                    files.append(UploadedFile(part.filename, content, ctype))
            return json_body, files, b""
        raw = await request.read()
        if raw and request.content_type == "application/json":
            return json.loads(raw), [], raw
        return None, [], raw

    def _record(self, recorded: RecordedRequest) -> None:
        recorded.index = len(self.requests)
        self.requests.append(recorded)
        for pred, future in list(self._waiters):
            if not future.done() and pred(recorded):
                future.set_result(recorded)

    @staticmethod
    def _to_response(reply: _Reply) -> web.StreamResponse:
        if reply.body is None:
            return web.Response(status=reply.status, headers=reply.headers)
        if isinstance(reply.body, bytes):
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        if isinstance(reply.body, str):
            headers = {"Content-Type": "text/plain", **reply.headers}
            return web.Response(status=reply.status, body=reply.body.encode(), headers=headers)
        # Exactly "application/json", no charset: discord.py's json_or_text compares the header
        # verbatim and treats anything else (aiohttp's json_response adds "; charset=utf-8") as text.
        headers = {**reply.headers, "Content-Type": "application/json"}
        return web.Response(status=reply.status, body=json.dumps(reply.body).encode(), headers=headers)

    def _dispatch(self, recorded: RecordedRequest, *, is_api: bool) -> _Reply:
        if is_api and not recorded.path.startswith(("/webhooks/", "/interactions/")):
            auth = recorded.headers.get("Authorization", "")
            expected = f"Bot {self.bot_token}" if self.bot_token is not None else None
            if not auth.startswith("Bot ") or (expected is not None and auth != expected):
                return _error(401, 0, "401: Unauthorized")
        for route in self._routes:
            if route.method != recorded.method:
                continue
            if (route.template.startswith("/cdn/")) == is_api:
                continue
            match = route.regex.fullmatch(recorded.path)
            if match is None:
                continue
            recorded.route = f"{route.method} {route.template}"
            try:
                reply = route.handler(recorded, **match.groupdict())
            except Exception as exc:  # a bug in the fake: surface it, do not make discord.py retry
                self.errors.append(exc)
                return _error(400, 0, f"FakeDiscord internal error in {route.template}: {exc!r}")
            if 200 <= reply.status < 300:
                reply.headers = {**self._ratelimit_headers(route), **reply.headers}
            return reply
        return _error(404, 0, "Unknown route")

    @staticmethod
    def _ratelimit_headers(route: _Route) -> dict[str, str]:
        """Generous, plausible rate-limit headers so discord.py's bucket bookkeeping runs as usual."""
        bucket = hashlib.sha1(f"{route.method} {route.template}".encode()).hexdigest()[:16]
        return {
            "X-RateLimit-Bucket": bucket,
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1.0:.3f}",
            "X-RateLimit-Reset-After": "1.000",
        }

    def _build_routes(self) -> list[_Route]:
        table: Sequence[tuple[str, str, Callable[..., _Reply]]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/users/{user_id}", self._get_user),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/applications/{app_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self._webhook_execute),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_message),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("GET", "/channels/{channel_id}/messages", self._history),
            ("POST", "/channels/{channel_id}/messages", self._create_channel_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._own_reaction),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._own_reaction),
            # after @me, which the {user_id} pattern would also match
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}", self._user_reaction),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/cdn/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn_attachment),
        ]
        routes = []
        for method, template, handler in table:
            regex = re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template))
            routes.append(_Route(method, template, regex, handler))
        return routes

    # ------------------------------------------------------------------ message model

    def _channel_or_default(self, channel_id: int) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        if channel is not None:
            return channel
        guild_id = next(iter(self.guilds), DEFAULT_GUILD_ID)
        return text_channel_payload(channel_id, guild_id=guild_id, name=f"channel-{channel_id}")

    def _check_upload(self, files: Sequence[UploadedFile], limit: int) -> _Reply | None:
        if any(len(f.data) > limit for f in files):
            return _error(413, 40005, "Request entity too large")
        return None

    def _attachments(
        self, channel_id: int, declared: Sequence[Mapping[str, Any]], files: Sequence[UploadedFile]
    ) -> list[dict[str, Any]]:
        """Turn uploaded ``files[n]`` into attachment objects, using the ``attachments`` entry whose
        ``id`` is ``n`` for filename/description, the way Discord pairs them."""
        by_index = {}
        for entry in declared:
            with contextlib.suppress(TypeError, ValueError):
                by_index[int(entry["id"])] = entry
        result = []
        for index, upload in enumerate(files):
            meta = by_index.get(index, {})
            filename = str(meta.get("filename") or upload.filename)
            attachment = self.add_attachment(
                filename,
                upload.data,
                content_type=mimetypes.guess_type(filename)[0] or upload.content_type,
                channel_id=channel_id,
            )
            if meta.get("description"):
                attachment["description"] = meta["description"]
            result.append(attachment)
        return result

    def _new_message(
        self,
        channel_id: int,
        payload: Mapping[str, Any],
        files: Sequence[UploadedFile],
        *,
        message_type: int = 0,
        extra_flags: int = 0,
        interaction: FakeInteraction | None = None,
    ) -> dict[str, Any]:
        message_id = new_snowflake()
        message: dict[str, Any] = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "type": message_type,
            "content": payload.get("content") or "",
            "author": {k: self.bot_user[k] for k in user_payload(0, bot=True)},
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": bool(payload.get("tts", False)),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": self._attachments(channel_id, payload.get("attachments") or [], files),
            "embeds": list(payload.get("embeds") or []),
            "components": list(payload.get("components") or []),
            "pinned": False,
            "flags": int(payload.get("flags") or 0) | extra_flags,
        }
        if payload.get("nonce") is not None:
            message["nonce"] = payload["nonce"]
        reference = payload.get("message_reference")
        if reference:
            ref = {"type": 0, "channel_id": str(channel_id), **dict(reference)}
            message["message_reference"] = ref
            message["type"] = 19
            referenced = self.messages.get(int(ref["message_id"])) if ref.get("message_id") else None
            if referenced is not None:
                message["referenced_message"] = dict(referenced)
        if interaction is not None:
            message["webhook_id"] = str(interaction.application_id)
            message["application_id"] = str(interaction.application_id)
            metadata: dict[str, Any] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": interaction.user,
                "authorizing_integration_owners": (
                    {"0": str(interaction.guild_id)} if interaction.guild_id else {"1": interaction.user.get("id")}
                ),
            }
            if interaction.name is not None:
                metadata["name"] = interaction.name
            if interaction.original_message_id is not None:
                metadata["original_response_message_id"] = str(interaction.original_message_id)
            message["interaction_metadata"] = metadata
        self.messages[message_id] = message
        return message

    def _edit_message(
        self, message: dict[str, Any], payload: Mapping[str, Any], files: Sequence[UploadedFile]
    ) -> dict[str, Any]:
        """Merge an edit into a stored message the way Discord does (absent key = unchanged)."""
        if "content" in payload:
            message["content"] = payload["content"] or ""
        for key in ("embeds", "components"):
            if key in payload:
                message[key] = list(payload[key] or [])
        if "flags" in payload and payload["flags"] is not None:
            # Ephemeral-ness is fixed at creation; other flags (suppress embeds ...) can change.
            message["flags"] = (message["flags"] & _EPHEMERAL) | (int(payload["flags"]) & ~(_EPHEMERAL | _LOADING))
        message["flags"] &= ~_LOADING
        channel_id = int(message["channel_id"])
        if "attachments" in payload and payload["attachments"] is not None:
            keep = {str(a.get("id")) for a in payload["attachments"]}
            kept = [a for a in message["attachments"] if a["id"] in keep]
            message["attachments"] = kept + self._attachments(channel_id, payload["attachments"], files)
        elif files:
            message["attachments"] = message["attachments"] + self._attachments(channel_id, [], files)
        message["edited_timestamp"] = iso_now()
        return message

    # ------------------------------------------------------------------ route handlers: identity

    def _get_me(self, recorded: RecordedRequest) -> _Reply:
        return _Reply(200, dict(self.bot_user))

    def _get_application(self, recorded: RecordedRequest) -> _Reply:
        return _Reply(200, dict(self.application))

    def _get_user(self, recorded: RecordedRequest, user_id: str) -> _Reply:
        for (_, uid), member in self.members.items():
            if uid == int(user_id):
                return _Reply(200, dict(member["user"]))
        if self.strict:
            return _error(404, 10013, "Unknown User")
        return _Reply(200, user_payload(int(user_id)))

    def _create_dm(self, recorded: RecordedRequest) -> _Reply:
        recipient_id = int((recorded.json or {})["recipient_id"])
        existing = next(
            (
                c
                for c in self.channels.values()
                if c.get("type") == 1 and any(int(u["id"]) == recipient_id for u in c.get("recipients", []))
            ),
            None,
        )
        if existing is None:
            existing = {
                "id": str(new_snowflake()),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [user_payload(recipient_id)],
            }
            self.register_channel(existing)
        return _Reply(200, dict(existing))

    # ------------------------------------------------------------------ route handlers: commands

    def _put_commands(self, recorded: RecordedRequest, app_id: str, guild_id: str | None = None) -> _Reply:
        scope = int(guild_id) if guild_id is not None else None
        previous = {(c["name"], c.get("type", 1)): c for c in self.commands.get(scope, [])}
        stored = []
        for command in recorded.json or []:
            kind = command.get("type", 1)
            old = previous.get((command["name"], kind))
            entry = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "type": kind,
                "id": old["id"] if old else str(new_snowflake()),
                "application_id": app_id,
                "version": str(new_snowflake()),
            }
            if scope is not None:
                entry["guild_id"] = str(scope)
            stored.append(entry)
        self.commands[scope] = stored
        return _Reply(200, stored)

    def _get_commands(self, recorded: RecordedRequest, app_id: str, guild_id: str | None = None) -> _Reply:
        return _Reply(200, list(self.commands.get(int(guild_id) if guild_id is not None else None, [])))

    # ------------------------------------------------------------------ route handlers: interactions

    def _lookup_interaction(self, interaction_id: int, token: str) -> FakeInteraction | None:
        interaction = self.interactions.get(interaction_id)
        if interaction is None and not self.strict:
            interaction = FakeInteraction(
                id=interaction_id,
                token=token,
                application_id=self.application_id,
                type=2,
                channel_id=DEFAULT_CHANNEL_ID,
                guild_id=None,
                user=user_payload(),
                created=time.monotonic(),
            )
            self.interactions[interaction_id] = interaction
        return interaction

    def _interaction_to_acknowledge(self, interaction_id: str, token: str) -> FakeInteraction | _Reply:
        """The interaction a callback answers, or Discord's refusal: unknown, wrong token, too late, or answered."""
        interaction = self._lookup_interaction(int(interaction_id), token)
        if interaction is None:
            return _error(404, 10062, "Unknown interaction")
        if interaction.token != token:
            return _error(401, 50027, "Invalid Webhook Token")
        if (
            self.interaction_ack_deadline is not None
            and time.monotonic() - interaction.created > self.interaction_ack_deadline
        ):
            return _error(404, 10062, "Unknown interaction")
        if interaction.acknowledged:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        return interaction

    def _callback_message(
        self, interaction: FakeInteraction, response_type: Any, data: dict[str, Any], files: Sequence[UploadedFile]
    ) -> dict[str, Any] | _Reply | None:
        """The message a callback of this type creates or updates (None: it has none), or Discord's refusal."""
        if response_type == _MESSAGE:
            return self._new_message(
                interaction.channel_id,
                data,
                files,
                message_type=20 if interaction.type == 2 else 0,
                interaction=interaction,
            )
        if response_type == _DEFERRED_MESSAGE:
            return self._new_message(
                interaction.channel_id,
                {"flags": int(data.get("flags") or 0) & _EPHEMERAL},
                [],
                message_type=20 if interaction.type == 2 else 0,
                extra_flags=_LOADING,
                interaction=interaction,
            )
        if response_type in (_DEFERRED_UPDATE, _UPDATE):
            if interaction.type not in (3, 5) or interaction.message_id is None:
                return _error(400, 50035, "Invalid Form Body: this interaction has no message to update")
            message = self.messages.get(interaction.message_id)
            if message is None:
                return _error(404, 10008, "Unknown Message")
            if response_type == _UPDATE:
                self._edit_message(message, data, files)
            return message
        if response_type not in (_PONG, _AUTOCOMPLETE, _MODAL, _LAUNCH_ACTIVITY):
            return _error(400, 50035, f"Invalid Form Body: unknown interaction response type {response_type!r}")
        return None

    def _interaction_callback(self, recorded: RecordedRequest, interaction_id: str, token: str) -> _Reply:
        interaction = self._interaction_to_acknowledge(interaction_id, token)
        if isinstance(interaction, _Reply):
            return interaction
        body = recorded.json or {}
        response_type = body.get("type")
        data = body.get("data") or {}
        limit_error = self._check_upload(recorded.files, interaction.attachment_size_limit)
        if limit_error is not None:
            return limit_error
        message = self._callback_message(interaction, response_type, data, recorded.files)
        if isinstance(message, _Reply):
            return message

        interaction.response_type = response_type
        interaction.response_data = data
        if message is not None:
            interaction.original_message_id = int(message["id"])
        if recorded.query.get("with_response", "").lower() not in ("1", "true"):
            return _Reply(204)
        answer: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_loading": response_type == _DEFERRED_MESSAGE,
                "response_message_ephemeral": bool(message and message["flags"] & _EPHEMERAL),
            },
            "resource": {"type": response_type},
        }
        if message is not None:
            answer["interaction"]["response_message_id"] = message["id"]
            answer["resource"]["message"] = dict(message)
        return _Reply(200, answer)

    def _interaction_for_webhook(self, app_id: str, token: str) -> FakeInteraction | _Reply:
        interaction = next((i for i in self.interactions.values() if i.token == token), None)
        if interaction is None:
            if self.strict:
                return _error(404, 10015, "Unknown Webhook")
            interaction = self._lookup_interaction(new_snowflake(), token)
            assert interaction is not None  # lenient mode always creates one
            interaction.application_id = int(app_id)
            interaction.response_type = _DEFERRED_MESSAGE  # an arbitrary webhook: usable at once
        if interaction.application_id != int(app_id):
            return _error(404, 10015, "Unknown Webhook")
        if not interaction.acknowledged:
            # Discord: followups and @original only exist once the interaction was responded to.
            return _error(404, 10015, "Unknown Webhook")
        return interaction

    def _webhook_execute(self, recorded: RecordedRequest, app_id: str, token: str) -> _Reply:
        found = self._interaction_for_webhook(app_id, token)
        if isinstance(found, _Reply):
            return found
        limit_error = self._check_upload(recorded.files, found.attachment_size_limit)
        if limit_error is not None:
            return limit_error
        payload = recorded.json or {}
        message = self._new_message(found.channel_id, payload, recorded.files, interaction=found)
        found.followup_ids.append(int(message["id"]))
        if recorded.query.get("wait", "").lower() in ("1", "true"):
            return _Reply(200, dict(message))
        return _Reply(204)

    def _webhook_message(self, recorded: RecordedRequest, app_id: str, token: str, message_id: str) -> _Reply:
        found = self._interaction_for_webhook(app_id, token)
        if isinstance(found, _Reply):
            return found
        if message_id == "@original":
            target = found.original_message_id
        else:
            target = int(message_id)
            if target not in found.followup_ids and target != found.original_message_id:
                return _error(404, 10008, "Unknown Message")
        message = self.messages.get(target) if target is not None else None
        if message is None:
            return _error(404, 10008, "Unknown Message")
        if recorded.method == "GET":
            return _Reply(200, dict(message))
        if recorded.method == "DELETE":
            del self.messages[int(message["id"])]
            return _Reply(204)
        limit_error = self._check_upload(recorded.files, found.attachment_size_limit)
        if limit_error is not None:
            return limit_error
        return _Reply(200, dict(self._edit_message(message, recorded.json or {}, recorded.files)))

    # ------------------------------------------------------------------ route handlers: channels

    def _known_channel(self, channel_id: int) -> dict[str, Any] | _Reply:
        if channel_id not in self.channels and self.strict:
            return _error(404, 10003, "Unknown Channel")
        return self._channel_or_default(channel_id)

    def _get_channel(self, recorded: RecordedRequest, channel_id: str) -> _Reply:
        channel = self._known_channel(int(channel_id))
        return channel if isinstance(channel, _Reply) else _Reply(200, dict(channel))

    def _typing(self, recorded: RecordedRequest, channel_id: str) -> _Reply:
        channel = self._known_channel(int(channel_id))
        return channel if isinstance(channel, _Reply) else _Reply(204)

    def _history(self, recorded: RecordedRequest, channel_id: str) -> _Reply:
        messages = sorted(self.messages_in(int(channel_id)), key=lambda m: int(m["id"]), reverse=True)
        if "before" in recorded.query:
            messages = [m for m in messages if int(m["id"]) < int(recorded.query["before"])]
        if "after" in recorded.query:
            messages = [m for m in messages if int(m["id"]) > int(recorded.query["after"])]
        limit = int(recorded.query.get("limit", 50))
        return _Reply(200, [dict(m) for m in messages[:limit]])

    def _create_channel_message(self, recorded: RecordedRequest, channel_id: str) -> _Reply:
        channel = self._known_channel(int(channel_id))
        if isinstance(channel, _Reply):
            return channel
        limit_error = self._check_upload(recorded.files, self.upload_limit)
        if limit_error is not None:
            return limit_error
        payload = recorded.json or {}
        if not (payload.get("content") or payload.get("embeds") or payload.get("components") or recorded.files):
            return _error(400, 50006, "Cannot send an empty message")
        nonce = payload.get("nonce") if payload.get("enforce_nonce") else None
        if nonce is not None:
            earlier = self._message_for_nonce(int(channel_id), str(nonce))
            if earlier is not None:
                return earlier
        message = self._new_message(int(channel_id), payload, recorded.files)
        if nonce is not None:
            self._nonces[(int(channel_id), str(nonce))] = (time.monotonic(), int(message["id"]))
        return _Reply(200, dict(message))

    def _message_for_nonce(self, channel_id: int, nonce: str) -> _Reply | None:
        """Discord's answer to a create repeating a recent ``nonce`` with ``enforce_nonce``: the message made the
        first time (nothing new is created), or 404 if that one was deleted since. None: the nonce is new."""
        seen = self._nonces.get((channel_id, nonce))
        if seen is None or time.monotonic() - seen[0] > self.nonce_window_s:
            return None
        message = self.messages.get(seen[1])
        if message is None:
            return _error(404, 10008, "Unknown Message")
        return _Reply(200, dict(message))

    def _message_in(self, channel_id: str, message_id: str) -> dict[str, Any] | _Reply:
        message = self.messages.get(int(message_id))
        if message is None or int(message["channel_id"]) != int(channel_id):
            return _error(404, 10008, "Unknown Message")
        return message

    def _channel_message(self, recorded: RecordedRequest, channel_id: str, message_id: str) -> _Reply:
        message = self._message_in(channel_id, message_id)
        if isinstance(message, _Reply):
            return message
        if recorded.method == "GET":
            return _Reply(200, dict(message))
        if recorded.method == "DELETE":
            del self.messages[int(message_id)]
            return _Reply(204)
        if message["author"]["id"] != self.bot_user["id"]:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        limit_error = self._check_upload(recorded.files, self.upload_limit)
        if limit_error is not None:
            return limit_error
        return _Reply(200, dict(self._edit_message(message, recorded.json or {}, recorded.files)))

    def _own_reaction(self, recorded: RecordedRequest, channel_id: str, message_id: str, emoji: str) -> _Reply:
        message = self._message_in(channel_id, message_id)
        if isinstance(message, _Reply):
            return message
        name, _, emoji_id = emoji.partition(":")
        key = {"id": emoji_id or None, "name": name}
        reactions: list[dict[str, Any]] = message.setdefault("reactions", [])
        existing = next((r for r in reactions if r["emoji"] == key), None)
        if recorded.method == "PUT":
            if existing is None:
                reactions.append(
                    {
                        "emoji": key,
                        "count": 1,
                        "count_details": {"burst": 0, "normal": 1},
                        "me": True,
                        "me_burst": False,
                        "burst_colors": [],
                    }
                )
            elif not existing["me"]:
                existing["me"] = True
                existing["count"] += 1
                existing["count_details"]["normal"] += 1
        elif existing is not None and existing["me"]:
            existing["me"] = False
            existing["count"] -= 1
            existing["count_details"]["normal"] -= 1
            if existing["count"] <= 0:
                reactions.remove(existing)
        return _Reply(204)

    def _user_reaction(
        self,
        recorded: RecordedRequest,
        channel_id: str,
        message_id: str,
        emoji: str,
        user_id: str,
    ) -> _Reply:
        """Remove someone else's reaction (needs Manage Messages on real Discord). Counts only: the fake does
        not track who reacted, so a test asserts on the recorded DELETE and its user id."""
        message = self._message_in(channel_id, message_id)
        if isinstance(message, _Reply):
            return message
        name, _, emoji_id = emoji.partition(":")
        reactions: list[dict[str, Any]] = message.setdefault("reactions", [])
        existing = next((r for r in reactions if r["emoji"] == {"id": emoji_id or None, "name": name}), None)
        if existing is not None:
            existing["count"] -= 1
            existing["count_details"]["normal"] -= 1
            if existing["count"] <= 0:
                reactions.remove(existing)
        return _Reply(204)

    # ------------------------------------------------------------------ route handlers: guilds, CDN

    def _get_guild(self, recorded: RecordedRequest, guild_id: str) -> _Reply:
        guild = self.guilds.get(int(guild_id))
        if guild is None:
            return _error(404, 10004, "Unknown Guild")
        gateway_only = ("members", "channels", "threads", "presences", "voice_states")
        rest = {k: v for k, v in guild.items() if k not in gateway_only}
        return _Reply(200, rest)

    def _get_member(self, recorded: RecordedRequest, guild_id: str, user_id: str) -> _Reply:
        member = self.members.get((int(guild_id), int(user_id)))
        if member is None:
            return _error(404, 10007, "Unknown Member")
        return _Reply(200, dict(member))

    def _cdn_attachment(self, recorded: RecordedRequest, channel_id: str, attachment_id: str, filename: str) -> _Reply:
        blob = self._blobs.get(int(attachment_id))
        if blob is None:
            return _Reply(404, "Not Found")
        return _Reply(200, blob.data, {"Content-Type": blob.content_type})
