"""MusicGen's decoding loop, ours: the same tokens as transformers' ``generate``, a fraction of its overhead.

``generate`` spends most of a small model's step in Python: building masks, growing a dynamic cache, running
logits processors and stopping criteria. This loop does per step only what the model needs:

* the text is encoded, and every layer's cross-attention keys and values computed, once per window;
* the self-attention keys and values go into a cache allocated once, for the whole window;
* each layer's q, k and v are one matrix (the model's projections become views of it: no second copy), the
  codebooks' embeddings one table and their heads one matrix (copies of a few MB), so a step reads each in one
  operation;
* classifier-free guidance is the batch doubled (unconditional rows: zero text states, as transformers does);
* the delay pattern is transformers' own (``build_delay_pattern_mask``), applied to every step's input;
* tokens are drawn by the engine's seeded sampler, so a take's seed gives the same tokens as before.

On a GPU the step's launch overhead, not its arithmetic, decides the speed of musicgen-small and -medium, so
the loop has a second way to step (``mode="static"``): every tensor keeps one shape for the whole window (the
caches at a bucketed length, the text padded to a bucket, the position a tensor, attention over the whole cache
with a mask), which is what a CUDA graph needs (``mode="graphs"``: :mod:`generation.music.cuda_graphs` captures
the step once per shape and replays it). The caches are reused by every window of the same shape.

Only the text-conditioned MusicGen is decoded here; the melody models keep ``generate``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal, cast

import torch
from torch.nn import functional as F
from transformers import MusicgenForCausalLM, MusicgenForConditionalGeneration

from generation.music.cuda_graphs import GraphedStep
from generation.music.sampling import SeededSampler

#: Called after every step with the ids so far (rows: take-major codebooks), e.g. progress and stop checks.
StepHook = Callable[[torch.Tensor], None]

#: How the loop steps: shapes growing with the window (CPU), static shapes, or static shapes replayed as a CUDA graph.
Mode = Literal["dynamic", "static", "graphs"]

#: Static shapes are rounded up to these multiples, so that windows of nearby lengths and prompts of nearby
#: lengths share one set of caches (and one captured graph).
LENGTH_BUCKET, TEXT_BUCKET = 256, 32

#: Sets of static caches kept per loop (each holds a window's keys and values for its batch; a CUDA graph each).
STATIC_KEPT = 6


def _bucket(n: int, size: int) -> int:
    return -(-n // size) * size


class _Static:
    """One shape's buffers: the caches, and the step's inputs (its tokens, its position) and mask.

    A CUDA graph replays the kernels it captured on the same memory, so the step reads and writes only these.
    """

    def __init__(self, layers: list[_Layer], rows: int, batch: int, length: int, text: int, like: torch.Tensor) -> None:
        dtype, device = like.dtype, like.device
        self.cache = [torch.zeros((2, batch, a.heads, length, a.head_dim), dtype=dtype, device=device) for a in layers]
        self.cross = [torch.zeros((2, batch, a.heads, text, a.head_dim), dtype=dtype, device=device) for a in layers]
        self.text_mask = torch.zeros((batch, 1, 1, text), dtype=torch.bool, device=device)
        self.tokens = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.position = torch.zeros((1,), dtype=torch.long, device=device)
        self.steps = torch.arange(length, device=device)
        self.graph: GraphedStep | None = None

    def load_text(self, cross: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        """This window's cross-attention keys and values, padded to the bucket (padding is masked out)."""
        length = mask.shape[-1]
        for buffer, (k, v) in zip(self.cross, cross, strict=True):
            buffer.zero_()
            buffer[0, :, :, :length] = k
            buffer[1, :, :, :length] = v
        self.text_mask.zero_()
        self.text_mask[..., :length] = mask


class _Norm:
    """A LayerNorm as a function call: a module call costs more than the norm itself at small sizes."""

    def __init__(self, norm: torch.nn.LayerNorm) -> None:
        self.shape, self.weight, self.bias, self.eps = norm.normalized_shape, norm.weight, norm.bias, norm.eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


class _Layer:
    """One decoder layer's weights, laid out for the loop."""

    def __init__(self, layer: Any) -> None:
        attn, cross = layer.self_attn, layer.encoder_attn
        self.heads, self.head_dim = attn.num_heads, attn.head_dim
        # q, k and v as one matrix; the model's own projections become views of it, so there is no second copy
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        self.qkv = torch.cat([p.weight.detach() for p in projections])
        for p, weight in zip(projections, self.qkv.chunk(3), strict=True):
            p.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.out = attn.out_proj.weight
        self.cross_q, self.cross_k, self.cross_v = cross.q_proj.weight, cross.k_proj.weight, cross.v_proj.weight
        self.cross_out = cross.out_proj.weight
        self.norms = [
            _Norm(n) for n in (layer.self_attn_layer_norm, layer.encoder_attn_layer_norm, layer.final_layer_norm)
        ]
        self.fc1, self.fc2 = layer.fc1.weight, layer.fc2.weight
        # transformers' activation modules wrap a function (``act``): called directly, without a module call
        self.activation = getattr(layer.activation_fn, "act", layer.activation_fn)


