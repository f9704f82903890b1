"""Fine-tuning the tiny random MusicGen end to end: the objective matches ``generate``, the loss falls, the result
reloads through the registry and changes what the model makes, a run resumes where it stopped, codes are cached."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import StoppingCriteria, StoppingCriteriaList

from beatforge.contract import SamplingParams
from generation.errors import GenerationCancelled
from generation.music.engine import GenerationItem, MusicEngine
from generation.music.model_cache import ModelCache
from generation.music.musicgen import MusicGenEngine
from generation.music.registry import ModelRegistry
from generation.music.tiny import build_tiny_musicgen
from generation.training import codes as codes_module
from generation.training.config import TrainConfig, TrainingError, TrainResult
from generation.training.loop import train
from generation.training.objective import delayed, inputs_and_labels, loss
from tests.generation.test_training_data import config, write_clips


class _LastIds(StoppingCriteria):
    ids: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        self.ids = input_ids.clone()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)  # type: ignore[return-value]


@pytest.mark.parametrize("channels", [1, 2])
def test_training_layout_is_what_generate_feeds_the_decoder(channels: int) -> None:
    model, processor = build_tiny_musicgen(audio_channels=channels)
    fed: dict[int, torch.Tensor] = {}

    def record(_module: torch.nn.Module, _args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        past = kwargs.get("past_key_values")
        position = past.get_seq_length() if past is not None else 0  # type: ignore[attr-defined]
        fed[position] = kwargs["input_ids"].clone()  # type: ignore[attr-defined]

    hook = model.decoder.register_forward_pre_hook(record, with_kwargs=True)
    last = _LastIds()
    frames, lag = 6, 3
    text = processor(text=["lofi beat", "dark trap"], padding=True, return_tensors="pt")
    model.generate(
        **text,
        do_sample=False,
        guidance_scale=None,
        max_new_tokens=frames + lag,
        stopping_criteria=StoppingCriteriaList([last]),
    )
    hook.remove()
    assert last.ids is not None
    # the codes generate would decode: the engine's own undoing of the delay pattern
    engine = MusicGenEngine(model, processor, name="debug", device="cpu")
    codes = engine._codes(last.ids[:, :1], last.ids)
    assert codes.shape == (2, 4 * channels, frames)
    fed_sequence = torch.cat([fed[p] for p in sorted(fed)], dim=-1)
    inputs, labels = inputs_and_labels(model, codes)
    assert torch.equal(inputs, fed_sequence)
    assert torch.equal(delayed(model, codes)[:, :-1], fed_sequence)
    # labels: the next token where it is a code, -100 where generate's pattern has a pad
    k = 4 * channels
    assert torch.equal(labels[0, :frames, 0], codes[0, 0])
    assert (labels[0, :, 0][frames:] == -100).all()
    assert (labels[0, :1, 2 if channels == 1 else 4] == -100).all()
    assert int((labels != -100).sum()) == codes.numel() and labels.shape == (2, frames + lag, k)


def test_dropped_captions_are_the_unconditional_branch_generate_uses_for_guidance() -> None:
    model, processor = build_tiny_musicgen()
    seen: list[dict[str, torch.Tensor]] = []

    def record(_module: torch.nn.Module, _args: tuple[object, ...], kwargs: dict[str, torch.Tensor]) -> None:
        seen.append({k: kwargs[k].clone() for k in ("encoder_hidden_states", "encoder_attention_mask")})

    hook = model.decoder.register_forward_pre_hook(record, with_kwargs=True)
    text = processor(text=["dark trap beat"], padding=True, return_tensors="pt")
    model.generate(**text, do_sample=False, guidance_scale=3.0, max_new_tokens=2)
    guided = seen[-1]  # rows: the prompt, then generate's unconditional copy
    seen.clear()
    codes = torch.randint(0, 64, (2, 4, 5))
    loss(model, processor, codes, ["dark trap beat", "dark trap beat"], torch.tensor([False, True]))
    hook.remove()
    trained = seen[-1]  # rows: the caption kept, then the caption dropped
    for key in ("encoder_hidden_states", "encoder_attention_mask"):
        torch.testing.assert_close(trained[key], guided[key])
    assert not trained["encoder_hidden_states"][1].any() and trained["encoder_hidden_states"][0].any()


def _loss_falls(result: TrainResult, losses: list[float]) -> None:
    assert result.steps == len(losses) == 30
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 0.1, (first, last)


def _take(engine: MusicEngine) -> np.ndarray:
    (audio,) = engine.generate_batch([GenerationItem("tone number 1", 7, 0.4)], sampling=SamplingParams())
    return audio.samples


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Five captioned clips and one code cache for the module: EnCodec runs once per clip, not once per test."""
    root = tmp_path_factory.mktemp("dataset")
    return write_clips(root / "data", seconds=1.0), root / "codes"


@pytest.fixture(scope="module")
def lora_run(
    tmp_path_factory: pytest.TempPathFactory, dataset: tuple[Path, Path]
) -> Iterator[tuple[TrainResult, list[float], Path]]:
    root = tmp_path_factory.mktemp("lora")
    losses: list[float] = []
    data, codes = dataset
    result = train(
        config(data, root / "models" / "my-trap", cache_dir=codes, batch_size=2),
        registry=ModelRegistry(root / "models.json"),
        on_progress=lambda _s, _t, loss, _v: losses.append(loss),
    )
    yield result, losses, root


