"""``beatforge train``: fine-tune MusicGen on a folder of captioned clips (LoRA by default, ``--full`` for the whole
decoder), and ``beatforge model register DIR`` for an output directory trained earlier or elsewhere."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from beatforge.config import Settings
from cli.console import Output, clock, output_of, result

if TYPE_CHECKING:
    from generation.training.config import TrainConfig


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], _settings: Settings) -> None:
    p = commands.add_parser(
        "train",
        help="fine-tune MusicGen on your own clips (LoRA adapter, or --full)",
        description="Captions: a .txt beside each audio file, or metadata.jsonl / metadata.csv (file, caption).",
    )
    p.add_argument("data_dir", type=Path, help="folder of audio files (wav, flac, mp3, ogg) with captions")
    p.add_argument("--base", required=True, help="model to start from: a registry name, a directory or a HF id")
    p.add_argument("--name", required=True, help="registry name of the result (lowercase letters, digits, . _ -)")
    p.add_argument("--out", type=Path, help="output directory (default: <artifact_dir>/../models/NAME)")
    p.add_argument("--full", action="store_true", help="train the whole decoder instead of a LoRA adapter")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps (default: one epoch)")
    length.add_argument("--epochs", type=int, help="passes over the training windows")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--warmup", type=int, default=10, help="linear warm-up steps before the cosine decay (default 10)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=int, default=16, help="LoRA alpha (default 16)")
    p.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (default 0.05)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per micro-batch (default 4)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="bf16", help="on CUDA; CPUs use fp32")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute activations: less memory, slower")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of clips held out (default 0.1)")
    p.add_argument("--val-every", type=int, default=50, help="steps between validation passes (default 50)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in <out>.partial")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, batches and caption dropout (default 0)")
    p.add_argument("--window-s", type=float, default=10.0, help="seconds per training window (default 10)")
    p.add_argument("--caption-dropout", type=float, default=0.1, help="share trained unconditioned (default 0.1)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: the device setting)")
    p.add_argument(
        "--register", action=argparse.BooleanOptionalAction, default=True, help="add the result to the model registry"
    )
    p.set_defaults(run=run_train)


def add_register_command(model_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``beatforge model register DIR`` (a sub-command of ``model``, which cli/models.py owns)."""
    reg = model_commands.add_parser("register", help="register a `beatforge train` output directory (its card.json)")
    reg.add_argument("directory", type=Path, help="the output directory (adapter or model, with card.json)")
    reg.add_argument("--name", help="registry name (default: the name in card.json)")
    reg.add_argument("--replace", action="store_true", help="replace an entry of the same name")
    reg.set_defaults(run=run_register)


class TrainBar:
    """``on_progress`` for a terminal: ``training 120/400 · loss 3.412 · val 3.501 · 2.4 steps/s · 1:57 left``,
    redrawn in place on a terminal, a plain line per tenth elsewhere (a log stays short)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started, self.first_step, self.last_tenth = time.monotonic(), -1, -1
        self.val: float | None = None
        self.last_draw = 0.0

    def line(self, step: int, total: int, loss: float, elapsed: float) -> str:
        done = step - self.first_step
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"training {step}/{total}", f"loss {loss:.3f}"]
        if self.val is not None:
            parts.append(f"val {self.val:.3f}")
        parts.append(f"{rate:.2f} steps/s")
        if step < total and rate > 0:
            parts.append(f"{clock((total - step) / rate)} left")
        return " · ".join(parts)

    def __call__(self, step: int, total: int, loss: float, val: float | None) -> None:
        now = time.monotonic()
        if self.first_step < 0:
            self.first_step, self.started = step - 1, now - 1e-9
        self.val = val if val is not None else self.val
        text = self.line(step, total, loss, now - self.started)
        if self.tty:
            if step < total and now - self.last_draw < 0.1:
                return
            self.stream.write("\r\x1b[2K" + text + ("\n" if step >= total else ""))
        else:
            tenth = int(10 * step / total) if total else 10
            if tenth <= self.last_tenth and val is None:
                return
            self.last_tenth = tenth
            self.stream.write(text + "\n")
        self.last_draw = now
        self.stream.flush()


def _bar(output: Output) -> TrainBar | None:
    if output.progress == "never" or (output.progress == "auto" and (output.json or not sys.stderr.isatty())):
        return None
    return TrainBar()


def _config(args: argparse.Namespace, settings: Settings) -> TrainConfig:
    from generation.training.config import TrainConfig

    return TrainConfig(
        data_dir=args.data_dir,
        base=args.base,
        name=args.name,
        out=args.out or settings.artifact_dir.parent / "models" / args.name,
        full=args.full,
        steps=args.steps,
        epochs=args.epochs,
        lr=args.lr,
        warmup=args.warmup,
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        precision=args.precision,
        grad_checkpointing=args.grad_checkpointing,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        seed=args.seed,
        window_s=args.window_s,
        caption_dropout=args.caption_dropout,
    )


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    # Heavy imports stay here, so `beatforge --help` and `beatforge bot` never load torch.
    from generation.device import resolve_device
    from generation.errors import GenerationCancelled, GenerationError
    from generation.music.registry import ModelRegistry
    from generation.training.config import TrainingError
    from generation.training.loop import train

    config = _config(args, settings)
    stop = threading.Event()
    output = output_of(args)

    def interrupted(_signum: int, _frame: FrameType | None) -> None:
        stop.set()  # the loop checkpoints at the next step and stops; a second Ctrl-C kills as usual
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = (
        signal.signal(signal.SIGINT, interrupted) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        done = train(
            config,
            registry=ModelRegistry(settings.model_registry_file),
            device=resolve_device(args.device or settings.device),
            register=args.register,
            on_progress=_bar(output),
            should_stop=stop.is_set,
        )
    except TrainingError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2
    except GenerationCancelled as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 130
    except GenerationError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if args.register and not done.registered:
        sys.stderr.write(
            f"beatforge: not registered ({done.register_error}); later: beatforge model register {done.out}\n"
        )
    val = f", val {done.val_loss:.3f}" if done.val_loss is not None else ""
    line = f"wrote {done.out} ({done.kind}, {done.steps} steps, loss {done.train_loss:.3f}{val})"
    result(output, line, {"out": str(done.out), "registered": done.registered, **done.card})
    return 0


def run_register(args: argparse.Namespace, settings: Settings) -> int:
    from generation.music.registry import ModelRegistry, RegistryError
    from generation.training.card import register_output

    try:
        spec = register_output(
            args.directory, ModelRegistry(settings.model_registry_file), name=args.name, replace_existing=args.replace
        )
    except RegistryError as exc:
        sys.stderr.write(f"beatforge: {exc}\n")
        return 2
    result(output_of(args), f"registered {spec.name} ({spec.kind}, {spec.source})", spec.to_data())
    return 0
