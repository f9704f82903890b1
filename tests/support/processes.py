"""What a child process (``beatforge worker``, ``beatforge bot``) needs to see the settings a test or bench uses."""

from __future__ import annotations

import os

from beatforge.config import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process see these settings (every field as ``BEATFORGE_<NAME>``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATFORGE_")}
    for name, value in settings.model_dump(exclude={"discord_token"}).items():
        if value is not None:
            env[f"BEATFORGE_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env
