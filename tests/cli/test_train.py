"""``beatforge train`` and ``beatforge model register``: exit codes, the report, the registry entry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from beatforge.config import get_settings
from cli.main import main
from cli.train import TrainBar
from generation.music.registry import ModelRegistry
from tests.generation.test_training_data import write_clips


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("BEATFORGE_DISCORD_TOKEN", "BEATFORGE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env; ./data (registry file, models) lands in tmp
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_train_writes_registers_and_register_command_adds_a_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_clips(tmp_path / "clips", count=3, seconds=1.0)
    args = ["train", str(data), "--base", "debug", "--name", "cli-trap", "--steps", "4", "--window-s", "0.5"]
    assert main([*args, "--batch-size", "2", "--progress", "always"]) == 0
    captured = capsys.readouterr()
    out = tmp_path / "data" / "models" / "cli-trap"
    assert captured.out.startswith("wrote data/models/cli-trap (lora, 4 steps, loss ")
    assert "training 4/4 · loss" in captured.err and "steps/s" in captured.err
    registry = ModelRegistry(tmp_path / "data" / "models.json")
    assert registry.get("cli-trap").base == "debug"

    copy = tmp_path / "elsewhere"
    shutil.copytree(out, copy)
    assert main(["model", "register", str(copy), "--name", "cli-trap-2", "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert (entry["name"], entry["kind"], entry["source"]) == ("cli-trap-2", "lora", str(copy))
    assert main(["model", "register", str(copy)]) == 2  # the card's name is taken
    assert "already registered" in capsys.readouterr().err


def test_train_reports_every_data_problem_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_clips(tmp_path / "clips", count=1, seconds=1.0)
    (data / "clip0.txt").unlink()
    (data / "notes.txt").write_text("not a caption of anything")
    (data / "bad.mp3").write_bytes(b"ID3 nonsense")
    (data / "bad.txt").write_text("bad")
    assert main(["train", str(data), "--base", "debug", "--name", "BAD NAME", "--window-s", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "cannot train (3 problems)" in err
    assert "--name 'BAD NAME'" in err and "clip0.wav: no caption" in err and "bad.mp3: bad.mp3 is not a readable" in err
    assert not (tmp_path / "data" / "models").exists()


def test_progress_line_shows_loss_rate_and_validation() -> None:
    bar = TrainBar(stream=None)
    bar.first_step, bar.started = 0, 0.0
    bar.val = 3.5
    line = bar.line(10, 40, 3.25, elapsed=5.0)
    assert line == "training 10/40 · loss 3.250 · val 3.500 · 2.00 steps/s · 15 s left"
