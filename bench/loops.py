"""Loop quality: beatforge's make_loop against the reference system's naive cut, on the same synthetic renders.

Each render is a drum + bass (+ chords on every other one) beat from ``tests/support/synth.py`` at a known tempo, with
5 ms of random timing jitter per hit and the first downbeat at 0 s (as MusicGen's output starts), 12 bars long.
For every render, in one run:

* baseline: the reference system's approach (audio-loop-gen's BeatDetect strategy): librosa's plain
  ``beat_track`` tempo, taken at face value, gives the loop length (``--bars`` bars of 4 beats), and the loop is
  the first that many seconds of the audio, hard-cut (``generation.loops.cut.naive_loop``). audio-loop-gen itself
  cuts from the first tracked beat to the *start* of the last beat, one beat shorter still; this baseline is the
  kinder version of it;
* beatforge: ``generation.loops.cut.make_loop(bars=--bars)``.

Both are rated by ``generation.loops.seam.seam_score`` (1.0: the seam changes the sound as much as the music does at
the same kind of moment; higher is worse) and by their tempo error (%) and loop-length error (ms) against the
render's ground truth (``--bars`` bars at the true tempo).

    .venv/bin/python bench/loops.py
    .venv/bin/python bench/loops.py --bars 8 --seeds 1 2 3

``--set`` adds tempo and downbeat tables on material not designed for the purpose (issue 15), one row per excerpt
and the mean: tempo error (% from the nearest octave of the truth; * where that octave is not the truth itself) of
librosa's plain ``beat_track``, of make_loop without a hint and with the true tempo rounded as the hint; whether
make_loop writes a tempo note for that right hint (it should not) and for a wrong one (x0.8: it should); how far the
loop is from whole bars at the true tempo (goal: within 10 ms); the loop's start against the nearest true downbeat
(goal: within 30 ms), its downbeat confidence, its seam score (median <= 1.2) and CPU seconds per audio second
(time.process_time; run with OMP_NUM_THREADS=1); and an independent baseline, essentia's RhythmExtractor2013 tempo
error and KeyExtractor key (against the score's key on GM renders, else whether it agrees with the loop's).
Sets: ``grooves`` (tests/support/grooves.py: kicks equal on 1 and
3, chords at the bar line; two 133-against-100 bpm cross-rhythms), ``gm-tune``/``gm-aside`` (tests/support/
gm_render.py's DEV_SONGS through MuseScore General, tuned on / TimGM6mb, kept aside; each with its first 1-3 beats
cut off), ``real-tune``/``real-aside`` (drascula game music, bench/loop_annotations.json says how the truth was
found).

    OMP_NUM_THREADS=1 .venv/bin/python bench/loops.py --set grooves gm-tune real-tune gm-aside real-aside
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import librosa
import numpy as np

from generation.loops.cut import make_loop, naive_loop
from generation.loops.seam import seam_score
from tests.support.grooves import cross_rhythm, even_kick_groove
from tests.support.synth import render_beat

TEMPOS = (75, 90, 110, 120, 128, 140, 160, 174)
SAMPLE_RATE = 32_000  # MusicGen's


def librosa_tempo(mono: np.ndarray, sample_rate: int) -> float:
    """What the reference system does: librosa's beat tracker at its defaults (22.05 kHz, hop 512)."""
    y = librosa.resample(mono, orig_sr=sample_rate, target_sr=22_050)
    tempo, _ = librosa.beat.beat_track(y=y / np.abs(y).max(), sr=22_050)
    return float(np.atleast_1d(tempo)[0])


