"""The embedding back ends on tiny random models through the real transformers paths, and the embedding cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from generation.audio.io import write_wav
from generation.errors import ModelUnavailable
from generation.evaluation.clap import ClapScorer, clap_scores
from generation.evaluation.clap_tiny import TINY_CLAP_DIM, save_tiny_clap
from generation.evaluation.embeddings import EmbeddingCache, EncodecEmbedder
from generation.music.acestep import AceStepEngine
from generation.music.musicgen import MusicGenEngine


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> ClapScorer:
    """Saved and loaded back, so ``from_pretrained`` of model, tokenizer and feature extractor all run."""
    return ClapScorer.load(str(save_tiny_clap(tmp_path_factory.mktemp("clap"))))


def _noise(seconds: float, *, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((channels, round(seconds * rate)))).astype(np.float32)


def test_clap_embeds_audio_and_text_as_unit_vectors(scorer: ClapScorer) -> None:
    clips = [_noise(1.0, rate=32_000), _noise(2.5, rate=32_000, channels=2, seed=1)]
    audio = scorer.audio_embeddings(clips, 32_000)
    text = scorer.text_embeddings(["dark trap, 808s", "lofi piano at 80 bpm"])
    assert audio.shape == text.shape == (2, TINY_CLAP_DIM)
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
    assert scorer.sample_rate == 48_000 and scorer.name.startswith("clap:")


def test_clap_scores_are_cosines_and_repeat(scorer: ClapScorer) -> None:
    clips = [_noise(1.0, rate=48_000, seed=s) for s in range(3)] + [_noise(12.0, rate=48_000, seed=9)]  # > 10 s: crop
    scores = clap_scores(scorer, ["dark trap"], clips, 48_000)
    assert len(scores) == 4 and all(-1.0 <= s <= 1.0 for s in scores)
    np.random.seed(1)
    assert clap_scores(scorer, ["dark trap"], clips, 48_000) == scores  # a long clip's crop is its middle 10 s
    assert np.random.randint(1 << 30) == np.random.RandomState(1).randint(1 << 30)  # numpy's generator untouched
    middle = clips[3][:, 48_000:528_000]
    assert clap_scores(scorer, ["dark trap"], [middle], 48_000)[0] == pytest.approx(scores[3], abs=1e-6)
    per_clip = scorer.scores(["dark trap", "lofi", "house", "ambient"], clips, 48_000)
    assert per_clip[0] == pytest.approx(scores[0], abs=1e-6)
    with pytest.raises(ValueError, match="one per clip"):
        scorer.scores(["a", "b"], clips, 48_000)


def test_clap_that_cannot_be_loaded_is_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        ClapScorer.load(str(tmp_path))  # a folder without a model
    assert ClapScorer.load("debug").dim == TINY_CLAP_DIM  # built in code, like the music models' `debug`


def test_cache_hits_by_content_on_the_second_call(scorer: ClapScorer, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"clip{i}.wav")
        write_wav(paths[-1], _noise(1.0, rate=32_000, seed=i), sample_rate=32_000)
    cache = EmbeddingCache(tmp_path / "cache")
    first = cache.embed_files(scorer, paths, batch=2)
    assert (cache.hits, cache.misses) == (0, 3)
    assert [e.shape for e in first] == [(1, TINY_CLAP_DIM)] * 3
    renamed = tmp_path / "elsewhere" / "same-audio.wav"
    renamed.parent.mkdir()
    shutil.copy(paths[1], renamed)
    second = cache.embed_files(scorer, [*paths, renamed])
    assert (cache.hits, cache.misses) == (4, 3)
    for a, b in zip([*first, first[1]], second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(list(cache.folder(scorer).glob("*.npy"))) == 3


def test_encodec_embeds_one_row_per_frame(tmp_path: Path) -> None:
    engine = MusicGenEngine.load("debug")
    embedder = EncodecEmbedder.of(engine)
    assert embedder.name == "encodec:debug" and embedder.sample_rate == 32_000
    rows = embedder.embed([_noise(1.0, rate=32_000), _noise(0.5, rate=32_000, channels=2)])
    assert [r.shape[0] for r in rows] == [50, 25]  # EnCodec's 50 frames a second
    assert rows[0].shape[1] == rows[1].shape[1] > 1 and rows[0].dtype == np.float32
    path = tmp_path / "x.wav"
    write_wav(path, _noise(1.0, rate=48_000), sample_rate=48_000)  # resampled to the codec's rate on the way in
    (cached,) = EmbeddingCache(tmp_path / "cache").embed_files(embedder, [path])
    assert cached.shape == rows[0].shape


def test_only_musicgen_has_an_encodec() -> None:
    with pytest.raises(ModelUnavailable, match="has no EnCodec"):
        EncodecEmbedder.of(AceStepEngine.load("debug-acestep"))
