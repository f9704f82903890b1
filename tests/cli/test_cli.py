from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from PIL import Image
from sqlalchemy import create_engine, inspect

from beatforge.config import get_settings
from cli.main import main
from generation.audio.io import write_wav
from generation.audio.signal import clock
from generation.music.sampling import take_seed
from tests.support.chat_server import ChatServer
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


def test_generate_best_of_keeps_the_take_clap_scores_highest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["generate", "boom bap, dusty drums", "--model", "debug", "--duration", "1", "--seed", "6"]
    assert main([*base, "--best-of", "3", "--out", str(tmp_path / "none.wav")]) == 2  # no CLAP model: refused
    assert "--best-of needs a CLAP model" in capsys.readouterr().err and not (tmp_path / "none.wav").exists()
    assert main([*base, "--takes", "3", "--clap", "debug", "--out", str(tmp_path / "all.wav")]) == 0
    capsys.readouterr()
    made = [json.loads((tmp_path / name).read_text()) for name in ("all.json", "all-take2.json", "all-take3.json")]
    best = max(made, key=lambda m: m["text_match"])  # each take scored alone, as the ranking must see them
    assert best["take"] == 3  # with seed 6: not the first take, so keeping takes in order would fail
    assert main([*base, "--best-of", "3", "--clap", "debug", "--out", str(tmp_path / "best.wav")]) == 0
    kept = json.loads((tmp_path / "best.json").read_text())
    assert not (tmp_path / "best-take2.wav").exists()
    assert (kept["seed"], kept["best_of"]) == (best["seed"], 3)
    assert kept["text_match"] == pytest.approx(best["text_match"], abs=1e-4)


