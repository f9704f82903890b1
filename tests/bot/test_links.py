"""Download links for files over Discord's upload limit: signing, the bot's file server, and delivery.

The server tests run the real aiohttp app on a loopback port and fetch with aiohttp's client; the last
test drives the real bot against the Discord harness and follows the link it posted.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import pytest
import yarl
from arq.connections import ArqRedis
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from beatforge.config import Settings
from bot.app import Beatforge
from bot.file_server import FileServer
from bot.links import BadSignature, LinkExpired, check_link, make_link, sign
from bot.messages import too_large_text
from storage import jobs
from storage.artifacts import ArtifactStore
from tests.support.bot import CHANNEL_MESSAGES
from tests.support.discord_harness import FakeDiscord, connected, dispatch_gateway, settle, slash_command_payload

SECRET = "test-secret-0123456789abcdef"
BASE = "https://beats.example.com"
LINK = re.compile(r"<(http://127\.0\.0\.1:\d+/files/[^>\s]+)>")


def parts(url: str) -> tuple[str, str, str]:
    """(relative path, exp, sig) of a link, decoded as the server sees them."""
    split = urlsplit(url)
    query = parse_qs(split.query)
    return unquote(split.path.removeprefix("/files/")), query["exp"][0], query["sig"][0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- bot.links: pure signing ------------------------------------------------------------------


def test_a_link_round_trips() -> None:
    url = make_link(BASE + "/", "12/beat.wav", secret=SECRET, ttl=timedelta(hours=1), now=1_000.0)
    assert url.startswith(f"{BASE}/files/12/beat.wav?exp=4600&sig=")
    relative, exp, sig = parts(url)
    assert relative == "12/beat.wav"
    assert check_link(relative, exp, sig, secret=SECRET, now=4_599.0) == 4600


@pytest.mark.parametrize(
    "tamper",
    [
        lambda rel, exp, sig: ("12/other.wav", exp, sig),  # another file
        lambda rel, exp, sig: ("13/beat.wav", exp, sig),  # another job
        lambda rel, exp, sig: (rel, str(int(exp) + 3600), sig),  # a longer life
        lambda rel, exp, sig: (rel, exp, sig[:-1] + ("0" if sig[-1] != "0" else "1")),  # one hex digit
        lambda rel, exp, sig: (rel, exp, sig[:10]),  # truncated
        lambda rel, exp, sig: (rel, exp, "é" * 64),  # not even hex
        lambda rel, exp, sig: (rel, "soon", sig),  # malformed expiry
        lambda rel, exp, sig: (rel, None, sig),
        lambda rel, exp, sig: (rel, exp, None),
    ],
)
def test_any_tampering_is_a_bad_signature(
    tamper: Callable[[str, str, str], tuple[str, str | None, str | None]],
) -> None:
    relative, exp, sig = parts(make_link(BASE, "12/beat.wav", secret=SECRET, ttl=3600, now=1_000.0))
    with pytest.raises(BadSignature):
        check_link(*tamper(relative, exp, sig), secret=SECRET, now=1_000.0)


def test_another_secret_is_a_bad_signature() -> None:
    relative, exp, sig = parts(make_link(BASE, "12/beat.wav", secret=SECRET, ttl=3600, now=1_000.0))
    with pytest.raises(BadSignature):
        check_link(relative, exp, sig, secret=SECRET + "x", now=1_000.0)


def test_an_old_link_is_expired_not_forged() -> None:
    relative, exp, sig = parts(make_link(BASE, "12/beat.wav", secret=SECRET, ttl=60, now=1_000.0))
    assert check_link(relative, exp, sig, secret=SECRET, now=1_059.0) == 1060
    with pytest.raises(LinkExpired) as info:
        check_link(relative, exp, sig, secret=SECRET, now=1_060.0)
    assert info.value.expires == 1060


def test_bad_ttl_and_secret_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        make_link(BASE, "1/a.wav", secret=SECRET, ttl=0)
    with pytest.raises(ValueError, match="secret"):
        sign("1/a.wav", 5, secret="")


@pytest.mark.parametrize("name", ["my beat #1?.wav", "50% & more=yes.flac", "ünïcødé 🎵.mp3", "a%2Fb.wav", "x+y;z.ogg"])
def test_odd_filenames_are_quoted_and_survive(name: str) -> None:
    url = make_link(BASE, f"7/{name}", secret=SECRET, ttl=60, now=0.0)
    split = urlsplit(url)
    assert split.netloc == "beats.example.com" and not split.fragment  # '#' and '?' did not end the path
    assert re.fullmatch(r"[A-Za-z0-9/_.~%-]+", split.path)
    relative, exp, sig = parts(url)
    assert relative == f"7/{name}"
    check_link(relative, exp, sig, secret=SECRET, now=1.0)


def test_too_large_text_with_and_without_a_link() -> None:
    without = too_large_text("a.wav", 11 * 2**20, 10 * 2**20)
    assert (
        "could not be attached" in without and "BEATFORGE_PUBLIC_URL" in without and "BEATFORGE_LINK_SECRET" in without
    )
    with_link = too_large_text("a.wav", 11 * 2**20, 10 * 2**20, f"{BASE}/files/1/a.wav?exp=5&sig=ab", 5)
    assert "10 MiB upload limit" in with_link and f"<{BASE}/files/1/a.wav?exp=5&sig=ab>" in with_link
    assert "<t:5:R>" in with_link and "could not" not in with_link


# --- settings -------------------------------------------------------------------------------------


def test_public_url_needs_a_link_secret() -> None:
    with pytest.raises(ValidationError, match="BEATFORGE_LINK_SECRET must be too"):
        Settings(_env_file=None, public_url=BASE)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(_env_file=None, public_url=BASE, link_secret="short")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="http:// or https://"):
        Settings(_env_file=None, public_url="beats.example.com", link_secret=SECRET)  # type: ignore[call-arg]
    ok = Settings(_env_file=None, public_url=BASE, link_secret=SECRET)  # type: ignore[call-arg]
    assert ok.link_ttl_hours == 72 and (ok.http_host, ok.http_port) == ("0.0.0.0", 8080)
    assert Settings(_env_file=None).public_url is None  # type: ignore[call-arg]  # links stay optional


# --- bot.file_server: the real aiohttp server -----------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "artifacts")
    with store.writing(12, "beat.wav") as tmp:
        tmp.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    (tmp_path / "outside.txt").write_bytes(b"not an artifact")
    return store


@pytest.fixture
async def served(store: ArtifactStore) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async with (
        FileServer(store, secret=SECRET, host="127.0.0.1", port=0) as server,
        aiohttp.ClientSession() as client,
    ):
        assert server.port != 0
        yield f"http://127.0.0.1:{server.port}", client


async def test_a_valid_link_downloads_the_file(served: tuple[str, aiohttp.ClientSession], store: ArtifactStore) -> None:
    base, client = served
    async with client.get(make_link(base, "12/beat.wav", secret=SECRET, ttl=60)) as response:
        assert response.status == 200
        assert await response.read() == store.resolve("12/beat.wav").read_bytes()
        assert response.headers["Content-Disposition"] == (
            "attachment; filename=\"beat.wav\"; filename*=UTF-8''beat.wav"
        )
    async with client.get(f"{base}/healthz") as response:
        assert response.status == 200 and await response.text() == "ok\n"


async def test_an_odd_filename_is_served_under_its_own_name(
    served: tuple[str, aiohttp.ClientSession], store: ArtifactStore
) -> None:
    base, client = served
    name = 'ünï "beat" #1?.wav'
    with store.writing(3, name) as tmp:
        tmp.write_bytes(b"odd")
    async with client.get(make_link(base, f"3/{name}", secret=SECRET, ttl=60)) as response:
        assert response.status == 200 and await response.read() == b"odd"
        disposition = response.headers["Content-Disposition"]
        assert disposition.startswith('attachment; filename="_n_ _beat_ #1?.wav"; ')
        assert unquote(disposition.split("filename*=UTF-8''")[1]) == name


async def test_tampered_and_expired_links_are_refused(served: tuple[str, aiohttp.ClientSession]) -> None:
    base, client = served
    good = make_link(base, "12/beat.wav", secret=SECRET, ttl=60)
    _, exp, sig = parts(good)
    forged = [
        good.replace("sig=", "sig=0"),  # a longer signature
        f"{base}/files/12/beat.wav?exp={int(exp) + 3600}&sig={sig}",  # a longer life
        f"{base}/files/12/beat.wav",  # no signature
        make_link(base, "12/beat.wav", secret="another-secret-0123456789", ttl=60),
    ]
    for url in forged:
        async with client.get(url) as response:
            assert (response.status, await response.text()) == (403, "This download link is not valid.\n"), url
    expired = make_link(base, "12/beat.wav", secret=SECRET, ttl=60, now=time.time() - 3600)
    async with client.get(expired) as response:
        assert (response.status, await response.text()) == (410, "This download link has expired.\n")


async def test_missing_and_outside_files_are_not_found(served: tuple[str, aiohttp.ClientSession]) -> None:
    base, client = served
    async with client.get(make_link(base, "12/gone.wav", secret=SECRET, ttl=60)) as response:
        assert (response.status, await response.text()) == (404, "No such file.\n")
    # Even with a correctly signed link (a leaked secret), nothing outside the artifact root is served.
    # encoded=True sends the `..` segments as they are instead of letting the client normalise them away.
    for relative in ("../outside.txt", "12/../../outside.txt"):
        url = yarl.URL(make_link(base, relative, secret=SECRET, ttl=60), encoded=True)
        assert "/../" in url.raw_path
        async with client.get(url) as response:
            assert (response.status, await response.text()) == (404, "No such file.\n"), relative


# --- the bot: an artifact over the upload limit is posted as a link --------------------------------


async def test_a_file_over_the_limit_is_posted_as_a_working_link(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    port = free_port()
    linked = settings.model_copy(
        update={
            "public_url": f"http://127.0.0.1:{port}/",
            "link_secret": SecretStr(SECRET),
            "http_host": "127.0.0.1",
            "http_port": port,
        }
    )
    bot = Beatforge(settings=linked, redis=arq_redis, sessions=sessions)
    limit = 2**20  # a 1 MiB upload limit on this interaction
    async with FakeDiscord() as fake, connected(bot, fake), aiohttp.ClientSession() as client:
        assert bot.downloads.server is not None and bot.downloads.server.port == port
        dispatch_gateway(
            bot,
            "INTERACTION_CREATE",
            slash_command_payload("beat", {"prompt": "big"}, bot=bot, attachment_size_limit=limit),
        )
        await settle(bot)
        async with sessions() as session:
            job = await jobs.get_job(session, 1)
        big = bytes(range(256)) * (3 * 2**11)  # 1.5 MiB: over the limit
        with bot.store.writing(job.id, "big beat.wav") as tmp:
            tmp.write_bytes(big)
        with bot.store.writing(job.id, "big beat.json") as tmp:
            tmp.write_text(json.dumps({"bpm": 120}))
        artifacts = [
            bot.store.record(job.id, "big beat.wav", kind="audio"),
            bot.store.record(job.id, "big beat.json", kind="metadata"),
        ]
        async with sessions() as session:
            await jobs.mark_done(session, job.id, artifacts=artifacts)

        post = await fake.wait_for("POST", CHANNEL_MESSAGES, timeout=5)  # the interaction's 1 MiB limit holds there
        assert [f.filename for f in post.files] == ["big beat.json"]  # what fits is still attached
        content = post.json["content"]
        assert "big beat.wav is 1.5 MiB, over this server's 1 MiB upload limit — download it here" in content
        (url,) = LINK.findall(content)
        assert url.startswith(f"http://127.0.0.1:{port}/files/{job.id}/big%20beat.wav?exp=")
        async with client.get(url) as response:
            assert response.status == 200
            assert await response.read() == big
            assert 'filename="big beat.wav"' in response.headers["Content-Disposition"]
    assert bot.downloads.server is None  # stopped with the bot
    with socket.socket() as sock:  # and the port is free again
        sock.bind(("127.0.0.1", port))


async def test_a_taken_port_leaves_links_off_but_the_bot_running(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], arq_redis: ArqRedis
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        linked = settings.model_copy(
            update={"public_url": BASE, "link_secret": SecretStr(SECRET), "http_host": "127.0.0.1", "http_port": port}
        )
        bot = Beatforge(settings=linked, redis=arq_redis, sessions=sessions)
        async with FakeDiscord() as fake, connected(bot, fake):
            assert bot.downloads.server is None and bot.downloads.link("1/a.wav") is None
            assert bot.is_ready()
