"""Cover art without a model: a procedural cover painted from the mood's palette.

A diffusion model is not always there: no weights on disk, a CPU-only worker configured to skip it, or a load
that failed. The beat still deserves a cover, so :func:`procedural_cover` paints one: a gradient ground, one
seeded motif (sunset sun, vinyl record, layered waves, equaliser bars or concentric arcs), a few accents, film
grain and a vignette. It is deterministic: the same seed and description give the same pixels. The title is set
on top afterwards by :mod:`generation.cover.typography`, as on a diffusion-made cover.

Pure Pillow + numpy: no torch, no files.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

__all__ = ["MAX_SIZE", "MIN_SIZE", "hex_to_rgb", "procedural_cover"]

MIN_SIZE = 64
MAX_SIZE = 2048
_MAX_COLOURS = 6
_SUPERSAMPLE = 2  # shapes are drawn at 2x and downsampled, for anti-aliased edges

RGB = tuple[int, int, int]
FloatArray = npt.NDArray[np.float32]

_HEX_RE = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def hex_to_rgb(value: str) -> RGB:
    """``"#ffcf33"`` → ``(255, 207, 51)``. Accepts ``#rrggbb`` or ``#rgb``, the ``#`` optional, any case."""
    match = _HEX_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a hex colour: {value!r} (expected '#rrggbb' or '#rgb')")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(ch * 2 for ch in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


# --------------------------------------------------------------------------------------------------
# colour helpers


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def _scale(c: RGB, factor: float) -> RGB:
    return (min(255, round(c[0] * factor)), min(255, round(c[1] * factor)), min(255, round(c[2] * factor)))


def _luma(c: RGB) -> float:
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]


def _saturation(c: RGB) -> float:
    hi, lo = max(c), min(c)
    return 0.0 if hi == 0 else (hi - lo) / hi


def _rgba(c: RGB, alpha: int) -> tuple[int, int, int, int]:
    return c[0], c[1], c[2], max(0, min(255, alpha))


