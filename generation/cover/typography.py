"""Title typography: what makes a cover a cover, set on every one, diffusion-made or procedural.

:func:`draw_title` sets the beat's title (and an optional subtitle) over any image on a soft dark scrim with a
drop shadow, so it reads on any background.

Pure Pillow + numpy: no torch, no files, no fonts from the system. Text uses the scalable font that Pillow
(>= 10.1, built with FreeType) embeds, via ``ImageFont.load_default(size=...)``. That font covers ASCII and a
little punctuation, so other characters are transliterated (``é`` → ``e``) or dropped rather than drawn as
empty boxes.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["draw_title"]

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_ELLIPSIS = "…"
_PUNCTUATION = str.maketrans({"–": "-", "—": "-", "‒": "-", "―": "-", "‐": "-", "‑": "-", "′": "'", "″": '"'})
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # e.g. "\x1b[31m": strip the whole sequence, not just ESC
_MAX_TITLE_CHARS = 400  # two lines at the smallest size hold far fewer; the rest would be cut anyway


def _font(px: int) -> Font:
    # not cached: loading takes ~0.1 ms, and a font object shared between worker threads is not thread-safe
    return ImageFont.load_default(size=px)


@functools.lru_cache(maxsize=1)
def _notdef() -> tuple[tuple[float, float, float, float], bytes]:
    font = _font(24)
    return font.getbbox("\uffff"), bytes(font.getmask("\uffff"))


@functools.lru_cache(maxsize=4096)
def _renderable(ch: str) -> bool:
    """Whether the embedded font has a glyph for ``ch`` (a missing glyph renders as the .notdef box)."""
    font = _font(24)
    return (font.getbbox(ch), bytes(font.getmask(ch))) != _notdef()


def _clean_text(text: str) -> str:
    """Strip control/format characters, fold whitespace, and keep only what the font can draw."""
    out: list[str] = []
    for ch in _ANSI_ESCAPE.sub("", text[: _MAX_TITLE_CHARS * 2]).translate(_PUNCTUATION):
        if ch.isspace():
            out.append(" ")
        elif unicodedata.category(ch).startswith("C"):
            continue  # Cc control, Cf format (ZWJ, bidi overrides), Cs/Co/Cn
        elif _renderable(ch):
            out.append(ch)
        else:  # "é" → "e", "ﬁ" → "fi", fullwidth "Ａ" → "A"; emoji and CJK have no fallback and are dropped
            out.extend(c for c in unicodedata.normalize("NFKD", ch) if c.isspace() or _renderable(c))
    return " ".join("".join(out).split())[:_MAX_TITLE_CHARS]


def _ellipsis() -> str:
    return _ELLIPSIS if _renderable(_ELLIPSIS) else "..."


def _fit_with_ellipsis(text: str, font: Font, max_width: float) -> str:
    mark = _ellipsis()
    text = text.rstrip()
    while text and font.getlength(text + mark) > max_width:
        text = text[:-1].rstrip()
    return text + mark


def _pieces(word: str, font: Font, max_width: float) -> Iterator[str]:
    """``word`` itself, or hard-broken into chunks that each fit ``max_width``."""
    if font.getlength(word) <= max_width:
        yield word
        return
    chunk = ""
    for ch in word:
        if chunk and font.getlength(chunk + ch) > max_width:
            yield chunk
            chunk = ""
        chunk += ch
    if chunk:
        yield chunk


def _wrap(text: str, font: Font, max_width: float, max_lines: int) -> tuple[list[str], bool]:
    """Greedy word wrap into at most ``max_lines``; returns (lines, truncated). The last line gets "…" if cut."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        for piece in _pieces(word, font, max_width):
            candidate = f"{current} {piece}" if current else piece
            if font.getlength(candidate) <= max_width:
                current = candidate
                continue
            lines.append(current)
            current = piece
            if len(lines) > max_lines:
                break
        if len(lines) > max_lines:
            break
    if current and len(lines) <= max_lines:
        lines.append(current)
    if len(lines) <= max_lines:
        return lines, False
    kept = lines[:max_lines]
    kept[-1] = _fit_with_ellipsis(f"{kept[-1]} {lines[max_lines]}", font, max_width)
    return kept, True


def _line_height(font: Font) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return ascent + descent
    return int(font.getbbox("Ag")[3])


