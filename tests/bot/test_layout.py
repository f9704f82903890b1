"""The bot's shape holds: cogs stay small and independent, and nothing finds its collaborators by name.

Each cog gets what it uses from its extension's ``setup`` (``bot/app.py`` makes the parts); shared code lives in
modules beside the cogs, never in another cog. These checks read the source, so they fail on the change that
breaks the rule rather than on some later bug.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[2] / "bot"
COGS = sorted(p for p in (BOT / "cogs").glob("*.py") if p.name != "__init__.py")
#: The size a cog may grow to (the style guide's "about 400 lines").
MAX_COG_LINES = 400


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("cog", COGS, ids=lambda p: p.stem)
def test_no_cog_imports_another_cog(cog: Path) -> None:
    others = {f"bot.cogs.{p.stem}" for p in COGS} - {f"bot.cogs.{cog.stem}"}
    assert not imported_modules(cog) & others


@pytest.mark.parametrize("cog", COGS, ids=lambda p: p.stem)
def test_every_cog_is_under_the_size_limit(cog: Path) -> None:
    assert len(cog.read_text().splitlines()) < MAX_COG_LINES


def test_nothing_in_the_bot_finds_a_cog_or_a_method_by_its_name() -> None:
    for path in sorted(BOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                assert name not in {"get_cog", "getattr"}, f"{path.relative_to(BOT.parent)}:{node.lineno} {name}()"