class DecodeLoop:
    """Decodes windows of MusicGen codes for one model; build it once per model (it holds views of the weights)."""

    def __init__(self, model: MusicgenForConditionalGeneration, mode: Mode = "dynamic") -> None:
        self.model, self.mode = model, mode
        lm = cast(MusicgenForCausalLM, model.decoder)
        decoder = lm.model.decoder
        self.lm = lm
        self.num_codebooks = int(lm.config.num_codebooks)
        self.vocab = int(lm.config.vocab_size)
        self.layers = [_Layer(layer) for layer in decoder.layers]
        # codebook k's token v is row k * (vocab + 1) + v of one table (each codebook has a pad token too)
        self.embed = torch.cat([e.weight for e in decoder.embed_tokens])
        self.offsets = torch.arange(self.num_codebooks, device=self.embed.device) * (self.vocab + 1)
        self.positions = decoder.embed_positions.weights
        self.final_norm = _Norm(decoder.layer_norm)
        self.heads = torch.cat([cast(torch.nn.Linear, h).weight for h in lm.lm_heads])  # (codebooks x vocab, hidden)
        self.project = (
            model.enc_to_dec_proj
            if model.text_encoder.config.hidden_size != lm.config.hidden_size
            and lm.config.cross_attention_hidden_size is None
            else None
        )
        self._statics: OrderedDict[tuple[int, int, int, int], _Static] = OrderedDict()

    @torch.inference_mode()
    def run(
        self,
        text: dict[str, torch.Tensor],
        initial: torch.Tensor,
        steps: int,
        sampler: SeededSampler,
        *,
        guidance: bool,
        on_step: StepHook | None = None,
    ) -> torch.Tensor:
        """The ids (rows: take-major codebooks) after ``steps`` new tokens, as ``generate`` returns them.

        ``initial`` is the window's start: the decoder start token, then any codes it continues from.
        """
        pad = int(self.model.generation_config.pad_token_id)
        prefix, pattern = self.lm.build_delay_pattern_mask(
            cast(torch.LongTensor, initial), pad_token_id=pad, max_length=initial.shape[-1] + steps
        )
        rows, start = prefix.shape
        ids = torch.full((rows, start + steps), -1, dtype=torch.long, device=initial.device)
        ids[:, :start] = prefix
        states, mask = self._text(text, guidance)
        # a row with no text at all (the unconditional ones) attends evenly to its zero states: nothing, as in
        # transformers, where its mask is all "masked" and the softmax spreads evenly over them
        mask = (mask | ~mask.any(dim=-1, keepdim=True))[:, None, None, :]
        cross = [self._cross_cache(layer, states) for layer in self.layers]
        static = None if self.mode == "dynamic" else self._static(rows, states, start + steps, cross, mask)
        cache = static.cache if static is not None else self._self_cache(states, start + steps)
        logits = self._forward(self._masked(ids, pattern, 0, start), 0, cache, cross, mask)
        for t in range(start, start + steps):
            ids[:, t] = sampler.draw(logits)
            if on_step is not None:
                on_step(ids[:, : t + 1])
            if t + 1 == start + steps:
                break
            if static is None:
                logits = self._forward(self._masked(ids, pattern, t, t + 1), t, cache, cross, mask)
            else:
                static.tokens.copy_(self._masked(ids, pattern, t, t + 1))
                static.position.fill_(t)
                logits = self._static_step(static)
        return ids

    def _static(
        self,
        rows: int,
        states: torch.Tensor,
        length: int,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor,
    ) -> _Static:
        """The buffers of this shape (made at its first window), holding this window's text."""
        batch = states.shape[0]  # twice the takes with guidance: the rows alone do not say
        key = (rows, batch, _bucket(length, LENGTH_BUCKET), _bucket(states.shape[1], TEXT_BUCKET))
        static = self._statics.pop(key, None)
        if static is None:
            static = _Static(self.layers, rows, batch, key[2], key[3], states)
            while len(self._statics) >= STATIC_KEPT:
                self._statics.popitem(last=False)
        self._statics[key] = static  # the most recently used last
        static.load_text(cross, mask)
        return static

    def _static_step(self, static: _Static) -> torch.Tensor:
        if self.mode != "graphs":
            return self._step(static)
        if static.graph is None:
            static.graph = GraphedStep(lambda: self._step(static))
        return static.graph()

    def _step(self, s: _Static) -> torch.Tensor:
        """One step in static shapes: ``s.tokens`` at ``s.position``, every layer attending over its whole cache
        (the positions after this one masked out), the text through the padded cross-attention buffers."""
        batch = s.cache[0].shape[1]
        codes = s.tokens.reshape(-1, self.num_codebooks, 1)
        codes = codes.repeat(batch // codes.shape[0], 1, 1)
        hidden = F.embedding(codes + self.offsets[:, None], self.embed).sum(dim=1)
        hidden = hidden + self.positions.index_select(0, s.position)
        seen = (s.steps <= s.position)[None]  # (1, length): the cache up to this position
        for layer, kv, cross in zip(self.layers, s.cache, s.cross, strict=True):
            x = layer.norms[0](hidden)
            qkv = F.linear(x, layer.qkv).view(batch, 1, 3, layer.heads, layer.head_dim).permute(2, 0, 3, 1, 4)
            kv.index_copy_(3, s.position, qkv[1:])  # this position's keys and values, in place
            attended = F.scaled_dot_product_attention(qkv[0], kv[0], kv[1], attn_mask=seen)
            hidden = self._rest(layer, hidden, attended, cross[0], cross[1], s.text_mask)
        return self._logits(hidden)

    @staticmethod
    def _masked(ids: torch.Tensor, pattern: torch.Tensor, begin: int, end: int) -> torch.Tensor:
        """Columns ``begin:end`` as the model reads them: the delay pattern's pad tokens where it has them."""
        window = pattern[:, begin:end]
        return torch.where(window == -1, ids[:, begin:end], window)

    def _text(self, text: dict[str, torch.Tensor], guidance: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The text states the decoder attends to, and which of them are real tokens (not padding)."""
        states = self.model.text_encoder(**text).last_hidden_state
        if self.project is not None:
            states = self.project(states)
        mask = text["attention_mask"].bool()
        states = states * mask[..., None]
        if guidance:  # the unconditional rows: zero states, nothing to attend to, as transformers does
            states = torch.cat([states, torch.zeros_like(states)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        return states, mask

    def _cross_cache(self, layer: _Layer, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, _ = states.shape
        shape = (batch, length, layer.heads, layer.head_dim)
        k = F.linear(states, layer.cross_k).view(shape).transpose(1, 2)
        v = F.linear(states, layer.cross_v).view(shape).transpose(1, 2)
        return k, v

    def _self_cache(self, states: torch.Tensor, length: int) -> list[torch.Tensor]:
        """Every layer's keys and values for the whole window, (2, batch, heads, length, head_dim) each."""
        shape = [(2, states.shape[0], layer.heads, length, layer.head_dim) for layer in self.layers]
        return [torch.zeros(s, dtype=states.dtype, device=states.device) for s in shape]

    def _forward(
        self,
        tokens: torch.Tensor,
        position: int,
        cache: list[torch.Tensor],
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Logits of the last of ``tokens`` (rows: take-major codebooks, columns from ``position``), (rows, vocab)
        for every batch row of the doubled (guided) batch: cond rows first, then the unconditional ones."""
        batch = cross[0][0].shape[0]
        length = tokens.shape[-1]
        codes = tokens.reshape(-1, self.num_codebooks, length)
        codes = codes.repeat(batch // codes.shape[0], 1, 1)  # the unconditional rows read the same codes
        hidden = F.embedding(codes + self.offsets[:, None], self.embed).sum(dim=1)
        hidden = hidden + self.positions[position : position + length]
        end = position + length
        for layer, kv, (cross_k, cross_v) in zip(self.layers, cache, cross, strict=True):
            x = layer.norms[0](hidden)
            q, k, v = (
                F.linear(x, layer.qkv).view(batch, length, 3, layer.heads, layer.head_dim).transpose(1, 3).unbind(2)
            )
            kv[0, :, :, position:end] = k
            kv[1, :, :, position:end] = v
            attended = F.scaled_dot_product_attention(q, kv[0, :, :, :end], kv[1, :, :, :end], is_causal=length > 1)
            hidden = self._rest(layer, hidden, attended, cross_k, cross_v, text_mask)
        return self._logits(hidden)

    @staticmethod
    def _rest(
        layer: _Layer,
        hidden: torch.Tensor,
        attended: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """A layer after its self-attention: the residual, the cross-attention to the text, the feed-forward."""
        batch, length = hidden.shape[:2]
        hidden = hidden + F.linear(attended.transpose(1, 2).reshape(batch, length, -1), layer.out)
        x = layer.norms[1](hidden)
        q = F.linear(x, layer.cross_q).view(batch, length, layer.heads, layer.head_dim).transpose(1, 2)
        attended = F.scaled_dot_product_attention(q, cross_k, cross_v, attn_mask=text_mask)
        hidden = hidden + F.linear(attended.transpose(1, 2).reshape(batch, length, -1), layer.cross_out)
        x = layer.norms[2](hidden)
        return hidden + F.linear(layer.activation(F.linear(x, layer.fc1)), layer.fc2)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Every codebook's logits for the last position, (rows, vocab): cond rows first, then unconditional."""
        last = self.final_norm(hidden[:, -1])
        return F.linear(last, self.heads).view(hidden.shape[0] * self.num_codebooks, self.vocab)
