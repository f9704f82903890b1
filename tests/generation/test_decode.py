"""Our MusicGen decoding loop against transformers' ``generate``: the same tokens, greedy and sampled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList, MusicgenForConditionalGeneration, StoppingCriteria, StoppingCriteriaList

from beatforge.config import Settings
from beatforge.contract import BeatParams
from generation.music.decode import DecodeLoop, Mode
from generation.music.engine import generate, items_for
from generation.music.model_cache import ModelCache
from generation.music.musicgen import MusicGenEngine
from generation.music.sampling import SeededSampler
from generation.music.tiny import build_real_arch, save_tiny_musicgen

PROMPTS = ["dark trap, 808s and a detuned bell", "lofi"]  # different lengths: the text is padded


class _Keep(StoppingCriteria):
    """Keeps ``generate``'s ids after every step (what it returns is audio)."""

    ids: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.ids = input_ids.clone()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)  # type: ignore[return-value]


def _initial(model: MusicgenForConditionalGeneration, batch: int, tail: torch.Tensor | None = None) -> torch.Tensor:
    codebooks = int(model.decoder.config.num_codebooks)
    start = torch.full((batch * codebooks, 1), int(model.generation_config.decoder_start_token_id))
    return start if tail is None else torch.cat([start, tail], dim=-1)


def _sampler(model: MusicgenForConditionalGeneration, batch: int, guidance: float, top_k: int) -> SeededSampler:
    codebooks = int(model.decoder.config.num_codebooks)
    seeds = range(1, batch + 1)
    return SeededSampler(seeds, num_codebooks=codebooks, guidance_scale=guidance, temperature=1.0, top_k=top_k, top_p=0)


def _both(
    model: MusicgenForConditionalGeneration,
    processor: Any,
    prompts: list[str],
    steps: int,
    *,
    guidance: float,
    tail: torch.Tensor | None = None,
    sampled: bool = False,
    loop: DecodeLoop | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(generate's ids, our loop's ids): greedy, or both through the seeded sampler."""
    text = processor(text=prompts, padding=True, return_tensors="pt")
    initial = _initial(model, len(prompts), tail)
    keep = _Keep()
    processors = [_sampler(model, len(prompts), guidance, 250)] if sampled else []
    model.generate(
        **text,
        decoder_input_ids=initial,
        do_sample=False,
        guidance_scale=guidance if guidance > 1 else None,
        max_new_tokens=steps,
        logits_processor=LogitsProcessorList(processors),
        stopping_criteria=StoppingCriteriaList([keep]),
    )
    assert keep.ids is not None
    sampler = _sampler(model, len(prompts), guidance, 250 if sampled else 1)  # top-k 1: greedy
    ours = (loop or DecodeLoop(model)).run(dict(text), initial, steps, sampler, guidance=guidance > 1)
    return keep.ids, ours


@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("guidance", [3.0, 1.0])
@pytest.mark.parametrize("channels", [1, 2])
def test_greedy_tokens_are_generates_tokens(tmp_path: Path, guidance: float, channels: int, mode: Mode) -> None:
    directory = save_tiny_musicgen(tmp_path / "tiny", audio_channels=channels)
    engine = MusicGenEngine.load(str(directory))
    loop = DecodeLoop(engine.model, mode)
    reference, ours = _both(engine.model, engine.processor, PROMPTS, 80, guidance=guidance, loop=loop)
    assert reference.shape == ours.shape == (2 * engine.num_codebooks, 81)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_an_empty_prompt_continued_codes_and_sampling_give_generates_tokens(mode: Mode) -> None:
    engine = MusicGenEngine.load("debug")
    loop = DecodeLoop(engine.model, mode)  # one loop for all: static shapes reuse their caches between windows
    reference, ours = _both(engine.model, engine.processor, [""], 40, guidance=3.0, loop=loop)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    tail = torch.randint(0, 64, (2 * engine.num_codebooks, 25), generator=torch.Generator().manual_seed(3))
    reference, ours = _both(engine.model, engine.processor, PROMPTS, 40, guidance=3.0, tail=tail, loop=loop)
    assert ours.shape == (2 * engine.num_codebooks, 66)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    reference, ours = _both(engine.model, engine.processor, PROMPTS, 60, guidance=3.0, sampled=True, loop=loop)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    if mode == "static":  # the two-prompt windows (66 and 61 columns, same text bucket) shared one set of caches
        assert len(loop._statics) == 2
        reference, ours = _both(engine.model, engine.processor, PROMPTS, 60, guidance=1.0, loop=loop)
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)  # the same rows unguided: caches of their own
        assert len(loop._statics) == 3


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_the_real_small_architecture_gives_generates_tokens(mode: Mode) -> None:
    model, processor = build_real_arch("small")
    model = model.eval()
    reference, ours = _both(model, processor, PROMPTS, 24, guidance=3.0, loop=DecodeLoop(model, mode))
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_the_setting_chooses_how_the_cache_loads_musicgen_decode() -> None:
    settings = Settings(musicgen_decoding="static")
    assert ModelCache.from_settings(settings, default="debug").get(None).decoding == "static"  # type: ignore[attr-defined]
    assert ModelCache(device="cpu", default="debug").get(None).decoding == "loop"  # type: ignore[attr-defined]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_give_the_eager_loops_tokens() -> None:
    engine = MusicGenEngine.load("debug", device="cuda")
    text = dict(engine.processor(text=PROMPTS, padding=True, return_tensors="pt").to("cuda"))
    initial = _initial(engine.model, len(PROMPTS)).to("cuda")
    runs = {
        mode: DecodeLoop(engine.model, mode).run(text, initial, 60, _sampler(engine.model, 2, 3.0, 250), guidance=True)
        for mode in ("dynamic", "graphs")
    }
    torch.testing.assert_close(runs["graphs"], runs["dynamic"], rtol=0, atol=0)


def test_the_engine_makes_the_same_audio_with_either_decoder(tmp_path: Path) -> None:
    engine = MusicGenEngine.load(str(save_tiny_musicgen(tmp_path / "tiny")))
    engine.window_s, engine.context_s = 2.0, 0.5  # three windows for 4.5 s: continuation between windows
    params = BeatParams(prompt="lofi piano", duration_s=4.5, seed=11, takes=2)
    ours = generate(engine, params)
    engine.decoding = "generate"
    reference = generate(engine, params)
    engine.decoding = "static"
    static = generate(engine, params)
    for a, b, c in zip(ours, reference, static, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)
        np.testing.assert_array_equal(c.samples, b.samples)
    engine.decoding = "loop"
    prompt = ours[0].samples[:, :16_000]
    item = items_for(params.model_copy(update={"duration_s": 1.0, "takes": 1}), prompt=prompt)
    (continued,) = engine.generate_batch(item, sampling=params.sampling)
    engine.decoding = "generate"
    (expected,) = engine.generate_batch(item, sampling=params.sampling)
    np.testing.assert_array_equal(continued.samples, expected.samples)