def test_lora_trains_saves_a_card_and_registers(lora_run: tuple[TrainResult, list[float], Path]) -> None:
    result, losses, root = lora_run
    _loss_falls(result, losses)
    names = sorted(p.name for p in result.out.iterdir())
    assert names == ["README.md", "adapter_config.json", "adapter_model.safetensors", "card.json", "loss.png"]
    assert not (root / "models" / "my-trap.partial").exists()
    weights = load_file(result.out / "adapter_model.safetensors")
    assert weights and all(k.startswith("base_model.model.model.decoder.layers.") for k in weights)
    assert {k.split(".")[-2] for k in weights} == {"lora_A", "lora_B"}
    card = result.card
    assert card["base"] == "debug" and card["kind"] == "lora" and card["data"]["clips"] == 5
    assert card["data"]["seconds"] == pytest.approx(5.0) and card["data"]["windows"] == 10
    assert card["val_loss"] is not None and card["licence"].startswith("none needed")
    assert "my-trap" in (result.out / "README.md").read_text()
    assert result.registered
    spec = ModelRegistry(root / "models.json").get("my-trap")
    assert (spec.kind, spec.base, spec.source) == ("lora", "debug", str(result.out.resolve()))


def test_the_adapter_reloads_through_the_cache_and_changes_the_music(
    lora_run: tuple[TrainResult, list[float], Path],
) -> None:
    _, _, root = lora_run
    cache = ModelCache(device="cpu", default="debug", registry=ModelRegistry(root / "models.json"))
    base, tuned = _take(cache.get("debug")), _take(cache.get("my-trap"))
    assert base.shape == tuned.shape
    assert not np.allclose(base, tuned, atol=1e-4)
    np.testing.assert_array_equal(_take(cache.get("debug")), base)  # the resident base was not touched


def test_a_second_run_reads_codes_from_the_cache_and_no_audio(
    tmp_path: Path,
    dataset: tuple[Path, Path],
    lora_run: tuple[TrainResult, list[float], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, codes = dataset
    shutil.copytree(data, tmp_path / "data")
    assert lora_run[0].steps  # the first run filled the cache

    def no_decoding(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("audio was decoded although its codes were cached")

    monkeypatch.setattr(codes_module, "read_audio", no_decoding)
    again = config(
        tmp_path / "data",
        tmp_path / "models" / "again",
        steps=2,
        cache_dir=codes,
        batch_size=2,
        grad_checkpointing=True,
    )
    result = train(again, register=False)
    assert result.steps == 2 and not result.registered
    write_clips(tmp_path / "data", count=1, seconds=1.5)  # clip0.wav gets new content: a new key
    with pytest.raises(AssertionError, match="audio was decoded"):
        train(replace(again, out=tmp_path / "models" / "third"), register=False)


def test_resume_continues_from_the_checkpoint_as_if_never_stopped(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    data, codes = dataset
    whole = train(
        config(
            data, tmp_path / "a" / "run", steps=6, checkpoint_every=2, cache_dir=codes, batch_size=2, val_fraction=0.0
        ),
        register=False,
    )

    steps: list[int] = []
    stopped = config(
        data, tmp_path / "b" / "run", steps=6, checkpoint_every=2, cache_dir=codes, batch_size=2, val_fraction=0.0
    )
    with pytest.raises(GenerationCancelled, match="stopped at step 3 of 6"):
        train(stopped, register=False, on_progress=lambda s, *_: steps.append(s), should_stop=lambda: len(steps) >= 3)
    partial = tmp_path / "b" / "run.partial"
    assert [p.name for p in (partial / "checkpoints").iterdir()] == ["step-0000003"]
    assert not (tmp_path / "b" / "run").exists()

    with pytest.raises(TrainingError, match="holds an unfinished run"):
        train(stopped, register=False)
    with pytest.raises(TrainingError, match="trained with rank=8, this run asks 4"):
        train(replace(stopped, resume=True, rank=4), register=False)

    resumed = train(replace(stopped, resume=True), register=False, on_progress=lambda s, *_: steps.append(s))
    assert steps == [1, 2, 3, 4, 5, 6] and resumed.steps == 6
    a = load_file(whole.out / "adapter_model.safetensors")
    b = load_file(resumed.out / "adapter_model.safetensors")
    for key, value in a.items():
        torch.testing.assert_close(b[key], value)
    assert not partial.exists()


def test_full_fine_tune_saves_a_loadable_model_that_sounds_different(
    tmp_path: Path, dataset: tuple[Path, Path]
) -> None:
    losses: list[float] = []
    registry = ModelRegistry(tmp_path / "models.json")
    data, codes = dataset
    out = tmp_path / "models" / "full-trap"
    cfg: TrainConfig = config(data, out, full=True, lr=1e-3, cache_dir=codes, batch_size=2)
    result = train(cfg, registry=registry, on_progress=lambda _s, _t, loss, _v: losses.append(loss))
    _loss_falls(result, losses)
    assert (result.out / "config.json").is_file() and (result.out / "model.safetensors").is_file()
    assert result.card["kind"] == "finetune" and registry.get("full-trap").kind == "finetune"
    cache = ModelCache(device="cpu", default="debug", registry=registry)
    base, tuned = _take(cache.get("debug")), _take(cache.get("full-trap"))
    assert not np.allclose(base, tuned, atol=1e-4)
    # the text encoder and EnCodec were frozen: the same weights as the base's
    reloaded = MusicGenEngine.load(str(result.out)).model
    original, _ = build_tiny_musicgen()
    for part in ("text_encoder", "audio_encoder"):
        for (name, a), b in zip(
            getattr(original, part).state_dict().items(), getattr(reloaded, part).state_dict().values(), strict=True
        ):
            torch.testing.assert_close(a, b, msg=name)
