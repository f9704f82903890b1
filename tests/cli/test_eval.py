"""``beatforge eval`` end to end on tiny random models: the built-in MusicGen and ACE-Step debug models, a tiny
CLAP saved to a folder, and a reference set of a few short WAVs written here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from beatforge.config import get_settings
from cli.main import main
from generation.audio.io import write_wav
from generation.evaluation.clap_tiny import save_tiny_clap


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no stray .env, and ./data lands in tmp
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clap(tmp_path_factory.mktemp("clap"))


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A prompts file (with a comment and a blank line) and a reference folder of 4 one-second tones."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# what to make\ndark trap, 808s\n\nlofi piano | rain\n", encoding="utf-8")
    reference = tmp_path / "ref"
    (reference / "more").mkdir(parents=True)
    t = np.arange(32_000) / 32_000
    rng = np.random.default_rng(0)
    for i in range(4):
        tone = 0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t) + 0.05 * rng.standard_normal(t.size)
        folder = reference if i < 3 else reference / "more"
        write_wav(folder / f"r{i}.wav", tone[None].astype(np.float32), sample_rate=32_000)
    (reference / "notes.txt").write_text("not audio, ignored")
    return prompts, reference


def test_eval_scores_two_models_and_writes_the_report(
    tmp_path: Path, inputs: tuple[Path, Path], clap_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts, reference = inputs
    out = tmp_path / "eval"
    args = ["eval", "--model", "debug", "--model", "debug-acestep", "--prompts", str(prompts)]
    args += ["--reference", str(reference), "--per-prompt", "3", "--duration", "1", "--clap", str(clap_dir)]
    assert main([*args, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out

    data = json.loads((out / "eval.json").read_text())
    assert [m["model"] for m in data["models"]] == ["debug", "debug-acestep"]
    assert all(m["clips"] == 6 and m["rtf"] > 0 for m in data["models"])
    assert data["reference"]["files"] == 4 and data["embedding"]["dim"] == 16
    rows = {(r["model"], r["prompt"]): r for r in data["results"]}
    assert set(rows) == {
        (model, prompt)
        for model in ("debug", "debug-acestep")
        for prompt in ("dark trap, 808s", "lofi piano | rain", "(all prompts)")
    }
    for row in rows.values():
        assert np.isfinite(row["fad"]) and -1.0 <= row["clap_score"] <= 1.0
    assert rows[("debug", "(all prompts)")]["clips"] == 6
    assert rows[("debug", "(all prompts)")]["fad_inf"] is not None  # 6 clips: subsets of 2 to 6
    assert rows[("debug", "dark trap, 808s")]["fad_inf"] is None  # 3 clips: too few sizes to fit a line
    assert any("full-rank covariance" in w for w in data["warnings"])  # 16 dimensions from a handful of clips

    markdown = (out / "eval.md").read_text()
    assert "| debug | dark trap, 808s | 3 |" in markdown
    assert "| debug-acestep | lofi piano \\| rain | 3 |" in markdown
    assert "real-time factor" in markdown and "## Warnings" in markdown
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "clips" / "2-debug-acestep").glob("*.wav"))) == 6


def test_eval_with_encodec_embeddings_and_no_clap(
    tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prompts, reference = inputs
    out, cache = tmp_path / "eval", tmp_path / "shared-cache"
    args = ["eval", "--model", "debug", "--prompts", str(prompts), "--reference", str(reference), "--per-prompt", "2"]
    args += ["--duration", "1", "--embedding", "encodec", "--cache", str(cache), "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["markdown"] == str(out / "eval.md")
    data = json.loads((out / "eval.json").read_text())
    assert data["embedding"]["name"] == "encodec:debug" and data["clap"] is None
    assert data["reference"]["embeddings"] == 4 * 50  # per-frame: 50 rows a second
    assert all(r["clap_score"] is None for r in data["results"])
    assert "n/a (no CLAP model" in (out / "eval.md").read_text()
    assert len(list(cache.rglob("*.npy"))) == 4 + 4  # the reference set and the clips, by content


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_eval_refuses_bad_input_in_one_line(
    tmp_path: Path, inputs: tuple[Path, Path], clap_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts, reference = inputs
    out = tmp_path / "eval"

    def run(*, model: str = "debug", prompts_file: Path = prompts, ref: Path = reference) -> int:
        args = ["eval", "--model", model, "--prompts", str(prompts_file), "--reference", str(ref), "--per-prompt"]
        args += ["2", "--duration", "1", "--clap", str(clap_dir), "--out", str(out), "--json"]
        return main(args)

    assert run(prompts_file=tmp_path / "missing.txt") == 2
    assert _error(capsys) == f"beatforge: prompts file {tmp_path / 'missing.txt'} does not exist"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(ref=empty) == 2
    assert "has no audio files" in _error(capsys)
    (reference / "broken.wav").write_bytes(b"RIFF not really a wav")
    assert run() == 2
    assert "broken.wav is not a readable audio file" in _error(capsys)
    (reference / "broken.wav").unlink()
    assert run(model="no-such-model") == 2
    assert "no-such-model" in _error(capsys)
    assert not out.exists()  # nothing was generated
