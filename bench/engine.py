"""Generation speed: beatforge's MusicGen engine against the plain transformers call, in audio-seconds per wall-second.

Timed in one run, on the same model object and device, for ``--seconds`` of new audio per take:

* baseline: the plain transformers call at batch 1, as its model card writes it:
  ``model.generate(**processor(text=[prompt], padding=True, return_tensors="pt"), do_sample=True,
  guidance_scale=3.0, max_new_tokens=steps)``, with steps = frames + codebooks per channel - 1 (the delay
  pattern) and frames = ceil(seconds x frame rate). It returns decoded audio, so EnCodec's decode is timed;
* beatforge: ``MusicGenEngine.generate_batch`` with ``SamplingParams()`` (top-k 250, guidance 3) at each of
  ``--batches`` takes per call, one seed per take (``generation.music.sampling.SeededSampler``); a batch of N
  counts N x seconds of audio. Each batch runs with each of ``--decoding``: our own loop
  (``generation.music.decode``) with shapes growing with the window (``loop``, the engine's default on a CPU),
  in static shapes (``static``), or replayed as CUDA graphs (``graphs``, the default on a GPU); and
  transformers' ``generate`` driven by the engine (what the engine did before it, and still does for melody
  models).

Each row runs one warm-up call, then ``--repeats`` timed ones, row after row in turn, so that a busy spell on a
shared machine slows every row; the table shows the median. Steps/s is decoding steps per wall-second of one
call (text encoding and EnCodec decoding included), the unit of the GPU targets: musicgen-small >= 500 steps/s
and musicgen-medium >= 300 steps/s at batch 1 with guidance, and >= 60 audio-s/s for small at batch 16.
``--profile`` then runs one more call per row to show where its time goes (text encoder, decoder forward
passes, logits processors, stopping criteria, EnCodec decodes, the rest).

``--arch tiny`` (default) is ``generation.music.tiny.build_tiny_musicgen()``, the model tests use. ``--arch small``
and ``--arch medium`` build the real facebook/musicgen-small / -medium architecture with random weights
(speed does not depend on the weights' values): a T5-base text encoder, the 24-layer/1024-wide (small) or
48-layer/1536-wide (medium) 4-codebook decoder, and EnCodec 32 kHz, with the configs transformers' conversion
scripts write. The tokenizer is the tiny model's character-level one (the text encoder's vocabulary sized to
it), so a prompt is about one token per character instead of T5's ~4 characters per token: a few dozen more
keys in the decoder's cross-attention, a cost far below the self-attention and feed-forward layers. On CUDA
the model is fp16 with PyTorch's scaled-dot-product attention, as ``MusicGenEngine.load`` loads it.

    OMP_NUM_THREADS=1 .venv/bin/python bench/engine.py --arch tiny --threads 1 --profile
    OMP_NUM_THREADS=1 .venv/bin/python bench/engine.py --arch small --seconds 2 --batches 1 4 --repeats 1 --profile
    .venv/bin/python bench/engine.py --arch small --device cuda --profile       # on a CUDA machine
    .venv/bin/python bench/engine.py --arch medium --device cuda --profile      # on a CUDA machine
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the tiny model's pad id is outside its vocabulary

import torch
from transformers import (
    LogitsProcessorList,
    MusicgenForConditionalGeneration,
    StoppingCriteriaList,
)

from beatforge.contract import SamplingParams
from bench.machine import busy_cpu_seconds, machine
from generation.music.engine import GenerationItem
from generation.music.musicgen import MusicGenEngine
from generation.music.sampling import SeededSampler
from generation.music.tiny import ARCHS, build_real_arch, build_tiny_musicgen

PROMPT = "lofi hip hop beat, dusty drums, warm bass, mellow piano, 90 bpm"


def build(arch: str, device: str) -> MusicGenEngine:
    if arch == "tiny":
        model, processor = build_tiny_musicgen()
        model = model.to(device)
    else:
        model, processor = build_real_arch(arch, device)
    if device.startswith("cuda"):
        model = model.half()
    return MusicGenEngine(model.eval(), processor, name=f"{arch} (random weights)", device=device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Row:
    label: str
    batch: int
    steps: int  # decoding steps of one call
    call: Callable[[int], Any]  # repeat number -> one generate call


def plain_row(engine: MusicGenEngine, seconds: float, batch: int) -> Row:
    model, processor = engine.model, engine.processor
    steps = math.ceil(seconds * engine.frame_rate - 1e-9) + engine.delay

    @torch.inference_mode()
    def call(repeat: int) -> Any:
        torch.manual_seed(repeat)
        inputs = processor(text=[PROMPT] * batch, padding=True, return_tensors="pt").to(engine.device)
        return model.generate(**inputs, do_sample=True, guidance_scale=3.0, max_new_tokens=steps)

    return Row(f"baseline: plain model.generate, batch {batch}", batch, steps, call)


Decoding = Literal["loop", "static", "graphs", "generate"]
LABELS: dict[Decoding, str] = {
    "loop": "our loop",
    "static": "our loop, static shapes",
    "graphs": "our loop, CUDA graphs",
    "generate": "generate",
}


def engine_row(engine: MusicGenEngine, seconds: float, batch: int, decoding: Decoding) -> Row:
    sampling = SamplingParams()

    def call(repeat: int) -> Any:
        engine.decoding = decoding
        items = [GenerationItem(PROMPT, 1000 * repeat + i, seconds) for i in range(batch)]
        return engine.generate_batch(items, sampling=sampling)

    label = f"beatforge engine, {LABELS[decoding]}, batch {batch}"
    return Row(label, batch, engine.decoding_steps(seconds), call)


def interleaved(rows: list[Row], repeats: int, device: str) -> list[list[float]]:
    """Seconds per call for each row: one warm-up call each (not counted), then ``repeats`` in turn."""
    for row in rows:
        row.call(repeats)  # a seed no timed call uses
    seconds: list[list[float]] = [[] for _ in rows]
    for repeat in range(repeats):
        for row, times in zip(rows, seconds, strict=True):
            sync(device)
            started = time.perf_counter()
            row.call(repeat)
            sync(device)
            times.append(time.perf_counter() - started)
    return seconds


@contextmanager
def instrumented(model: MusicgenForConditionalGeneration, device: str) -> Iterator[dict[str, list[float]]]:
    """Time (and count) what one generate call spends in each part; restores everything on exit."""
    spent: dict[str, list[float]] = {}
    undo: list[Callable[[], None]] = []

    def wrap(owner: Any, attr: str, key: str, *, on_class: bool = False) -> None:
        original = owner.__dict__[attr] if on_class else getattr(owner, attr)

        @functools.wraps(original)  # generate validates its kwargs against forward's signature
        def timed(*args: Any, **kwargs: Any) -> Any:
            sync(device)
            started = time.perf_counter()
            result = original(*args, **kwargs)
            sync(device)
            entry = spent.setdefault(key, [0.0, 0])
            entry[0] += time.perf_counter() - started
            entry[1] += 1
            return result

        setattr(owner, attr, timed)
        if on_class:
            undo.append(lambda: setattr(owner, attr, original))
        else:
            undo.append(lambda: owner.__dict__.pop(attr))

    wrap(model.text_encoder, "forward", "text encoder")
    wrap(model, "forward", "decoder forward passes")
    wrap(model.audio_encoder, "decode", "EnCodec decodes")
    wrap(LogitsProcessorList, "__call__", "logits processors", on_class=True)
    wrap(SeededSampler, "__call__", "  of which SeededSampler", on_class=True)
    wrap(StoppingCriteriaList, "__call__", "stopping criteria", on_class=True)
    try:
        yield spent
    finally:
        for restore in reversed(undo):
            restore()


def profile(rows: list[Row], engine: MusicGenEngine, device: str) -> None:
    print("\nwhere one call's time goes (one more call per row, instrumented; the timers add a little)")
    for row in rows:
        with instrumented(engine.model, device) as spent:
            sync(device)
            started = time.perf_counter()
            row.call(0)
            sync(device)
            total = time.perf_counter() - started
        print(f"{row.label}: {total * 1000:.0f} ms, {row.steps} steps, {total / row.steps * 1000:.2f} ms/step")
        parts = 0.0
        order = ["text encoder", "decoder forward passes", "logits processors", "  of which SeededSampler"]
        for part in sorted(spent, key=lambda k: order.index(k) if k in order else len(order)):
            secs, calls = spent[part]
            parts += 0.0 if part.startswith("  ") else secs
            per = f"{secs / calls * 1000:8.3f} ms/call"
            print(f"  {part:28} {secs * 1000:9.1f} ms {secs / total:6.1%}  {calls:5d} calls {per}")
        print(f"  {'rest of generate / engine':28} {(total - parts) * 1000:9.1f} ms {(total - parts) / total:6.1%}")


def bound(engine: MusicGenEngine, device: str) -> str:
    """The weight-read bound: a step reads every decoder weight once, so no step is faster than the decoder's bytes
    over the device's memory bandwidth (measured here as a large copy: bytes read plus bytes written per second)."""
    decoder = sum(p.numel() * p.element_size() for p in engine.model.decoder.parameters())
    block = torch.empty(64 * 2**20, dtype=torch.float32, device=device)  # 256 MiB, past any cache
    target = torch.empty_like(block)
    target.copy_(block)
    sync(device)
    started = time.perf_counter()
    for _ in range(5):
        target.copy_(block)
    sync(device)
    bandwidth = 5 * 2 * block.numel() * block.element_size() / (time.perf_counter() - started)
    return (
        f"decoder weights {decoder / 1e9:.3f} GB; memory bandwidth (a copy) {bandwidth / 1e9:.1f} GB/s; "
        f"weight-read bound {bandwidth / decoder:.0f} steps/s ({decoder / bandwidth * 1000:.2f} ms/step)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("tiny", *ARCHS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per take (10; 5 for real archs on a CPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="takes per engine call")
    parser.add_argument("--plain-batches", type=int, nargs="+", default=[1], help="prompts per plain call")
    parser.add_argument("--decoding", nargs="+", choices=tuple(LABELS), default=["loop", "generate"])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row, after one warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also break one call per row down")
    args = parser.parse_args()
    if args.repeats < 1 or min(args.batches + args.plain_batches) < 1:
        parser.error("--repeats and every batch must be at least 1")
    seconds = args.seconds or (5.0 if args.arch != "tiny" and not args.device.startswith("cuda") else 10.0)
    if not 0 < seconds <= 30:
        parser.error("--seconds must be in (0, 30]: one MusicGen window, so both sides make one generate call")
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    engine = build(args.arch, args.device)
    built_s = time.perf_counter() - started
    rows = [plain_row(engine, seconds, b) for b in args.plain_batches]
    rows += [engine_row(engine, seconds, b, decoding) for b in args.batches for decoding in args.decoding]

    wall, ours, everyone = time.perf_counter(), time.process_time(), busy_cpu_seconds()
    times = interleaved(rows, args.repeats, args.device)
    wall, ours = time.perf_counter() - wall, time.process_time() - ours
    finished = busy_cpu_seconds()

    params = sum(p.numel() for p in engine.model.parameters()) / 1e6
    print(f"machine: {machine(args.device, engine.model.dtype)}")
    print(
        f"model: {args.arch} ({params:.0f} M parameters, built in {built_s:.0f} s), {seconds:g} s per take "
        f"= {rows[0].steps} steps at {engine.frame_rate:g} Hz, guidance 3, median of {args.repeats}"
    )
    print(bound(engine, args.device))
    header = f"{'audio-s per wall-s':52}"
    print(f"{header} {'batch':>5} {'median s':>9} {'audio-s/s':>10} {'steps/s':>8} {'vs baseline':>12}")
    base = None
    for row, secs in zip(rows, times, strict=True):
        median = statistics.median(secs)
        rate = row.batch * seconds / median
        if base is None:
            base = rate
        print(
            f"{row.label:52} {row.batch:5d} {median:9.3f} {rate:10.2f} {row.steps / median:8.1f} {rate / base:11.2f}x"
        )
    if everyone is not None and finished is not None:  # a shared machine's other work slows every row
        others = max(0.0, finished - everyone - ours) / wall
        print(f"other processes used {others:.2f} of {os.cpu_count()} cores on average while this ran ({wall:.0f} s)")
    if args.profile:
        profile(rows, engine, args.device)


if __name__ == "__main__":
    main()