def synth_table(args: argparse.Namespace) -> None:
    """The seam comparison: naive cut against make_loop on synth.py renders."""
    print(f"{args.bars}-bar loops from 12-bar renders at {SAMPLE_RATE} Hz, {args.jitter_ms:g} ms jitter")
    header = f"{'render':24} {'seam: naive':>12} {'beatforge':>10} {'bpm err %: naive':>17} {'beatforge':>10}"
    print(f"{header} {'len err ms: naive':>18} {'beatforge':>10} {'time ms':>8}")
    rows: list[tuple[float, float, float, float, float, float, float]] = []
    for seed in args.seeds:
        for i, bpm in enumerate(TEMPOS):
            chords = (i + seed) % 2 == 0
            rng = np.random.default_rng(seed * 1000 + bpm)
            render = render_beat(
                bpm=bpm, bars=12, jitter_ms=args.jitter_ms, chords=chords, stereo=True, rng=rng, sample_rate=SAMPLE_RATE
            )
            true_s = args.bars * render.bar_seconds

            guess = librosa_tempo(render.mono, SAMPLE_RATE)
            naive = naive_loop(render.samples, sr=SAMPLE_RATE, seconds=args.bars * 4 * 60 / guess)
            naive_seam = seam_score(naive, sr=SAMPLE_RATE)

            started = time.perf_counter()
            loop = make_loop(render.samples, sr=SAMPLE_RATE, bars=args.bars)
            elapsed = time.perf_counter() - started

            row = (
                naive_seam,
                loop.seam_score,
                100 * abs(guess / bpm - 1),
                100 * abs(loop.bpm_detected / bpm - 1),
                1000 * abs(naive.shape[-1] / SAMPLE_RATE - true_s),
                1000 * abs(loop.samples.shape[-1] / SAMPLE_RATE - true_s),
                1000 * elapsed,
            )
            rows.append(row)
            name = f"{bpm} bpm {'+chords' if chords else 'drums+bass'} s{seed}"
            print(
                f"{name:24} {row[0]:12.2f} {row[1]:10.2f} {row[2]:17.2f} {row[3]:10.3f} "
                f"{row[4]:18.1f} {row[5]:10.2f} {row[6]:8.0f}"
            )
    med = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(
        f"{'median (' + str(len(rows)) + ' renders)':24} {med[0]:12.2f} {med[1]:10.2f} {med[2]:17.2f} {med[3]:10.3f} "
        f"{med[4]:18.1f} {med[5]:10.2f} {med[6]:8.0f}"
    )
    worst = [max(column) for column in zip(*rows, strict=True)]
    print(
        f"{'worst':24} {worst[0]:12.2f} {worst[1]:10.2f} {worst[2]:17.2f} {worst[3]:10.3f} "
        f"{worst[4]:18.1f} {worst[5]:10.2f} {worst[6]:8.0f}"
    )


# ----------------------------------------------------------------------------------------------------------------
# Tempo and downbeats on material not designed for the purpose (issue 15): recorded game music and GM renders.

DRASCULA = Path("/usr/share/scummvm/drascula/audio")
ANNOTATIONS = ROOT / "bench" / "loop_annotations.json"


@dataclass(frozen=True)
class Excerpt:
    """Audio with its true tempo and, where known, its true downbeats (seconds from the excerpt's start)."""

    name: str
    samples: np.ndarray  # (channels, n) float32
    sample_rate: int
    bpm: float
    downbeats: np.ndarray | None
    key: str | None = None  # the score's, where known


def real_excerpts(which: str) -> list[Excerpt]:
    """The drascula tracks of ``bench/loop_annotations.json`` in the ``which`` ("tune" or "aside") set."""
    import soundfile as sf

    notes = json.loads(ANNOTATIONS.read_text())
    out = []
    for name, row in notes["tracks"].items():
        if row["set"] != which:
            continue
        data, sr = sf.read(str(DRASCULA / f"{name}.ogg"), dtype="float32", always_2d=True)
        a, b = round(row["start_s"] * sr), round((row["start_s"] + row["duration_s"]) * sr)
        bar = 4 * 60.0 / row["bpm"]
        first = row.get("first_downbeat_s")
        downbeats = None if first is None else first + bar * np.arange(-1, int(row["duration_s"] / bar) + 2)
        out.append(Excerpt(name, np.ascontiguousarray(data[a:b].T), sr, row["bpm"], downbeats))
    return out


def gm_excerpts(font: str) -> list[Excerpt]:
    """tests/support/gm_render.py's DEV_SONGS through ``font``, each with its first 1-3 beats (song i: i % 3 + 1) cut
    off, so that the audio does not start on a downbeat."""
    from tests.support.gm_render import DEV_SONGS, render_gm_song

    out = []
    for i, spec in enumerate(DEV_SONGS):
        song = render_gm_song(spec, font)
        skip = (i % 3 + 1) * 60.0 / song.bpm
        cut = round(skip * song.sample_rate)
        downbeats = np.array(song.downbeats_s) - skip
        out.append(Excerpt(spec.name, song.samples[:, cut:], song.sample_rate, song.bpm, downbeats, spec.key))
    return out


def groove_excerpts() -> list[Excerpt]:
    """tests/support/grooves.py: kicks equal on 1 and 3, chords changing at the bar line, 12 bars after a lead-in;
    and two cross-rhythms (133 bpm drums under a 100 bpm stab), where the hint must decide the tempo."""
    out = []
    for i, bpm in enumerate(TEMPOS):
        rng = np.random.default_rng(100 + bpm)
        lead = (0.0, 0.3, 1.1, 2.2)[i % 4]
        r = even_kick_groove(bpm=bpm, bars=12, lead_in_s=lead, rng=rng, sample_rate=SAMPLE_RATE)
        out.append(Excerpt(f"even-kick {bpm} lead {lead:g}", r.samples, SAMPLE_RATE, float(bpm), r.downbeats))
    for level in (2.0, 3.0):  # librosa's estimate follows the 100 bpm stab at level 3, the drums at level 2
        r = cross_rhythm(bpm=133, other_bpm=100, level=level)
        out.append(Excerpt(f"133 drums/100 stab x{level:g}", r.samples, r.sample_rate, 133.0, r.downbeats))
    return out


