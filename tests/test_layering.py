"""The bot process stays light: no module of `bot` (nor what it imports) may pull in the ML stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib, json, pkgutil, sys
import bot
for info in pkgutil.walk_packages(bot.__path__, "bot."):
    importlib.import_module(info.name)
import cli.main, beatforge.queue, storage.jobs, storage.db
heavy = sorted(m for m in ("torch", "transformers", "numpy", "soundfile", "generation") if m in sys.modules)
print(json.dumps(heavy))
"""


def test_importing_every_bot_module_loads_no_ml_library() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_generation_never_imports_discord() -> None:
    probe = "import sys, generation.worker.app, generation.music.engine; print('discord' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
