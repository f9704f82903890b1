"""The layering holds: the import-linter contracts pass, and the light processes stay light at run time.

import-linter (``[tool.importlinter]`` in pyproject.toml) proves the static imports: the kernel is a leaf, the
bot never imports generation or the ML stack, generation never imports the bot or discord, storage and
migrations import neither side, nothing imports the CLI. Running it here means plain ``pytest`` fails on a
violation too, not only ``scripts/test``. What it cannot see is an import made at run time (``importlib``, a
library importing something itself), so the bot's modules are also imported for real and the loaded modules
checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the bot process must never load: the worker's side and its libraries (the bot contract's list).
HEAVY = (
    "generation",
    "torch",
    "transformers",
    "diffusers",
    "librosa",
    "numpy",
    "soundfile",
    "onnxruntime",
    "peft",
    "boto3",
)

PROBE = f"""
import importlib, json, pkgutil, sys
import bot
for info in pkgutil.walk_packages(bot.__path__, "bot."):
    importlib.import_module(info.name)
# `beatforge --help` and `beatforge bot` load the CLI, which imports the worker's side only inside its commands.
import cli.main, beatforge.queue, storage.jobs, storage.db
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def test_import_contracts_are_kept() -> None:
    # lint-imports as scripts/test runs it, from this interpreter; --no-cache: a test writes nothing into the tree
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    lint = subprocess.run(
        [sys.executable, "-c", command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_importing_every_bot_module_loads_no_ml_library() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
