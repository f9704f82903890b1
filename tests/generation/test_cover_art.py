"""The procedural fallback cover and the title typography: pure functions, checked on their pixels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from generation.cover.painting import hex_to_rgb, procedural_cover
from generation.cover.typography import draw_title

MOOD = ("#ffcf33", "#ff7a59", "#35d0ba", "#ffffff")
REDS = ("#d7263d", "#f46036", "#c5283d")
GREENS = ("#1b998b", "#2ec4b6", "#0b6e4f")
BLUES = ("#1d4ed8", "#3b82f6", "#0ea5e9")
# one description per motif (sun, vinyl, waves, bars, rings) and one that hints at none
DESCRIPTIONS = ("synthwave sunset", "lofi jazz", "ambient ocean", "trap bass", "cosmic orbit", "a song about friends")


def pixels(image: Image.Image) -> npt.NDArray[np.int16]:
    return np.asarray(image, dtype=np.int16)


def composition(image: Image.Image) -> npt.NDArray[np.int16]:
    """16×16 block means: the layout and colours, with the film grain averaged away."""
    return pixels(image.resize((16, 16), Image.Resampling.BOX))


@pytest.fixture(scope="module")
def cover() -> Image.Image:
    return procedural_cover(description="lofi jazz on a rainy night", palette=MOOD, seed=7, size=256)


# ---------------------------------------------------------------------------------------------- hex_to_rgb


@pytest.mark.parametrize(
    ("value", "expected"),
    [("#ffcf33", (255, 207, 51)), ("FFCF33", (255, 207, 51)), ("#fff", (255, 255, 255)), (" #0a0B0c ", (10, 11, 12))],
)
def test_hex_to_rgb(value: str, expected: tuple[int, int, int]) -> None:
    assert hex_to_rgb(value) == expected


@pytest.mark.parametrize("value", ["", "#", "#ffcf3", "#ffcf333", "#gggggg", "red", "#ff cf 33"])
def test_hex_to_rgb_rejects_bad_values(value: str) -> None:
    with pytest.raises(ValueError, match="not a hex colour") as err:
        hex_to_rgb(value)
    assert repr(value) in str(err.value)


# ---------------------------------------------------------------------------------------------- procedural_cover


@pytest.mark.parametrize("size", [64, 257, 512])
def test_cover_is_rgb_and_exactly_size_square(size: int) -> None:
    image = procedural_cover(description="anything", palette=MOOD, seed=1, size=size)
    assert image.mode == "RGB"
    assert image.size == (size, size)


def test_default_size_is_512() -> None:
    assert procedural_cover(description="x", palette=MOOD, seed=0).size == (512, 512)


@pytest.mark.parametrize("description", DESCRIPTIONS)
def test_same_seed_and_description_give_identical_pixels(description: str) -> None:
    first = procedural_cover(description=description, palette=MOOD, seed=42, size=128)
    second = procedural_cover(description=description, palette=MOOD, seed=42, size=128)
    assert np.array_equal(pixels(first), pixels(second))


@pytest.mark.parametrize("description", DESCRIPTIONS)
def test_different_seeds_give_visibly_different_art(description: str) -> None:
    covers = [composition(procedural_cover(description=description, palette=MOOD, seed=s, size=128)) for s in (1, 2, 3)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.abs(covers[a] - covers[b]).mean() > 10, (description, a, b)


def test_different_descriptions_give_different_art() -> None:
    a = procedural_cover(description="lofi jazz", palette=MOOD, seed=5, size=128)
    b = procedural_cover(description="trap bass", palette=MOOD, seed=5, size=128)
    assert np.abs(composition(a) - composition(b)).mean() > 10


@pytest.mark.parametrize("description", DESCRIPTIONS)
def test_cover_is_not_flat(description: str) -> None:
    arr = pixels(procedural_cover(description=description, palette=MOOD, seed=3, size=128))
    assert arr.std() > 25
    coarse = {tuple(c) for c in (arr.reshape(-1, 3) // 32).tolist()}  # 8 levels per channel, ignoring grain
    assert len(coarse) >= 12


@pytest.mark.parametrize("palette", [REDS, GREENS], ids=["reds", "greens"])
@pytest.mark.parametrize("description", DESCRIPTIONS)
def test_a_saturated_palette_dominates_the_colours(palette: tuple[str, ...], description: str) -> None:
    palette_mean = np.mean([hex_to_rgb(c) for c in palette], axis=0)
    for seed in (0, 1, 2):
        image = procedural_cover(description=description, palette=palette, seed=seed, size=96)
        mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
        assert np.linalg.norm(mean - palette_mean) < np.linalg.norm(mean - 128.0), (seed, mean, palette_mean)


@pytest.mark.parametrize(("palette", "channel"), [(REDS, 0), (GREENS, 1), (BLUES, 2)], ids=["red", "green", "blue"])
def test_the_palettes_hue_is_the_covers_hue(palette: tuple[str, ...], channel: int) -> None:
    for description in DESCRIPTIONS:
        mean = pixels(procedural_cover(description=description, palette=palette, seed=4, size=96)).reshape(-1, 3)
        assert int(np.argmax(mean.mean(axis=0))) == channel, description


def test_palette_recolours_but_keeps_the_layout() -> None:
    """The layout depends on seed + description only: the same cover in another palette differs in colour."""
    a = procedural_cover(description="lofi jazz", palette=REDS, seed=9, size=96)
    b = procedural_cover(description="lofi jazz", palette=BLUES, seed=9, size=96)
    assert not np.array_equal(pixels(a), pixels(b))
    edges_a = np.abs(np.diff(pixels(a.convert("L")), axis=1)) > 40
    edges_b = np.abs(np.diff(pixels(b.convert("L")), axis=1)) > 40
    overlap = (edges_a & edges_b).sum() / max(1, min(edges_a.sum(), edges_b.sum()))
    assert overlap > 0.3


@pytest.mark.parametrize("palette", [["#336699"], ["#000", "#fff"], [*MOOD, "#123456", "#abcdef"]])
def test_palettes_of_one_to_six_colours_work(palette: list[str]) -> None:
    image = procedural_cover(description="x", palette=palette, seed=0, size=64)
    assert pixels(image).std() > 5


@pytest.mark.parametrize("size", [63, 2049, 0, -512])
def test_size_out_of_range_is_rejected(size: int) -> None:
    with pytest.raises(ValueError, match="size") as err:
        procedural_cover(description="x", palette=MOOD, seed=0, size=size)
    assert str(size) in str(err.value)


@pytest.mark.parametrize("size", [512.0, "512", True])
def test_non_integer_size_is_rejected(size: object) -> None:
    with pytest.raises(ValueError, match="size"):
        procedural_cover(description="x", palette=MOOD, seed=0, size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("palette", "shown"),
    [
        ([], "[]"),
        ("#ffcf33", "'#ffcf33'"),  # a bare string is a sequence of characters, not of colours
        (["#ffcf33", "#zzzzzz"], "'#zzzzzz'"),
        (["#ffcf33", "ff"], "'ff'"),
        (["#ffcf33", 0xFFCF33], "16764723"),
        (["#000000"] * 7, "got 7"),
    ],
)
def test_bad_palette_is_rejected_naming_the_bad_value(palette: object, shown: str) -> None:
    with pytest.raises(ValueError) as err:
        procedural_cover(description="x", palette=palette, seed=0, size=64)  # type: ignore[arg-type]
    assert shown in str(err.value)


def test_non_integer_seed_is_rejected() -> None:
    with pytest.raises(ValueError, match="seed"):
        procedural_cover(description="x", palette=MOOD, seed="7", size=64)  # type: ignore[arg-type]


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        procedural_cover("x", MOOD, 0)  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------- draw_title


def test_title_changes_the_bottom_band_and_leaves_the_top_alone(cover: Image.Image) -> None:
    titled = draw_title(cover, "Rainy Night Study", subtitle="lo-fi · 84 bpm")
    diff = np.abs(pixels(titled) - pixels(cover))
    height = cover.height
    assert titled.size == cover.size
    assert titled.mode == "RGB"
    assert diff[int(height * 0.8) :].mean() > 15  # text on a dark scrim
    assert diff[: int(height * 0.4)].max() <= 1


def test_title_at_the_top_mirrors_the_layout(cover: Image.Image) -> None:
    titled = draw_title(cover, "Rainy Night Study", position="top")
    diff = np.abs(pixels(titled) - pixels(cover))
    assert diff[: int(cover.height * 0.2)].mean() > 15
    assert diff[int(cover.height * 0.6) :].max() <= 1


def test_title_darkens_its_band_so_white_text_reads(cover: Image.Image) -> None:
    white = Image.new("RGB", cover.size, "white")
    titled = pixels(draw_title(white, "Bright"))
    band = titled[int(cover.height * 0.85) :]
    assert band.mean() < 200  # the scrim darkens a white background
    assert (band.min(axis=2) > 235).any()  # and the text itself is near-white


def test_draw_title_never_mutates_its_input(cover: Image.Image) -> None:
    before = pixels(cover).copy()
    titled = draw_title(cover, "Mutation Check", subtitle="sub")
    assert titled is not cover
    assert np.array_equal(pixels(cover), before)


def test_a_300_character_title_wraps_to_two_lines_within_the_bottom(cover: Image.Image) -> None:
    title = ("Midnight Boulevard Extended Mix " * 10)[:300]
    titled = draw_title(cover, title, subtitle="a very long subtitle " * 10)
    diff = np.abs(pixels(titled) - pixels(cover))
    assert diff[: int(cover.height * 0.4)].max() <= 1  # at most two lines: it never climbs into the top
    assert diff[int(cover.height * 0.8) :].mean() > 15


def test_a_300_character_word_is_broken_and_ellipsised(cover: Image.Image) -> None:
    titled = draw_title(cover, "W" * 300)
    assert np.abs(pixels(titled) - pixels(cover))[: int(cover.height * 0.4)].max() <= 1


def test_control_characters_are_stripped(cover: Image.Image) -> None:
    clean = draw_title(cover, "Fire Track")
    dirty = draw_title(cover, "\x00Fire\x07 \x1b[31mTrack\u200b\x7f")
    assert np.array_equal(pixels(clean), pixels(dirty))


def test_whitespace_and_newlines_fold_to_single_spaces(cover: Image.Image) -> None:
    assert np.array_equal(pixels(draw_title(cover, "Fire Track")), pixels(draw_title(cover, "  Fire\n\t Track \r\n")))


def test_emoji_are_dropped_and_accents_folded_not_drawn_as_boxes(cover: Image.Image) -> None:
    plain = draw_title(cover, "Cafe Sunrise")
    fancy = draw_title(cover, "Café 🔥 Sunrise ✨")
    assert np.array_equal(pixels(plain), pixels(fancy))


@pytest.mark.parametrize("title", ["", "   ", "\n\t", "\x00\x1f", "🔥🔥"])
def test_an_empty_title_returns_an_equal_copy(cover: Image.Image, title: str) -> None:
    titled = draw_title(cover, title, subtitle="ignored without a title")
    assert titled is not cover
    assert titled.mode == cover.mode
    assert np.array_equal(pixels(titled), pixels(cover))


def test_font_scales_with_the_image() -> None:
    rows = []
    for size in (256, 512):
        base = Image.new("RGB", (size, size), (40, 40, 40))
        diff = np.abs(pixels(draw_title(base, "Scale")) - pixels(base)).max(axis=2)
        text_rows = np.flatnonzero((diff > 150).any(axis=1))  # near-white text on dark grey, not the scrim
        rows.append(text_rows[-1] - text_rows[0])
    assert 1.6 < rows[1] / rows[0] < 2.4


def test_rgba_stays_rgba_and_other_modes_become_rgb() -> None:
    rgba = Image.new("RGBA", (128, 128), (10, 200, 10, 255))
    assert draw_title(rgba, "Alpha").mode == "RGBA"
    grey = Image.new("L", (128, 96), 128)
    titled = draw_title(grey, "Grey")
    assert titled.mode == "RGB"
    assert titled.size == (128, 96)


def test_bad_position_is_rejected(cover: Image.Image) -> None:
    with pytest.raises(ValueError, match="'middle'"):
        draw_title(cover, "x", position="middle")  # type: ignore[arg-type]
