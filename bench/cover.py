"""Cover time per image: beatforge's few-step cover against a typical Stable Diffusion call, and the fallback.

Timed in one run, on the same pipeline and device, over the same prompts and seeds:

* baseline: the diffusers pipeline called the way a fine-tuned Stable Diffusion setup usually calls it
  (diffusers' defaults: 50 steps, guidance 7.5 with a negative prompt). Image only: no safety check and
  no title, both of which beatforge's row pays for;
* beatforge: ``CoverMaker.make`` as configured by default (``cover_steps=4``, ``cover_guidance=0.0``, so
  no negative prompt and one UNet pass per step instead of two), including its safety check and the title
  typography; two more rows show what those two cost on their own;
* the procedural fallback (``cover_mode="procedural"``), title included.

Each row draws one warm-up image, then ``--images`` timed ones (median and worst per image).

``--arch tiny`` (default) is the tiny random pipeline and safety checker (``cover_model="debug"``),
loaded by ``CoverMaker`` itself. ``--arch sd-turbo`` builds the real-size sd-turbo / SD 2.1 architecture
(865M-parameter UNet, OpenCLIP ViT-H text encoder, KL VAE) and a CLIP ViT-L/14 safety checker with random
weights, fp16 on CUDA like ``DiffusionCover.load``: speed does not depend on the weights' values, so a GPU
machine times real sizes without downloading them. Its pictures are noise (maybe NaN in fp16); the timing
is what counts.

On a machine shared with other work, torch's default of one thread per core makes every parallel op wait
for whichever thread the OS preempted: medians grow many times over and the worst image by 10-30x. The last
line of output says how much CPU other processes took meanwhile; ``OMP_NUM_THREADS=1`` keeps numbers stable.

    .venv/bin/python bench/cover.py --images 5 --size 64
    .venv/bin/python bench/cover.py --images 5 --size 256
    OMP_NUM_THREADS=1 .venv/bin/python bench/cover.py --images 5 --size 64     # on a busy shared CPU
    .venv/bin/python bench/cover.py --arch sd-turbo --size 512      # on a CUDA machine
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The tiny tokenizer is byte-level, so every prompt is "truncated to 77 tokens": don't print that per image.
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig

from beatforge.config import Settings
from bench.machine import busy_cpu_seconds, machine
from generation.cover.maker import CoverMaker, DiffusionCover, SafetyCheck
from generation.cover.prompt import build_cover_prompt
from generation.cover.tiny import DEBUG_COVER_MODEL, build_tiny_sd_pipeline, set_tiny_safety_verdict
from generation.cover.typography import draw_title

DESCRIPTION = "dusty lofi hip hop, jazzy piano, vinyl crackle, rain on the window, 80 bpm"
STYLE, MOOD = "lofi", "calm"
TITLE = "Late Night Study Session"
# What StableDiffusionPipeline.__call__ does when a caller leaves them out, as most fine-tuned setups do.
BASELINE_STEPS, BASELINE_GUIDANCE = 50, 7.5
SD_TURBO_ARCH = "sd-turbo-arch (random weights)"


def build_sd_turbo_arch(device: str) -> tuple[DiffusionCover, SafetyCheck]:
    """sd-turbo's real architecture with random weights; the tokenizer and scheduler are the tiny pipeline's.

    The tiny tokenizer is byte-level, so prompts are cut at 77 bytes rather than 77 BPE tokens; the pipeline
    pads every prompt to 77 tokens either way, so the text encoder's work is the same.
    """
    dtype = torch.float16 if device.startswith("cuda") else torch.float32  # as DiffusionCover.load
    tiny = build_tiny_sd_pipeline()
    tokenizer = tiny.tokenizer
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),  # (legacy name) heads per block: 64 channels per head
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(  # OpenCLIP ViT-H/14's text tower, less its last layer (SD 2.x reads the penultimate one)
            vocab_size=len(tokenizer),
            hidden_size=1024,
            intermediate_size=4096,
            projection_dim=1024,
            num_hidden_layers=23,
            num_attention_heads=16,
            hidden_act="gelu",
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    pipeline = StableDiffusionPipeline(
        vae=vae.to(device, dtype).eval(),
        text_encoder=text_encoder.to(device, dtype).eval(),
        tokenizer=tokenizer,
        unet=unet.to(device, dtype).eval(),
        scheduler=tiny.scheduler,  # sd-turbo's: Euler ancestral, trailing timesteps
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)

    # CompVis/stable-diffusion-safety-checker: a CLIP ViT-L/14 vision tower. The text tower is never built.
    text = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
    )
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=768)
    checker = StableDiffusionSafetyChecker(config)
    set_tiny_safety_verdict(checker, flag_everything=False)  # a withheld cover would be timed as the fallback
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    # Both as CoverMaker loads them: the pipeline in fp16 on CUDA, the checker as from_pretrained gives it (fp32).
    return (
        DiffusionCover(pipeline, name=SD_TURBO_ARCH, device=device),
        SafetyCheck(checker.to(device).eval(), processor, device=device),
    )


def make_cover_maker(settings: Settings, device: str, models: tuple[DiffusionCover, SafetyCheck] | None) -> CoverMaker:
    diffusion, safety = models if models is not None else (None, None)
    maker = CoverMaker(settings, device=device, diffusion=diffusion, safety=safety)
    maker.warm_up()
    return maker


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(rows: dict[str, Callable[[int], object]], n_images: int, device: str) -> dict[str, list[float]]:
    """Seconds per image for each row: one warm-up image each (not counted), then seeds 0..n-1.

    Image by image, row after row, so that a busy spell on a shared machine slows every row, not one.
    """
    for draw in rows.values():
        draw(n_images)
    seconds: dict[str, list[float]] = {label: [] for label in rows}
    for seed in range(n_images):
        for label, draw in rows.items():
            sync(device)
            started = time.perf_counter()
            draw(seed)
            sync(device)
            seconds[label].append(time.perf_counter() - started)
    return seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5, help="timed images per row, after one warm-up")
    parser.add_argument("--size", type=int, default=None, help="pixels square (default: 64 tiny, 512 sd-turbo)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", choices=("tiny", "sd-turbo"), default="tiny")
    parser.add_argument("--allow-slow", action="store_true", help="run --arch sd-turbo on a CPU (minutes per image)")
    args = parser.parse_args()
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.arch == "sd-turbo" and not args.device.startswith("cuda") and not args.allow_slow:
        parser.error("--arch sd-turbo on a CPU takes minutes per baseline image; pass --allow-slow to run it anyway")
    return args


def default_settings(arch: str, size: int) -> Settings:
    """Settings' defaults, not this shell's: "as configured by default" is what the beatforge row times."""
    for key in [k for k in os.environ if k.startswith("BEATFORGE_")]:
        del os.environ[key]
    common: dict[str, Any] = {"_env_file": None, "cover_size": size, "llm_base_url": None, "log_level": "WARNING"}
    model = DEBUG_COVER_MODEL if arch == "tiny" else SD_TURBO_ARCH
    return Settings(**common, cover_model=model, cover_safety_model=model)


def build_rows(
    *, settings: Settings, maker: CoverMaker, diffusion: DiffusionCover, safety: SafetyCheck, size: int, device: str
) -> dict[str, Callable[[int], object]]:
    """What each row draws for a seed, labelled as the table prints it."""
    fallback = CoverMaker(settings.model_copy(update={"cover_mode": "procedural"}), device=device)
    spec = build_cover_prompt(description=DESCRIPTION, style=STYLE, mood=MOOD)
    latest: dict[str, Image.Image] = {}  # the last image each kind drew, for the rows that time a part on it

    def baseline(seed: int) -> None:
        result = diffusion.pipeline(
            prompt=spec.prompt,
            negative_prompt=spec.negative,
            height=size,
            width=size,
            num_inference_steps=BASELINE_STEPS,
            guidance_scale=BASELINE_GUIDANCE,
            generator=torch.Generator(device="cpu").manual_seed(seed),
        )
        latest["baseline"] = result.images[0]

    def beatforge(seed: int) -> None:
        cover = maker.make(description=DESCRIPTION, seed=seed, style=STYLE, mood=MOOD, title=TITLE)
        if cover.source != "diffusion":
            raise SystemExit(f"beatforge fell back to a procedural cover, timing the wrong thing: {cover.note}")
        latest["beatforge"] = cover.image

    def procedural(seed: int) -> None:
        cover = fallback.make(description=DESCRIPTION, seed=seed, style=STYLE, mood=MOOD, title=TITLE)
        if cover.source != "procedural":
            raise SystemExit("the procedural row drew something else")

    s = settings
    return {
        f"baseline: diffusers defaults ({BASELINE_STEPS} steps, cfg {BASELINE_GUIDANCE:g} + negative)": baseline,
        f"beatforge CoverMaker ({s.cover_steps} steps, cfg {s.cover_guidance:g}, safety, title)": beatforge,
        "  of which: safety check": lambda _seed: safety.flagged(latest["beatforge"]),
        "  of which: title typography": lambda _seed: draw_title(latest["baseline"], TITLE),
        "procedural fallback (+ title)": procedural,
    }


def print_table(seconds: dict[str, list[float]], header: str) -> None:
    """Median and worst per row; a part's share of the row above it, a whole row's speed-up over the baseline."""
    print(f"{header:62} {'median':>10} {'worst':>10} {'images':>6} {'speed-up':>9}")
    base = statistics.median(seconds[next(iter(seconds))])
    whole = 0.0
    for label, times in seconds.items():
        median = statistics.median(times)
        if label.startswith("  of which"):  # a part of the row above: its share of it
            ratio = f"({median / whole:.1%})"
        else:
            whole, ratio = median, f"{base / median:.1f}x"
        print(f"{label:62} {median * 1000:8.1f}ms {max(times) * 1000:8.1f}ms {len(times):6d} {ratio:>9}")


def main() -> None:
    args = parse_args()
    size = args.size or (64 if args.arch == "tiny" else 512)
    settings = default_settings(args.arch, size)
    models = build_sd_turbo_arch(args.device) if args.arch == "sd-turbo" else None
    maker = make_cover_maker(settings, args.device, models)
    loaded = maker.models()
    if loaded is None or loaded[1] is None:
        raise SystemExit(f"cover models unavailable: {maker.unavailable_reason}")
    diffusion, safety = loaded
    rows = build_rows(settings=settings, maker=maker, diffusion=diffusion, safety=safety, size=size, device=args.device)
    wall, ours, everyone = time.perf_counter(), time.process_time(), busy_cpu_seconds()
    seconds = interleaved(rows, args.images, args.device)
    wall, ours = time.perf_counter() - wall, time.process_time() - ours
    finished = busy_cpu_seconds()

    print(f"machine: {machine(args.device, diffusion.pipeline.unet.dtype)}")
    print_table(seconds, f"cover time per image ({args.arch}, {size} px)")
    if everyone is not None and finished is not None:  # a shared machine's other work slows every row
        others = max(0.0, finished - everyone - ours) / wall
        print(f"other processes used {others:.2f} of {os.cpu_count()} cores on average while this ran ({wall:.0f} s)")


if __name__ == "__main__":
    main()