def draw_title(
    image: Image.Image,
    title: str,
    *,
    subtitle: str | None = None,
    position: Literal["bottom", "top"] = "bottom",
) -> Image.Image:
    """Set ``title`` (and ``subtitle``) on a copy of ``image``; the input is never modified.

    Left-aligned white type with a soft drop shadow on a dark gradient scrim along the chosen edge,
    with a short rule between text and image. The font scales with the image; a long title shrinks,
    then wraps to at most two lines and ends in "…". An empty title (after stripping control
    characters and glyphs the font lacks) returns an unchanged copy. RGBA input stays RGBA; any other
    mode comes back as RGB.
    """
    if position not in ("bottom", "top"):
        raise ValueError(f"position must be 'bottom' or 'top', got {position!r}")
    text = _clean_text(title)
    sub = _clean_text(subtitle) if subtitle else ""
    if not text:
        return image.copy()

    out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    canvas = image.convert("RGBA")
    width, height = canvas.size
    unit = min(width, height)
    margin = max(4, round(width * 0.065))
    max_width = max(1, width - 2 * margin)

    base_px = max(10, round(unit * 0.09))
    lines: list[str] = []
    font = _font(base_px)
    for factor in (1.0, 0.84, 0.7, 0.6):
        font = _font(max(9, round(base_px * factor)))
        lines, truncated = _wrap(text, font, max_width, max_lines=2)
        if not truncated:
            break
    title_lh = _line_height(font)
    sub_font = _font(max(8, round(unit * 0.04)))
    sub_line = _fit_with_ellipsis(sub, sub_font, max_width) if sub and sub_font.getlength(sub) > max_width else sub
    sub_lh = _line_height(sub_font) if sub_line else 0

    rule_h = max(2, round(unit * 0.006))
    rule_gap = round(title_lh * 0.35)
    sub_gap = round(title_lh * 0.15) if sub_line else 0
    block_h = rule_h + rule_gap + title_lh * len(lines) + sub_gap + sub_lh
    top_y = height - margin - block_h if position == "bottom" else margin

    # scrim: transparent → dark towards the edge, covering the text block plus some room
    scrim_h = min(height, block_h + margin + round(margin * 1.8))
    ramp = np.linspace(0.0, 1.0, scrim_h, dtype=np.float32)
    ramp = np.clip(ramp / 0.7, 0.0, 1.0) ** 1.5 * 175.0
    if position == "top":
        ramp = ramp[::-1]
    alpha = Image.fromarray(np.repeat(ramp.round().astype(np.uint8)[:, None], width, axis=1), "L")
    scrim = Image.new("RGBA", (width, scrim_h), (6, 6, 10, 0))
    scrim.putalpha(alpha)
    canvas.alpha_composite(scrim, (0, height - scrim_h if position == "bottom" else 0))

    # layout: rule, title lines, subtitle (top position: title, subtitle, then the rule below)
    y = top_y
    placements: list[tuple[int, str, Font, int]] = []  # (y, text, font, alpha)
    rule_y = y if position == "bottom" else top_y + block_h - rule_h
    if position == "bottom":
        y += rule_h + rule_gap
    for line in lines:
        placements.append((y, line, font, 255))
        y += title_lh
    if sub_line:
        placements.append((y + sub_gap, sub_line, sub_font, 215))

    shadow = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    sd = ImageDraw.Draw(shadow)
    offset = max(1, round(unit * 0.004))
    for ty, line, f, _ in placements:
        sd.text((margin + offset, ty + offset), line, font=f, fill=(0, 0, 0, 200))
    canvas.alpha_composite(shadow.filter(ImageFilter.GaussianBlur(max(1.0, unit * 0.006))))

    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    ld = ImageDraw.Draw(layer)
    ld.rectangle((margin, rule_y, margin + round(width * 0.09), rule_y + rule_h - 1), fill=(255, 255, 255, 225))
    for ty, line, f, a in placements:
        # a hairline stroke in the fill colour turns the embedded Regular weight into a semi-bold
        stroke = f.size * 0.022 if isinstance(f, ImageFont.FreeTypeFont) and f is font else 0
        ld.text(
            (margin, ty), line, font=f, fill=(255, 255, 255, a), stroke_width=stroke, stroke_fill=(255, 255, 255, a)
        )
    canvas.alpha_composite(layer)
    return canvas if out_mode == "RGBA" else canvas.convert("RGB")