def essentia_estimates(mono: np.ndarray, sample_rate: int) -> tuple[float, str]:
    """The independent baseline: essentia's RhythmExtractor2013 (multifeature) tempo and KeyExtractor key, at the
    44.1 kHz they are built for."""
    import essentia.standard as es

    y = librosa.resample(mono, orig_sr=sample_rate, target_sr=44_100).astype(np.float32)
    bpm = float(es.RhythmExtractor2013(method="multifeature")(y)[0])
    tonic, scale, _ = es.KeyExtractor()(y)
    return bpm, f"{tonic} {scale}"


_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _same_key(a: str, b: str) -> bool:
    """Whether two key labels ("F# minor", "Gb minor") name the same key."""

    def parse(label: str) -> tuple[int, str]:
        note, mode = label.split()
        shift = note[1:].count("#") - note[1:].count("b")
        return (_PITCH[note[0].upper()] + shift) % 12, mode.lower()

    return parse(a) == parse(b)


def _octave_error(found: float, true: float) -> tuple[float, bool]:
    """Tempo error in % against the nearest octave of the truth, and whether that octave is not the truth itself."""
    errs = {k: abs(found / (true * k) - 1) for k in (0.5, 1.0, 2.0)}
    k = min(errs, key=errs.__getitem__)
    return 100 * errs[k], k != 1.0


