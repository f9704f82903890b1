"""The bot as its own process, for signal tests: the real ``bot.app.run_bot`` against a FakeDiscord of its own.

Only the gateway is replaced (there is no socket to the fake): ``connect`` replays READY and then idles until the
bot is closed, as the real one returns once its socket is closed. Prints ``READY`` once the bot is up and
``EXIT <code>`` when ``run_bot`` returned; the settings come from the environment (``BEATFORGE_*``).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import discord

from beatforge.config import Settings
from bot.app import run_bot
from tests.support.discord_harness import FakeDiscord, dispatch_ready, guild_payload, patch_api_base


async def main() -> int:
    async with FakeDiscord() as fake:

        async def connect(self: discord.Client, *, reconnect: bool = True) -> None:
            await dispatch_ready(self, [guild_payload(bot_user=fake.bot_user)])
            sys.stdout.write("READY\n")
            sys.stdout.flush()
            while not self.is_closed():  # noqa: ASYNC110 (discord.py offers nothing to await for "closed")
                await asyncio.sleep(0.05)

        discord.Client.connect = connect  # type: ignore[method-assign]
        with patch_api_base(fake.api_base):
            code = await run_bot(Settings())
    sys.stdout.write(f"EXIT {code}\n")
    return code


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