def test_generate_refuses_bad_input_and_missing_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "beat.wav"
    assert main(["generate", "   ", "--model", "debug", "--out", str(out)]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["generate", "x", "--model", "debug", "--duration", "299", "--out", str(out)]) == 2
    assert "duration must be at most 240" in capsys.readouterr().err
    assert main(["generate", "x", "--model", "debug", "--duration", "199", "--out", str(out)]) == 2
    assert "debug (MusicGen) makes beats of up to 120 s; 199 s is too long for it." in capsys.readouterr().err
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
    base = ["cover", "lofi rain", "--json", "--style", "lofi", "--mood", "calm", "--title", "Rainy Day", "--size", "64"]
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
    args = ["--json", "loop", "--input", str(source), "--bars", "2", "--format", "mp3", "--out", str(tmp_path / "out")]
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
        (["loop", "x", "--out", "loop.mp3"], 2, "--out loop.mp3 names a file, but loops are named"),
        (["auto", "--use-case", "rpg", "--out", "set.ogg"], 2, "give a folder, and the format with --format ogg"),
    ],
)
def test_loop_refuses_bad_requests(
    args: list[str], code: int, phrase: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(args) == code
    assert phrase in capsys.readouterr().err
    assert not (tmp_path / "loop.mp3").exists() and not (tmp_path / "set.ogg").exists()


def test_auto_without_an_llm_uses_templates_and_reports_each_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny model makes noise, which has no beat to loop: every take says so, and nothing stops the batch."""
    args = ["auto", "--use-case", "RPG town music", "--count", "2", "--model", "debug", "--out", str(tmp_path)]
    assert main([*args, "--json", "--seed", "5", "--bpm", "90", "--bars", "1"]) == 1
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


def test_generate_under_a_file_or_to_an_unknown_format_is_refused_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model name that does not exist proves the refusal came first: loading it would fail with status 1."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    args = ["generate", "x", "--model", "/nowhere", "--duration", "1"]
    for out in ("beat.aiff", str(tmp_path / "some" / "dir"), "beat"):
        err = _refusal([*args, "--out", out], capsys)
        assert f"--out {out} must end in .wav, .flac, .ogg, .mp3" in err and "folder (end it with /)" in err
    assert not (tmp_path / "some").exists() and not (tmp_path / "beat").exists()
    assert f"--out {blocker} is a file; give a folder" in _refusal([*args, "--out", f"{blocker}/"], capsys)
    err = _refusal([*args, "--out", str(blocker / "beat.wav")], capsys)
    assert f"{blocker} is a file, not a folder" in err
    assert f"--out {blocker} is a file; give a folder" in _refusal(["loop", "x", "--out", str(blocker)], capsys)
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


# --json: the results are read as data, whatever the human line looks like
GENERATE = ["generate", "Dark psychedelic trap!", "--json", "--model", "debug", "--duration", "1.5", "--seed", "3"]


def _ffprobe_codec(path: Path) -> str:
    """The codec ffprobe reads from the stream itself, not from the name, so a WAV named .mp3 cannot pass."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe is not installed")
    args = [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=codec_name", "-of", "csv=p=0"]
    return subprocess.run([*args, str(path)], capture_output=True, text=True, check=True).stdout.strip()


def test_generate_encodes_the_format_its_extension_names_for_every_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "beat.mp3"  # a missing folder is created
    assert main([*GENERATE, "--takes", "2", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    second = tmp_path / "new" / "beat-take2.mp3"
    assert [line["out"] for line in lines] == [str(out), str(second)]
    assert [line["format"] for line in lines] == ["mp3", "mp3"] and lines[0]["seed"] == 3 != lines[1]["seed"]
    for path in (out, second):
        assert path.read_bytes()[:4] != b"RIFF" and _ffprobe_codec(path) == "mp3"
        info = sf.info(path)
        assert info.format == "MP3" and info.samplerate == 32_000 and abs(info.duration - 1.5) < 0.1
    assert [line["metadata"] for line in lines] == [str(out.with_suffix(".json")), str(second.with_suffix(".json"))]
    for fmt, codec in (("flac", "flac"), ("ogg", "vorbis")):
        assert main([*GENERATE, "--no-metadata", "--out", str(tmp_path / f"b.{fmt}")]) == 0
        assert json.loads(capsys.readouterr().out)["metadata"] is None
        assert _ffprobe_codec(tmp_path / f"b.{fmt}") == codec and not (tmp_path / "b.json").exists()


def test_generate_into_a_folder_names_files_after_prompt_and_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*GENERATE, "--takes", "2", "--no-metadata", "--out", f"{tmp_path / 'beats'}/"]) == 0
    seeds = [json.loads(line)["seed"] for line in capsys.readouterr().out.splitlines()]
    names = sorted(path.name for path in (tmp_path / "beats").iterdir())
    assert names == sorted(f"dark-psychedelic-trap-{seed}.wav" for seed in seeds) and len(set(seeds)) == 2
    assert all(sf.info(tmp_path / "beats" / name).format == "WAV" for name in names)
    existing = tmp_path / "existing"  # an existing folder needs no slash
    existing.mkdir()
    assert main([*GENERATE, "--out", str(existing)]) == 0
    assert sorted(p.name for p in existing.iterdir()) == ["dark-psychedelic-trap-3.json", "dark-psychedelic-trap-3.wav"]


def test_generate_metadata_says_what_made_the_beat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*GENERATE, "--top-k", "50", "--temperature", "0.9", "--bpm", "140", "--out", str(tmp_path / "b.flac")]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    metadata = json.loads((tmp_path / "b.json").read_text())
    assert summary["metadata"] == str(tmp_path / "b.json")
    assert metadata["prompt"] == summary["prompt"] and "Dark psychedelic trap!" in metadata["prompt"]
    assert (metadata["model"], metadata["seed"], metadata["take"]) == ("debug", 3, 1)
    assert metadata["licence"] == "none needed (random weights built in code)"
    assert metadata["sampling"] == {"top_k": 50, "top_p": 0.0, "temperature": 0.9, "guidance_scale": 3.0}
    assert (metadata["file"], metadata["format"], metadata["bpm_target"]) == ("b.flac", "flac", 140)
    assert (metadata["duration_s"], metadata["sample_rate"], metadata["channels"]) == (1.5, 32_000, 1)
    assert {"bpm", "key"} <= metadata.keys()  # detected when the audio has them; the debug model makes noise


def test_generate_on_ace_step_sets_tempo_key_and_metre_and_says_the_beat_may_be_sold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["generate", "lofi piano", "--model", "debug-acestep", "--duration", "2", "--seed", "5", "--takes", "2"]
    args += ["--bpm", "120", "--key", "a minor", "--time-signature", "3", "--json", "--out", str(tmp_path / "b.wav")]
    assert main(args) == 0
    for name in ("b.wav", "b-take2.wav"):
        info = sf.info(tmp_path / name)
        assert (info.samplerate, info.channels, info.frames) == (48_000, 2, 96_000)
    metadata = json.loads((tmp_path / "b.json").read_text())
    assert (metadata["bpm_target"], metadata["key_target"], metadata["time_signature"]) == (120, "A minor", 3)
    assert metadata["model"] == "debug-acestep" and metadata["licence_terms"].endswith("use it as you like")
    assert [json.loads(line)["seed"] for line in capsys.readouterr().out.splitlines()] == [5, take_seed(5, 1)]
    assert main([*args[:3], "debug-acestep", "--duration", "241", "--out", str(tmp_path / "c.wav")]) == 2
    assert "duration must be at most 240" in capsys.readouterr().err


