from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from sqlalchemy import create_engine, inspect

from beatforge.config import get_settings
from cli.main import main
from generation.audio.io import write_wav
from generation.audio.signal import clock
from tests.support.synth import render_beat


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
    assert main(["generate", "x", "--model", "debug", "--duration", "199", "--out", str(out)]) == 2
    assert "duration must be at most 120" in capsys.readouterr().err
    assert main(["generate", "x", "--model", "/nowhere", "--out", str(out)]) == 1
    assert "model directory /nowhere does not exist" in capsys.readouterr().err
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


def test_loop_from_an_audio_file_writes_loop_and_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rng: np.random.Generator
) -> None:
    render = render_beat(bpm=100, bars=5, rng=rng)
    source = tmp_path / "mybeat.wav"
    write_wav(source, render.samples, sample_rate=render.sample_rate)
    args = ["loop", "--input", str(source), "--bars", "2", "--format", "mp3", "--out", str(tmp_path / "out")]
    assert main([*args, "--prefix", "drums"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bars"] == 2 and abs(summary["bpm"] - 100) < 1
    assert Path(summary["file"]).name.startswith("drums-seed0-2bars-100bpm") and summary["file"].endswith(".mp3")
    metadata = json.loads(Path(summary["metadata"]).read_text())
    assert metadata["format"] == "mp3" and metadata["bars"] == 2 and metadata["file"] == Path(summary["file"]).name


@pytest.mark.parametrize(
    ("args", "code", "phrase"),
    [
        (["loop", "x", "--input", "a.wav"], 2, "either a PROMPT"),
        (["loop"], 2, "either a PROMPT"),
        (["loop", "x", "--min-duration", "20", "--max-duration", "10"], 2, "longer than max_duration"),
        (["loop", "x", "--stretch"], 2, "needs a target bpm"),
        (["loop", "--input", "missing.wav"], 1, "missing.wav does not exist"),
    ],
)
def test_loop_refuses_bad_requests(args: list[str], code: int, phrase: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == code
    assert phrase in capsys.readouterr().err


def test_auto_without_an_llm_uses_templates_and_reports_each_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny model makes noise, which has no beat to loop: every take says so, and nothing stops the batch."""
    args = ["auto", "--use-case", "RPG town music", "--count", "2", "--model", "debug", "--out", str(tmp_path)]
    assert main([*args, "--seed", "5", "--bpm", "90", "--bars", "1"]) == 1
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [line["n"] for line in lines] == [1, 2] and all(line["prompt_source"] == "templates" for line in lines)
    assert all("rpg town music" in line["prompt"] and line["error"] for line in lines)
    assert "no LLM is configured" in out.err and "0 of 2 loops" in out.err


def _refusal(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the real CLI entry on bad input: exit status 2 and one sentence on stderr, no traceback."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("beatforge: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_generate_into_a_folder_or_under_a_file_is_refused_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model name that does not exist proves the refusal came first: loading it would fail with status 1."""
    folder, blocker = tmp_path / "beats", tmp_path / "notes.txt"
    folder.mkdir()
    blocker.write_text("not a folder")
    args = ["generate", "x", "--model", "/nowhere", "--duration", "1"]
    assert f"--out {folder} is a folder" in _refusal([*args, "--out", str(folder)], capsys)
    err = _refusal([*args, "--out", str(blocker / "beat.wav")], capsys)
    assert f"{blocker} is a file, not a folder" in err
    # a later take's name taken by a folder is refused the same way, before any take is written
    (tmp_path / "beat-take2.wav").mkdir()
    err = _refusal([*args, "--takes", "2", "--out", str(tmp_path / "beat.wav")], capsys)
    assert "beat-take2.wav is a folder" in err and not (tmp_path / "beat.wav").exists()
    assert "not a readable" in _refusal([*args, "--continue", str(blocker), "--out", "b.wav"], capsys)


def test_midi_refuses_bad_input_in_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file where the output folder should go")
    song = tmp_path / "song.wav"
    write_wav(song, np.zeros((1, 800), np.float32), sample_rate=8000)
    assert f"--out {taken} is a file; give a folder" in _refusal(["midi", str(song), "--out", str(taken)], capsys)
    assert taken.read_text().startswith("a file")

    folder = tmp_path / "stems"
    folder.mkdir()
    assert _refusal(["midi", str(folder)], capsys) == "beatforge: stems is a folder, not an audio file\n"

    notes = tmp_path / "notes.wav"
    notes.write_text("my lyrics, saved as .wav by mistake\n")
    err = _refusal(["midi", str(notes)], capsys)
    assert err.startswith("beatforge: notes.wav is not a readable audio file") and "Error opening" not in err

    # An hour of silence at 1 kHz, 8-bit: 3.6 MB, yet a real hour by its header, as the limit is checked.
    hour = tmp_path / "hour.wav"
    with sf.SoundFile(hour, "w", samplerate=1000, channels=1, subtype="PCM_U8", format="WAV") as f:
        f.write(np.zeros(3600 * 1000, np.float32))
    err = _refusal(["midi", str(hour)], capsys)
    assert err == f"beatforge: hour.wav is 60:00 long; the limit is {clock(get_settings().midi_max_input_s)}\n"