class _Colours:
    """The palette's colours assigned to roles: a ground (darker end) and accents (the most vivid)."""

    def __init__(self, palette: Sequence[RGB], rng: np.random.Generator) -> None:
        cols = list(palette)
        if len(cols) == 1:
            cols = [_scale(cols[0], 0.45), cols[0], _mix(cols[0], (255, 255, 255), 0.45)]
        by_luma = sorted(cols, key=_luma)
        self.dark = by_luma[0]
        self.ground = by_luma[: max(2, (len(by_luma) + 1) // 2)]
        # accents: the vivid colours (saturated, not dark) first, then neutrals from light to dark
        vivid = sorted((c for c in cols if _saturation(c) > 0.25 and max(c) > 90), key=_saturation, reverse=True)
        neutrals = sorted((c for c in cols if c not in vivid), key=_luma, reverse=True)
        self.accents = vivid + neutrals
        self._n_vivid = max(2, len(vivid))
        self.light = by_luma[-1]
        self._rng = rng

    def accent(self, rank_limit: int = 3, *, other_than: RGB | None = None) -> RGB:
        """One of the most vivid colours (not ``other_than`` when there is a choice), chosen by the seed."""
        pool = self.accents[: max(1, min(rank_limit, self._n_vivid))]
        pool = [c for c in pool if c != other_than] or pool
        return pool[int(self._rng.integers(len(pool)))]


# --------------------------------------------------------------------------------------------------
# the background (numpy, final resolution)


def _background(size: int, colours: _Colours, rng: np.random.Generator, focus: tuple[float, float]) -> FloatArray:
    """A multi-stop linear gradient at a seeded angle, plus a soft glow of an accent colour at ``focus``."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    xx, yy = np.meshgrid(coords, coords)
    angle = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    t = t * t * (3 - 2 * t)  # smoothstep: softer ends

    ground = list(colours.ground)
    if rng.random() < 0.5:
        ground.reverse()
    if rng.random() < 0.5:  # sometimes a muted accent in the middle, for a three-colour sky
        ground.insert(1, _mix(colours.accent(4), ground[0], 0.45))
    stops = [_scale(ground[0], 0.7), *ground[1:]] if _luma(ground[0]) > 40 else ground
    positions = np.linspace(0.0, 1.0, len(stops))
    img = np.empty((size, size, 3), dtype=np.float32)
    for ch in range(3):
        img[..., ch] = np.interp(t, positions, [c[ch] for c in stops])

    # glow: screen-blend an accent colour with a Gaussian falloff around the focus point
    fx, fy = focus[0] - 0.5, focus[1] - 0.5
    sigma = rng.uniform(0.22, 0.32)
    glow = np.exp(-((xx - fx) ** 2 + (yy - fy) ** 2) / (2 * sigma * sigma)) * rng.uniform(0.45, 0.7)
    tint = np.asarray(colours.accent(2), dtype=np.float32) / 255.0
    img01 = img / 255.0
    img01 = 1.0 - (1.0 - img01) * (1.0 - glow[..., None] * tint)
    return (img01 * 255.0).astype(np.float32, copy=False)  # float32 already: numpy's stubs widen to float64


def _finish(img: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Monochrome film grain, a vignette, and slightly lifted blacks (a printed look)."""
    size = img.shape[0]
    grain = rng.normal(0.0, 1.0, (size, size, 1)).astype(np.float32)
    img = img + grain * 6.0
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    xx, yy = np.meshgrid(coords, coords)
    d = np.clip(np.sqrt(xx * xx + yy * yy) / math.sqrt(2), 0.0, 1.0)
    edge = np.clip((d - 0.4) / 0.6, 0.0, 1.0)
    vignette = 1.0 - 0.42 * edge * edge * (3 - 2 * edge)
    img = img * vignette[..., None]
    return img * 0.95 + 8.0


# --------------------------------------------------------------------------------------------------
# motifs (PIL, drawn at supersampled resolution S on an RGB image with blending)


def _vertical_gradient(width: int, height: int, top: RGB, bottom: RGB) -> Image.Image:
    t = np.linspace(0.0, 1.0, max(height, 1), dtype=np.float32)[:, None, None]
    rows = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    arr = np.broadcast_to(rows, (max(height, 1), max(width, 1), 3))
    return Image.fromarray(np.ascontiguousarray(arr).round().astype(np.uint8), "RGB")


def _motif_sun(base: Image.Image, rng: np.random.Generator, colours: _Colours, focus: tuple[float, float]) -> None:
    """A striped sunset sun over thin horizon lines."""
    s = base.width
    cx, cy = focus[0] * s, focus[1] * s
    r = int(s * rng.uniform(0.22, 0.3))
    first = colours.accent(3)
    second = colours.accent(4, other_than=first)
    top, bottom = sorted((first, second), key=_luma, reverse=True)  # lighter at the top, like a setting sun
    fill = _vertical_gradient(2 * r, 2 * r, _mix(top, colours.light, 0.25), bottom)
    mask = Image.new("L", (2 * r, 2 * r), 0)
    md = ImageDraw.Draw(mask)
    md.ellipse((0, 0, 2 * r - 1, 2 * r - 1), fill=255)
    n_stripes = int(rng.integers(5, 8))
    for i in range(n_stripes):
        y = r * (1.0 + 0.9 * i / n_stripes) + r * 0.08
        thickness = r * 0.025 * (1 + i * 0.9)
        md.rectangle((0, int(y), 2 * r, int(y + thickness)), fill=0)
    base.paste(fill, (int(cx - r), int(cy - r)), mask)

    draw = ImageDraw.Draw(base, "RGBA")
    horizon = cy + r * 1.05
    line_colour = _mix(colours.light, top, 0.3)
    width = max(1, s // 400)
    for i in range(int(rng.integers(4, 7))):
        y = horizon + (s - horizon) * (i / 6) ** 1.6
        draw.line((0, y, s, y), fill=_rgba(line_colour, 70 - i * 6), width=width * (1 + i // 2))


def _motif_vinyl(base: Image.Image, rng: np.random.Generator, colours: _Colours, focus: tuple[float, float]) -> None:
    """A vinyl record, sometimes sliding out of its sleeve."""
    s = base.width
    draw = ImageDraw.Draw(base, "RGBA")
    r = s * rng.uniform(0.27, 0.34)
    cx, cy = focus[0] * s, focus[1] * s
    sleeve = rng.random() < 0.6
    if sleeve:
        cx = min(cx + r * 0.45, s - r * 0.6)
    disc = _mix((12, 12, 16), _scale(colours.dark, 0.6), 0.25)  # near-black, tinted by the palette
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_rgba(disc, 245))
    for i, rr in enumerate(np.linspace(r * 0.4, r * 0.96, 26)):
        alpha = 16 + 10 * (i % 3 == 0)
        draw.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), outline=(255, 255, 255, alpha), width=max(1, s // 512))
    sheen = float(rng.uniform(0, 360))
    for start in (sheen, sheen + 180):
        draw.pieslice((cx - r, cy - r, cx + r, cy + r), start, start + 22, fill=(255, 255, 255, 20))
    label_r = r * 0.33
    label = colours.accent(2)
    draw.ellipse((cx - label_r, cy - label_r, cx + label_r, cy + label_r), fill=_rgba(label, 255))
    inner = label_r * 0.72
    draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), outline=_rgba(disc, 90), width=max(1, s // 400))
    hole = r * 0.035
    draw.ellipse((cx - hole, cy - hole, cx + hole, cy + hole), fill=_rgba(disc, 255))

    if sleeve:
        side = r * 2.1
        x1 = cx - r * 0.35
        x0, y0 = x1 - side, cy - side / 2
        sleeve_colour = next((c for c in colours.accents if c != label), colours.light)
        draw.rectangle((x0 + s * 0.012, y0 + s * 0.012, x1 + s * 0.012, y0 + side + s * 0.012), fill=(0, 0, 0, 70))
        draw.rectangle((x0, y0, x1, y0 + side), fill=_rgba(sleeve_colour, 250))
        stripe = _mix(sleeve_colour, colours.light, 0.5)
        for k in range(3):
            yy = y0 + side * (0.62 + k * 0.08)
            draw.rectangle((x0, yy, x1, yy + side * 0.03), fill=_rgba(stripe, 110))


def _motif_waves(base: Image.Image, rng: np.random.Generator, colours: _Colours, focus: tuple[float, float]) -> None:
    """Layered hills of sine waves, under a moon in the glow."""
    s = base.width
    draw = ImageDraw.Draw(base, "RGBA")
    moon_r = s * rng.uniform(0.07, 0.12)
    mx, my = focus[0] * s, min(focus[1], 0.4) * s
    draw.ellipse(
        (mx - moon_r, my - moon_r, mx + moon_r, my + moon_r), fill=_rgba(_mix(colours.light, (255,) * 3, 0.4), 235)
    )
    n_layers = int(rng.integers(4, 7))
    xs = np.linspace(0, s, 96)
    for i in range(n_layers):
        depth = i / max(1, n_layers - 1)
        y0 = s * (0.48 + 0.42 * depth)
        amp = s * (0.025 + 0.03 * rng.random())
        f1, f2 = rng.uniform(1.0, 2.5), rng.uniform(2.5, 5.0)
        p1, p2 = rng.uniform(0, 2 * math.pi, 2)
        ys = y0 + amp * np.sin(xs / s * 2 * math.pi * f1 + p1) + amp * 0.4 * np.sin(xs / s * 2 * math.pi * f2 + p2)
        colour = colours.accents[i % len(colours.accents)]
        colour = _mix(colour, colours.dark, 0.15 + 0.55 * depth)
        points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)] + [(s, s), (0, s)]
        draw.polygon(points, fill=_rgba(colour, 205 + int(40 * depth)))


def _motif_bars(base: Image.Image, rng: np.random.Generator, colours: _Colours, focus: tuple[float, float]) -> None:
    """Equaliser bars with a faint reflection, in front of a large ring."""
    s = base.width
    draw = ImageDraw.Draw(base, "RGBA")
    ring_r = s * rng.uniform(0.25, 0.33)
    cx, cy = focus[0] * s, focus[1] * s
    draw.ellipse(
        (cx - ring_r, cy - ring_r, cx + ring_r, cy + ring_r), outline=_rgba(colours.light, 80), width=max(2, s // 90)
    )
    n = int(rng.integers(14, 26))
    margin = s * 0.08
    pitch = (s - 2 * margin) / n
    bar_w = pitch * rng.uniform(0.5, 0.7)
    baseline = s * rng.uniform(0.6, 0.68)
    phase, freq = rng.uniform(0, 2 * math.pi), rng.uniform(1.0, 2.2)
    left, right = colours.accent(2), colours.accent(3)
    for i in range(n):
        u = i / max(1, n - 1)
        level = 0.55 + 0.35 * math.sin(u * math.pi * freq + phase) + 0.25 * rng.uniform(-1, 1)
        h = s * 0.36 * max(0.06, min(1.0, level)) * math.sin(0.15 + u * 2.84) ** 0.4
        x0 = margin + i * pitch + (pitch - bar_w) / 2
        colour = _mix(left, right, u)
        radius = bar_w / 2
        draw.rounded_rectangle((x0, baseline - h, x0 + bar_w, baseline), radius=radius, fill=_rgba(colour, 235))
        draw.rounded_rectangle(
            (x0, baseline + s * 0.012, x0 + bar_w, baseline + s * 0.012 + h * 0.35),
            radius=radius,
            fill=_rgba(colour, 60),
        )


def _motif_rings(base: Image.Image, rng: np.random.Generator, colours: _Colours, focus: tuple[float, float]) -> None:
    """Concentric arcs of different widths and lengths, like a record's grooves seen abstractly."""
    s = base.width
    draw = ImageDraw.Draw(base, "RGBA")
    cx, cy = focus[0] * s, focus[1] * s
    n = int(rng.integers(6, 10))
    radius = s * 0.06
    for i in range(n):
        width = s * rng.uniform(0.012, 0.045)
        radius += width + s * rng.uniform(0.008, 0.025)
        start = float(rng.uniform(0, 360))
        extent = float(rng.uniform(120, 320))
        colour = colours.accents[i % min(3, len(colours.accents))] if i % 3 else colours.light
        alpha = int(rng.uniform(150, 250))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        draw.arc(box, start, start + extent, fill=_rgba(colour, alpha), width=max(1, int(width)))
    core = s * 0.045
    draw.ellipse((cx - core, cy - core, cx + core, cy + core), fill=_rgba(colours.light, 230))


_Motif = Callable[[Image.Image, np.random.Generator, _Colours, tuple[float, float]], None]
_MOTIFS: dict[str, _Motif] = {
    "sun": _motif_sun,
    "vinyl": _motif_vinyl,
    "waves": _motif_waves,
    "bars": _motif_bars,
    "rings": _motif_rings,
}
# Word stems: a hint matches a word that starts with it ("synth" → "synthwave"); hints of 4 letters or
# fewer must be the whole word, optionally plural ("sea" is not "season", "sun" is not "sunday").
_MOTIF_HINTS: dict[str, tuple[str, ...]] = {
    "sun": ("synth", "retro", "80s", "sunset", "sunny", "sunrise", "summer", "outrun", "vapor", "sun"),
    "vinyl": ("lofi", "lo-fi", "jazz", "jazzy", "vinyl", "soul", "soulful", "boom bap", "boombap", "hip hop", "funk"),
    "waves": ("ambient", "ocean", "wave", "dream", "sea", "rain", "rainy", "calm", "serene", "drift", "melanchol"),
    "bars": ("trap", "drill", "edm", "house", "techno", "bass", "dubstep", "club", "dance", "energetic", "hype"),
    "rings": ("space", "cosmic", "orbit", "psych", "hypnotic", "minimal", "trance", "dark"),
}
_HINT_PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile("|".join(rf"\b{re.escape(w)}(?:s?\b)" if len(w) <= 4 else rf"\b{re.escape(w)}" for w in words))
    for name, words in _MOTIF_HINTS.items()
}


def _pick_motif(description: str, rng: np.random.Generator) -> str:
    """The motif the description hints at (seed breaks ties); the seed alone when nothing matches."""
    text = description.lower()
    hinted = [name for name, pattern in _HINT_PATTERNS.items() if pattern.search(text)]
    pool = hinted or list(_MOTIFS)
    return pool[int(rng.integers(len(pool)))]


def _accents(base: Image.Image, rng: np.random.Generator, colours: _Colours, focus: tuple[float, float]) -> None:
    """Small secondary shapes: a halftone dot patch, a few translucent circles and a thin ring."""
    s = base.width
    draw = ImageDraw.Draw(base, "RGBA")
    # halftone dots fading out from one corner
    corner_x, corner_y = (s * 0.1 if rng.random() < 0.5 else s * 0.9), s * rng.uniform(0.08, 0.3)
    pitch = s / 40
    dot_colour = colours.light
    for gx in range(-5, 6):
        for gy in range(-4, 5):
            fade = 1.0 - math.hypot(gx, gy) / 6.0
            if fade <= 0:
                continue
            r = pitch * 0.22 * fade
            x, y = corner_x + gx * pitch, corner_y + gy * pitch
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_rgba(dot_colour, int(120 * fade)))
    for _ in range(int(rng.integers(2, 5))):
        r = s * rng.uniform(0.015, 0.05)
        for _attempt in range(8):  # keep clear of the motif, so a dot never looks like a glitch on its edge
            u, v = rng.uniform(0.08, 0.92, 2)
            if math.hypot(u - focus[0], v - focus[1]) > 0.4:
                break
        x, y = s * u, s * v
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_rgba(colours.accent(4), int(rng.uniform(90, 180))))
    r = s * rng.uniform(0.08, 0.16)
    x, y = s * rng.uniform(0.1, 0.9), s * rng.uniform(0.1, 0.5)
    draw.ellipse((x - r, y - r, x + r, y + r), outline=_rgba(colours.light, 90), width=max(1, s // 300))


# --------------------------------------------------------------------------------------------------
# public: the procedural cover


def _validate_palette(palette: Sequence[str]) -> list[RGB]:
    if isinstance(palette, str):
        raise ValueError(f"palette must be a sequence of hex colours, not one string: {palette!r}")
    colours = list(palette)
    if not colours:
        raise ValueError(f"palette must hold 1 to {_MAX_COLOURS} hex colours, got none: {palette!r}")
    if len(colours) > _MAX_COLOURS:
        raise ValueError(f"palette must hold 1 to {_MAX_COLOURS} hex colours, got {len(colours)}: {palette!r}")
    return [hex_to_rgb(c) for c in colours]


def _rng(seed: int, description: str) -> np.random.Generator:
    """A generator keyed on seed and description, stable across processes (unlike ``hash()``)."""
    digest = hashlib.sha256(f"{seed}\x00{description}".encode("utf-8", "surrogatepass")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def procedural_cover(*, description: str, palette: Sequence[str], seed: int, size: int = 512) -> Image.Image:
    """Draw a size×size RGB album cover from ``palette`` (1–6 hex colours, 2–6 intended).

    The layout (motif, placement, grain) depends only on ``seed`` and ``description``; the palette
    only recolours it. Words in the description steer the motif (e.g. "lofi" → vinyl, "synthwave" → sun).
    Raises ``ValueError`` for a size outside [64, 2048], a non-integer seed, or a bad palette.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(description, str):
        raise ValueError(f"description must be a string, got {description!r}")
    rgb_palette = _validate_palette(palette)

    rng = _rng(seed, description)
    colours = _Colours(rgb_palette, rng)
    motif = _pick_motif(description, rng)
    focus = (float(rng.uniform(0.32, 0.68)), float(rng.uniform(0.3, 0.48)))

    ground = _background(size, colours, rng, focus)
    big = size * _SUPERSAMPLE
    canvas = Image.fromarray(np.clip(ground, 0, 255).round().astype(np.uint8), "RGB").resize(
        (big, big), Image.Resampling.BILINEAR
    )
    _accents(canvas, rng, colours, focus)
    _MOTIFS[motif](canvas, rng, colours, focus)
    canvas = canvas.resize((size, size), Image.Resampling.BOX)  # box = exact 2x2 supersampling

    finished = _finish(np.asarray(canvas, dtype=np.float32), rng)
    return Image.fromarray(np.clip(finished, 0, 255).round().astype(np.uint8), "RGB")
