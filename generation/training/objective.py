"""MusicGen's own training objective, laid out exactly as ``generate`` reads its inputs.

* **Delay pattern.** Codebook k of each channel is predicted k steps late. The layout comes from the decoder's own
  ``build_delay_pattern_mask``, given the window's codes as a prompt after one start token and the generation
  config's pad token, so training sees what ``generate`` feeds: a pad column first, codebook k shifted right by
  k + 1, pads where a codebook has not started or has already ended. Labels are the same sequence one step ahead,
  with every pad position set to -100 (ignored).
* **Loss.** Cross-entropy per codebook averaged over codebooks: the decoder's own loss (transformers follows
  audiocraft's solver there).
* **Text.** The frozen T5 encodes each caption. A dropped caption (``caption_dropout``) gets zero hidden states and
  a zero attention mask, which is exactly the unconditional half ``generate`` builds for classifier-free guidance
  (``torch.zeros_like`` of the states and of the mask): the adapter learns the branch guidance subtracts.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from transformers import MusicgenForCausalLM, MusicgenForConditionalGeneration

IGNORE = -100


def pad_token(model: MusicgenForConditionalGeneration) -> int:
    """The pad ``generate`` lays its delay pattern out with (``generation_config.pad_token_id``)."""
    pad = model.generation_config.pad_token_id
    return int(cast(int, pad if pad is not None else model.decoder.config.pad_token_id))


def delay(model: MusicgenForConditionalGeneration) -> int:
    """Steps the last codebook of a channel lags the first (stereo models delay left and right alike)."""
    config = model.decoder.config
    return int(config.num_codebooks) // int(config.audio_channels) - 1


def delayed(model: MusicgenForConditionalGeneration, codes: torch.Tensor) -> torch.Tensor:
    """Codes (batch, codebooks, frames) as the decoder's full sequence, (batch * codebooks, frames + 1 + delay).

    Position 0 is the start column and the last ``delay`` columns are the codebooks' tails, as at the end of a
    ``generate`` call of ``frames + delay`` new tokens.
    """
    batch, codebooks, frames = codes.shape
    pad = pad_token(model)
    first = int(cast(int, model.generation_config.decoder_start_token_id))  # what generate starts a window with
    start = torch.full((batch * codebooks, 1), first, dtype=torch.long, device=codes.device)
    ids = torch.cat([start, codes.reshape(batch * codebooks, frames).long()], dim=-1)
    decoder = cast(MusicgenForCausalLM, model.decoder)
    _, pattern = decoder.build_delay_pattern_mask(
        cast(torch.LongTensor, ids), pad_token_id=pad, max_length=frames + 1 + delay(model)
    )
    return cast(torch.Tensor, pattern)


def inputs_and_labels(
    model: MusicgenForConditionalGeneration, codes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input ids (batch * codebooks, length) and labels (batch, length, codebooks), pads as -100."""
    sequence = delayed(model, codes)
    batch, codebooks = codes.shape[:2]
    inputs = sequence[:, :-1]
    labels = sequence[:, 1:].reshape(batch, codebooks, -1).transpose(1, 2)
    labels = labels.masked_fill(labels == pad_token(model), IGNORE)
    return inputs, labels


@torch.no_grad()
def condition(
    model: MusicgenForConditionalGeneration, processor: Any, captions: list[str], drop: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen T5's states (batch, tokens, width) and attention mask (batch, tokens) of ``captions``; rows where
    ``drop`` is True get the unconditional zeros that ``generate`` uses for guidance."""
    device = model.device
    text = processor(text=captions, padding=True, return_tensors="pt")
    ids, mask = text["input_ids"].to(device), text["attention_mask"].to(device)
    states = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = (~drop.to(device)).to(states.dtype)
    return states * keep[:, None, None], mask * keep[:, None].to(mask.dtype)


def loss(
    model: MusicgenForConditionalGeneration,
    processor: Any,
    codes: torch.Tensor,
    captions: list[str],
    drop: torch.Tensor,
) -> torch.Tensor:
    """MusicGen's cross-entropy on one batch of windows: codes (batch, codebooks, frames) with their captions."""
    states, mask = condition(model, processor, captions, drop)
    inputs, labels = inputs_and_labels(model, codes.to(model.device))
    out = model(
        attention_mask=mask,
        encoder_outputs=(states,),
        decoder_input_ids=inputs,
        labels=labels,
        use_cache=False,
    )
    return cast(torch.Tensor, out.loss)
