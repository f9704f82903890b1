"""Does a fine-tune get closer to its music? ``beatforge train`` then ``beatforge eval``, zero-shot against
fine-tuned, on music it was not designed for, as the reference LoRA system's table does (issue 16).

The data are real compositions (music21's corpus: Bach chorales, Corelli, Mozart) played by sampled General MIDI
instruments over GM drum grooves (``tests/support/gm_render.py``), rendered twice:

* the TRAINING set through the MuseScore General SoundFont, each clip captioned with its groove, tempo and key;
* the REFERENCE set through TimGM6mb, a SoundFont the fine-tune never heard: the same kind of music on other
  instruments' samples, so a lower distance means the model learnt the music, not one font's recordings.

By default both models are the tests' tiny random MusicGen (``debug``) and its LoRA, scored with that model's
random EnCodec (no weights to download): a check that the two commands run end to end on real music, not a
measure of anything, since a random encoder maps all audio to nearly the same point. With weights:

    OMP_NUM_THREADS=2 .venv/bin/python bench/finetune.py --steps 200 --per-prompt 16         # tiny, CPU
    .venv/bin/python bench/finetune.py --base small --embedding clap --clap laion/larger_clap_music \
        --steps 2000 --per-prompt 150 --duration 8 --lr 1e-4                                 # real weights, GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import soundfile as sf

from cli.main import main as beatforge
from tests.support.gm_render import DEV_SONGS, SongSpec, fluidsynth_available, render_gm_song


def caption(spec: SongSpec) -> str:
    return f"{spec.groove.replace('_', ' ')} beat, {spec.bpm} bpm, {spec.key}, bass and lead"


def render(folder: Path, font: str, *, captions: bool) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for spec in DEV_SONGS:
        song = render_gm_song(spec, font, sample_rate=32_000)
        sf.write(folder / f"{spec.name}.wav", song.samples.T, song.sample_rate)
        if captions:
            (folder / f"{spec.name}.txt").write_text(caption(spec) + "\n")
    return [caption(spec) for spec in DEV_SONGS]


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--per-prompt", type=int, default=24)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--base", default="debug", help="the model to fine-tune and compare against")
    parser.add_argument("--embedding", choices=("encodec", "clap"), default="encodec")
    parser.add_argument("--clap", default="debug", help="the CLAP model for the text-audio score")
    parser.add_argument("--lr", default="1e-3")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not fluidsynth_available():
        sys.exit("fluidsynth and the GM SoundFonts are needed (scripts/test installs them)")
    work = Path(args.out or tempfile.mkdtemp(prefix="beatforge-finetune-"))
    os.environ["BEATFORGE_MODEL_REGISTRY_FILE"] = str(work / "models.json")
    prompts = render(work / "train", "musescore", captions=True)
    render(work / "reference", "timgm6mb", captions=False)
    (work / "prompts.txt").write_text("\n".join(sorted(set(prompts))) + "\n")
    code = beatforge(
        ["train", str(work / "train"), "--base", args.base, "--name", "gm-lora", "--out", str(work / "gm-lora"),
         "--steps", str(args.steps), "--window-s", "4", "--lr", args.lr, "--val-fraction", "0.15", "--seed", "0"]
    )  # fmt: skip
    if code:
        return code
    code = beatforge(
        ["eval", "--model", args.base, "--model", "gm-lora", "--prompts", str(work / "prompts.txt"),
         "--reference", str(work / "reference"), "--per-prompt", str(args.per_prompt),
         "--duration", str(args.duration), "--embedding", args.embedding, "--clap", args.clap,
         "--out", str(work / "eval")]
    )  # fmt: skip
    if code:
        return code
    card = json.loads((work / "gm-lora" / "card.json").read_text())
    print(f"\ntraining: {card['steps']} steps, train loss {card['train_loss']:.3f}, val loss {card['val_loss']}")
    print((work / "eval" / "eval.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run())