@pytest.mark.parametrize("llm", [False, True])
def test_generate_enhance_writes_the_prompt_first_and_records_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    chat_server: ChatServer,
    llm: bool,
) -> None:
    rich = "melancholic trap beat in C minor, soft felt piano chords, deep sliding 808 bass, crisp hi-hats, 140 bpm"
    chat_server.content = rich
    if llm:
        monkeypatch.setenv("BEATFORGE_LLM_BASE_URL", chat_server.url)
    out = tmp_path / "beats/"
    args = ["generate", "sad piano trap", "--model", "debug", "--duration", "1", "--seed", "3", "--bpm", "100"]
    assert main([*args, "--enhance", "--out", f"{out}/"]) == 0
    said = capsys.readouterr().err
    (sidecar,) = out.glob("*.json")
    metadata = json.loads(sidecar.read_text())
    assert sidecar.name == "sad-piano-trap-3.json" and metadata["idea"] == "sad piano trap"
    if llm:
        assert metadata["prompt"] == rich.replace("140 bpm", "100 bpm") and metadata["prompt_source"] == "llm"
        assert f"✨ prompt written by the LLM: {metadata['prompt']}" in said
    else:
        assert (
            metadata["prompt"].startswith("sad piano trap, dark atmospheric trap beat")
            and "100 bpm" in metadata["prompt"]
        )
        assert (metadata["prompt_source"], metadata["prompt_note"]) == ("template", "no LLM is configured")
        assert "✨ prompt written by the presets (no LLM is configured)" in said
    assert len(chat_server.requests) == int(llm)


def test_midi_writes_loose_files_for_a_daw_or_the_discord_zips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rng: np.random.Generator
) -> None:
    render = render_beat(bpm=110, bars=4, sample_rate=22_050, chords=True, rng=rng)
    song = tmp_path / "my song.wav"
    write_wav(song, render.samples, sample_rate=render.sample_rate)
    loose = tmp_path / "loose"
    assert main(["midi", str(song), "--json", "--out", str(loose), "--stems"]) == 0
    result = json.loads(capsys.readouterr().out)
    parts = ["bass.mid", "drums.mid", "full.mid", "melody.mid"]
    stems = ["bass.flac", "drums.flac", "other.flac"]
    assert sorted(p.name for p in loose.iterdir()) == sorted([*parts, *stems, "summary.json"])
    assert sorted(Path(p).name for p in result["files"]) == sorted([*parts, *stems])
    summary = json.loads((loose / "summary.json").read_text())
    assert result["summary"] == str(loose / "summary.json") and abs(summary["bpm"] - 110) < 1.5
    assert summary["source"] == "my song.wav" and "Tempo: 110" in summary["summary"]
    drums = pretty_midi.PrettyMIDI(str(loose / "drums.mid")).instruments[0]
    assert drums.is_drum and len(drums.notes) == summary["drum_hits"] > 20
    assert sf.info(loose / "drums.flac").frames == render.samples.shape[-1]

    zipped = tmp_path / "zipped"
    assert main(["midi", str(song), "--json", "--out", str(zipped), "--zip"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in zipped.iterdir()) == ["my-song-midi.zip"] and result["stems"] is None
    with zipfile.ZipFile(result["midi"]) as zf:
        assert sorted(zf.namelist()) == sorted([*parts, "README.txt"])
        assert zf.read("drums.mid") == (loose / "drums.mid").read_bytes()  # the same files either way


def test_midi_draws_a_transcribing_bar_that_reaches_its_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rng: np.random.Generator
) -> None:
    render = render_beat(bpm=120, bars=2, sample_rate=22_050, rng=rng)
    song = tmp_path / "song.wav"
    write_wav(song, render.samples, sample_rate=render.sample_rate)
    assert main(["midi", str(song), "--progress", "always", "--stems", "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    bars = [line for line in err.splitlines() if line.startswith("transcribing [")]
    assert len(bars) >= 3, err  # it moved: the stem split, the parts, the files
    steps = [tuple(map(int, re.search(r"(\d+)/(\d+) steps", line).groups())) for line in bars]  # type: ignore[union-attr]
    assert [done for done, _ in steps] == sorted(done for done, _ in steps) and steps[0][0] < steps[-1][0]
    assert steps[-1][0] == steps[-1][1] == 6 and "100%" in bars[-1] and "took" in bars[-1]  # 5 steps + the stems
    assert "transcribing [" not in out  # the bar never mixes with the results