def excerpt_table(excerpts: list[Excerpt], bars: int) -> None:
    """One row per excerpt: tempo error (librosa's beat_track, ours unhinted, ours hinted at the rounded true tempo),
    tempo notes for a right hint and for a wrong one (x0.8), loop length vs whole true bars, downbeat error,
    downbeat confidence, seam score and CPU seconds per audio second (one thread)."""
    head = (
        f"{'excerpt':28} {'bpm':>6} {'librosa%':>9} {'ours%':>7} {'hinted%':>8} {'note@true':>9} {'note@x0.8':>9} "
        f"{'bars ms':>8} {'db ms':>7} {'db conf':>7} {'seam':>5} {'cpu s/s':>7} {'essentia%':>9} {'key ours/ess':>12}"
    )
    print(head)
    rows = []
    key_marks: list[str] = []
    for ex in excerpts:
        mono = ex.samples.mean(axis=0)
        guess = librosa_tempo(mono, ex.sample_rate)
        seconds = ex.samples.shape[-1] / ex.sample_rate
        count = bars
        while count > 1 and count * 4 * 60 / ex.bpm > seconds - 1.0:
            count //= 2
        started = time.process_time()
        loop = make_loop(ex.samples, sr=ex.sample_rate, bars=count)
        cpu = (time.process_time() - started) / seconds
        hinted = make_loop(ex.samples, sr=ex.sample_rate, bars=count, target_bpm=float(round(ex.bpm)))
        wrong = make_loop(ex.samples, sr=ex.sample_rate, bars=count, target_bpm=round(0.8 * ex.bpm, 1))
        bar_s = 4 * 60.0 / ex.bpm
        length = loop.samples.shape[-1] / ex.sample_rate
        bars_ms = 1000 * abs(length - max(1, round(length / bar_s)) * bar_s)
        db_ms = math.nan
        if ex.downbeats is not None:
            db_ms = 1000 * float(np.min(np.abs(ex.downbeats - loop.start_sample / ex.sample_rate)))
        ess_bpm, ess_key = essentia_estimates(mono, ex.sample_rate)
        ess_err, ess_oct = _octave_error(ess_bpm, ex.bpm)
        if ex.key is not None:  # each against the score's key
            keys = f"{'ok' if _same_key(loop.key.label, ex.key) else 'x'}/{'ok' if _same_key(ess_key, ex.key) else 'x'}"
        else:  # no truth: do the two agree?
            keys = "agree" if _same_key(loop.key.label, ess_key) else f"{loop.key.label}|{ess_key}"
        lib_err, _ = _octave_error(guess, ex.bpm)
        ours_err, ours_oct = _octave_error(loop.bpm_detected, ex.bpm)
        hint_err, hint_oct = _octave_error(hinted.bpm_detected, ex.bpm)
        conf = float(getattr(loop, "downbeat_confidence", math.nan))
        note_true = getattr(hinted, "tempo_note", None) is not None
        note_wrong = getattr(wrong, "tempo_note", None) is not None
        row = (lib_err, ours_err, hint_err, note_true, note_wrong, bars_ms, db_ms, conf, loop.seam_score, cpu, ess_err)
        rows.append(row)
        key_marks.append(keys)
        print(
            f"{ex.name[:28]:28} {ex.bpm:6.1f} {lib_err:9.2f} {ours_err:6.2f}{'*' if ours_oct else ' '} "
            f"{hint_err:7.2f}{'*' if hint_oct else ' '} {'yes' if note_true else 'no':>9} "
            f"{'yes' if note_wrong else 'no':>9} {bars_ms:8.1f} {db_ms:7.0f} {conf:7.2f} {loop.seam_score:5.2f} "
            f"{cpu:7.3f} {ess_err:8.2f}{'*' if ess_oct else ' '} {keys:>12}"
        )
    cols = list(zip(*rows, strict=True))
    mean = [statistics.fmean(c) for c in cols]
    dbs = [d for d in cols[6] if not math.isnan(d)]
    print(
        f"{'mean (' + str(len(rows)) + ')':28} {'':6} {mean[0]:9.2f} {mean[1]:7.2f} {mean[2]:8.2f} "
        f"{sum(cols[3]):6d}/{len(rows):<2} {sum(cols[4]):6d}/{len(rows):<2} {mean[5]:8.1f} "
        f"{statistics.fmean(dbs) if dbs else math.nan:7.0f} {mean[7]:7.2f} {statistics.median(cols[8]):5.2f} "
        f"{mean[9]:7.3f} {mean[10]:9.2f}"
    )
    within = sum(b <= 10 for b in cols[5])
    good = sum(d <= 30 for d in dbs)
    print(
        f"whole bars within 10 ms: {within}/{len(rows)}; downbeat within 30 ms: {good}/{len(dbs)}; "
        f"seam median {statistics.median(cols[8]):.2f}; CPU s per audio s: mean {mean[9]:.3f}, max {max(cols[9]):.3f}"
    )
    if all("/" in k for k in key_marks):
        ours_ok = sum(k.startswith("ok/") for k in key_marks)
        ess_ok = sum(k.endswith("/ok") for k in key_marks)
        print(f"key as the score's: ours {ours_ok}/{len(rows)}, essentia {ess_ok}/{len(rows)}")
    else:
        print(f"key: ours and essentia agree on {sum(k == 'agree' for k in key_marks)}/{len(rows)}")
    if dbs:
        right = [c for c, d in zip(cols[7], cols[6], strict=True) if not math.isnan(d) and d <= 30]
        wrong_c = [c for c, d in zip(cols[7], cols[6], strict=True) if not math.isnan(d) and d > 30]
        print(
            "downbeat confidence when right: "
            + " ".join(f"{c:.2f}" for c in sorted(right))
            + " | when wrong: "
            + (" ".join(f"{c:.2f}" for c in sorted(wrong_c)) or "-")
        )


SETS = ("synth", "grooves", "gm-tune", "gm-aside", "real-tune", "real-aside")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=4, help="loop length in bars of 4 beats")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="one render per tempo per seed")
    parser.add_argument("--jitter-ms", type=float, default=5.0, help="timing jitter per hit (standard deviation)")
    parser.add_argument(
        "--set",
        nargs="+",
        choices=SETS,
        default=["synth"],
        help="synth: the seam table on synth.py renders; grooves: kicks equal on 1 and 3 (tests/support/grooves.py); "
        "gm-tune / gm-aside: GM renders through MuseScore General (tuned on) / TimGM6mb (kept aside); "
        "real-tune / real-aside: recorded drascula game music (bench/loop_annotations.json)",
    )
    args = parser.parse_args()
    if not 1 <= args.bars <= 8:
        parser.error("--bars must be 1..8 (the renders are 12 bars long)")

    print(f"python {platform.python_version()}, librosa {librosa.__version__}, numpy {np.__version__}")
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; CPU time from time.process_time()")
    for name in args.set:
        print(f"\n## {name}")
        if name == "synth":
            synth_table(args)
        elif name == "grooves":
            excerpt_table(groove_excerpts(), args.bars)
        elif name.startswith("gm-"):
            excerpt_table(gm_excerpts("musescore" if name == "gm-tune" else "timgm6mb"), args.bars)
        else:
            excerpt_table(real_excerpts(name.removeprefix("real-")), args.bars)


if __name__ == "__main__":
    main()
