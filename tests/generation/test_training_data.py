"""Training's cheap parts: finding clips and captions, the split, the schedule, the card, and the bad-data report."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from generation.music.registry import ModelRegistry, RegistryError
from generation.training.card import register_output
from generation.training.codes import ClipCodes
from generation.training.config import TrainConfig, TrainingError
from generation.training.data import Clip, find_clips, fingerprint
from generation.training.loop import train
from generation.training.prepare import split
from generation.training.schedule import lr_factor

RATE = 32_000


def write_clips(folder: Path, count: int = 5, *, seconds: float = 2.0, rate: int = RATE) -> Path:
    """Tones a few semitones apart (a little noise on top), each with a caption beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(440)
    t = np.arange(round(seconds * rate)) / rate
    for i in range(count):
        tone = 0.3 * np.sin(2 * np.pi * 110 * 2 ** (i / 4) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(folder / f"clip{i}.wav", tone.astype(np.float32), rate)
        (folder / f"clip{i}.txt").write_text(f"tone number {i}\n")
    return folder


def config(data: Path, out: Path, **changes: object) -> TrainConfig:
    """A few seconds of training on the tiny model: half-second windows, a high learning rate."""
    base: dict[str, object] = {
        "data_dir": data,
        "base": "debug",
        "name": out.name,
        "out": out,
        "steps": 30,
        "lr": 3e-3,
        "warmup": 3,
        "batch_size": 4,
        "window_s": 0.5,
        "val_fraction": 0.2,
        "val_every": 10,
        "checkpoint_every": 10,
        "cache_dir": out.parent / "codes",
    }
    return TrainConfig(**(base | changes))  # type: ignore[arg-type]


def test_captions_come_from_txt_jsonl_and_csv(tmp_path: Path) -> None:
    for name in ("a.wav", "b.flac", "sub/c.ogg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / name, np.zeros(100, dtype=np.float32), RATE)
    (tmp_path / "a.txt").write_text("from txt")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file": "b.flac", "caption": "from jsonl"}) + "\n")
    (tmp_path / "metadata.csv").write_text("file,caption\nsub/c.ogg,from csv\nmissing.wav,x\n")
    clips, problems = find_clips(tmp_path)
    assert [(c.path.name, c.caption) for c in clips] == [
        ("a.wav", "from txt"),
        ("b.flac", "from jsonl"),
        ("c.ogg", "from csv"),
    ]
    assert problems == ["metadata names missing.wav, which is not an audio file in the folder"]
    assert len({c.sha256 for c in clips}) == 3  # three formats: three different contents
    assert fingerprint(clips) != fingerprint(clips[:2])


def test_split_holds_out_whole_clips_and_never_all() -> None:
    clips = [
        ClipCodes(Clip(Path(f"{i}.wav"), "x", str(i)), np.zeros((2, 4, 3), dtype=np.int64), 1.0) for i in range(10)
    ]
    train_part, val_part = split(clips, fraction=0.2, seed=1)
    assert (len(train_part), len(val_part)) == (8, 2)
    assert split(clips, fraction=0.2, seed=1) == (train_part, val_part)
    assert split(clips[:1], fraction=0.5, seed=1) == (clips[:1], [])
    assert len(split(clips[:2], fraction=0.9, seed=1)[0]) == 1


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    factors = [lr_factor(s, warmup=4, total=20) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert lr_factor(20, warmup=4, total=20) == pytest.approx(0.0)


def test_bad_data_is_reported_all_at_once_before_training(tmp_path: Path) -> None:
    data = write_clips(tmp_path / "data", count=2)
    (data / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (data / "broken.txt").write_text("broken")
    sf.write(data / "quiet.wav", np.zeros(RATE, dtype=np.float32), RATE)
    (data / "quiet.txt").write_text("silence")
    sf.write(data / "short.wav", 0.3 * np.ones(RATE // 10, dtype=np.float32), RATE)
    (data / "short.txt").write_text("too short")
    sf.write(data / "nocaption.wav", 0.3 * np.ones(RATE, dtype=np.float32), RATE)
    cfg = config(data, tmp_path / "out" / "bad", batch_size=16, lr=-1.0, val_fraction=0.0)
    with pytest.raises(TrainingError) as caught:
        train(cfg)
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 6, problems
    for expected in (
        "--lr must be positive",
        "nocaption.wav: no caption",
        "broken.wav: broken.wav is not a readable audio file",
        "quiet.wav: silent",
        "short.wav: 0.10 s long, shorter than one 0.5 s window",
        "too little data: 8 training windows of 0.5 s, fewer than --batch-size 16",
    ):
        assert expected in problems
    assert not (tmp_path / "out").joinpath("bad").exists()
    assert not (tmp_path / "out").joinpath("bad.partial").exists()


def test_unknown_and_unsuitable_bases_are_problems(tmp_path: Path) -> None:
    data = write_clips(tmp_path / "data", count=1)
    for base, words in (("nope", "unknown model 'nope'"), ("debug-acestep", "only MusicGen"), ("melody", "melody")):
        with pytest.raises(TrainingError, match=words):
            train(config(data, tmp_path / "out" / "x", base=base))


def test_register_refuses_a_directory_without_a_card(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"no readable card\.json"):
        register_output(tmp_path, ModelRegistry(tmp_path / "models.json"))
