"""The bot's small HTTP server: artifact files behind signed, expiring links (see ``bot/links.py``).

Files over Discord's upload limit are posted as a link to ``GET /files/<relative path>?exp=&sig=``;
``GET /healthz`` answers ``ok``. Only started when ``BEATFORGE_PUBLIC_URL`` is set (``Downloads``). Imports
nothing heavier than aiohttp (a discord.py dependency) and the storage helpers.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from beatforge.config import Settings
from bot.links import FILES_PREFIX, BadSignature, LinkExpired, check_link, expiry, make_link
from storage.artifacts import ArtifactStore
from storage.backends import ArtifactBackend, content_disposition
from storage.errors import UnsafeArtifactPath

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("store", ArtifactStore)
SECRET_KEY = web.AppKey("link_secret", str)


async def serve_file(request: web.Request) -> web.StreamResponse:
    relative = request.match_info["path"]
    store, secret = request.app[STORE_KEY], request.app[SECRET_KEY]
    try:
        check_link(relative, request.query.get("exp"), request.query.get("sig"), secret=secret)
    except LinkExpired as exc:
        log.info("expired download link", extra={"path": relative, "expires": exc.expires})
        raise web.HTTPGone(text="This download link has expired.\n") from None
    except BadSignature as exc:
        log.warning("refused download link", extra={"path": relative, "reason": str(exc), "remote": request.remote})
        raise web.HTTPForbidden(text="This download link is not valid.\n") from None
    try:
        path = store.resolve(relative)
    except UnsafeArtifactPath:
        log.warning("download link outside the artifact directory", extra={"path": relative})
        raise web.HTTPNotFound(text="No such file.\n") from None
    if not path.is_file():
        log.info("download link to a missing file", extra={"path": relative})
        raise web.HTTPNotFound(text="No such file.\n")
    log.info("serving download", extra={"path": relative, "bytes": path.stat().st_size, "remote": request.remote})
    return web.FileResponse(path, headers={"Content-Disposition": content_disposition(path.name)})


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(store: ArtifactStore, *, secret: str) -> web.Application:
    app = web.Application()
    app[STORE_KEY] = store
    app[SECRET_KEY] = secret
    app.router.add_get(FILES_PREFIX + "{path:.+}", serve_file)
    app.router.add_get("/healthz", healthz)
    return app


class FileServer:
    """Runs :func:`make_app` on ``host:port`` (port 0 picks a free one; see :attr:`port`)."""

    def __init__(self, store: ArtifactStore, *, secret: str, host: str, port: int) -> None:
        self.app = make_app(store, secret=secret)
        self.host, self._port = host, port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the configured one only when that was 0)."""
        if self._runner is None or not self._runner.addresses:
            return self._port
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("file server listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            log.info("file server stopped", extra={"host": self.host, "port": self._port})

    async def __aenter__(self) -> FileServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


class Downloads:
    """Download links for results: presigned URLs when the artifacts are in a bucket (``artifact_backend=s3``: the
    files are not on this machine, and the bucket serves them better than the bot could); else this bot's own
    signed links, on when the settings ask for them and the file server is running.

    A server that cannot start (e.g. its port is taken) leaves links off and the bot running: big files are
    then named with a "too large" line instead of a link.
    """

    def __init__(self, store: ArtifactStore, settings: Settings, artifacts: ArtifactBackend | None = None) -> None:
        self.store, self.settings = store, settings
        #: The artifact back end, asked first for a link of its own (S3: presigned).
        self.artifacts = artifacts
        self.server: FileServer | None = None

    async def start(self) -> None:
        settings = self.settings
        if settings.public_url is None or settings.link_secret is None:
            return
        server = FileServer(
            self.store, secret=settings.link_secret.get_secret_value(), host=settings.http_host, port=settings.http_port
        )
        try:
            await server.start()
        except OSError as exc:
            log.error(
                "file server could not start; download links are off",
                extra={"host": settings.http_host, "port": settings.http_port, "error": repr(exc)},
            )
            return
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    def link(self, relative_path: str) -> tuple[str, int] | None:
        """A link to an artifact and the unix second it expires (both expire after ``link_ttl_hours``; S3 caps
        presigned URLs at a week), or None when links are off."""
        settings = self.settings
        if self.artifacts is not None:
            presigned = self.artifacts.link(relative_path, settings.link_ttl_hours * 3600)
            if presigned is not None:
                return presigned
        if self.server is None or settings.public_url is None or settings.link_secret is None:
            return None
        now, ttl = time.time(), settings.link_ttl_hours * 3600
        secret = settings.link_secret.get_secret_value()
        return make_link(settings.public_url, relative_path, secret=secret, ttl=ttl, now=now), expiry(ttl, now=now)
