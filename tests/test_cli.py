from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from PIL import Image
from sqlalchemy import create_engine, inspect

from beatforge.cli import main
from beatforge.config import get_settings


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("BEATFORGE_DISCORD_TOKEN", "BEATFORGE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env, and ./data lands in tmp
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_generate_writes_the_requested_wav(tmp_path: Path) -> None:
    out = tmp_path / "beats" / "beat.wav"
    args = ["generate", "dark psychedelic trap", "--model", "debug", "--duration", "1.5", "--seed", "3"]
    assert main([*args, "--out", str(out)]) == 0
    info = sf.info(out)
    assert (info.samplerate, info.frames) == (32_000, 48_000)


def test_generate_refuses_bad_input_and_missing_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "beat.wav"
    assert main(["generate", "   ", "--model", "debug", "--out", str(out)]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["generate", "x", "--model", "debug", "--duration", "99", "--out", str(out)]) == 2
    assert "duration must be at most 30" in capsys.readouterr().err
    assert main(["generate", "x", "--model", "/nowhere", "--out", str(out)]) == 1
    assert "could not be loaded" in capsys.readouterr().err
    assert not out.exists()


def test_db_upgrade_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATFORGE_DATABASE_URL", f"sqlite:///{tmp_path}/x/bf.db")  # plain sqlite URLs are accepted
    assert main(["db", "upgrade"]) == 0
    engine = create_engine(f"sqlite:///{tmp_path}/x/bf.db")
    assert {"users", "generations", "artifacts", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_bot_without_a_token_says_what_to_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bot"]) == 2
    assert "BEATFORGE_DISCORD_TOKEN" in capsys.readouterr().err


def test_cover_with_the_tiny_pipeline_and_the_fallback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "covers" / "c.png"
    base = ["cover", "lofi rain", "--style", "lofi", "--mood", "calm", "--title", "Rainy Day", "--size", "64"]
    assert main([*base, "--model", "debug", "--seed", "1", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["source"], summary["model"], summary["seed"]) == ("diffusion", "debug", 1)
    with Image.open(out) as image:
        assert image.size == (64, 64)
    assert main([*base, "--model", "procedural", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "procedural"
    assert main([*base[:-1], "63", "--model", "procedural", "--out", str(out)]) == 2
    assert "size" in capsys.readouterr().err
