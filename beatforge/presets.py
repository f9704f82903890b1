"""Style and mood presets: data, in one place, shared by the bot, the CLI and the worker.

Styles carry words for the music model and for the cover artist. Moods are the four
valence/arousal quadrants used for emotion-conditioned generation (EMusicGen's Russell
quadrants), each steered through tempo, mode and register, the three controls that study
found to carry emotion.
"""

from __future__ import annotations

from dataclasses import dataclass

from beatforge.prompt_words import fit_to_request, names_tempo


@dataclass(frozen=True, slots=True)
class Style:
    key: str
    label: str
    description: str  # one line for /styles
    music: str  # words for MusicGen
    visual: str  # words for the cover


@dataclass(frozen=True, slots=True)
class Mood:
    key: str
    label: str
    valence: str  # "positive" | "negative"
    arousal: str  # "high" | "low"
    bpm: int
    mode: str
    register: str
    music: str
    visual: str
    palette: tuple[str, ...]  # hex colours for the procedural cover


STYLES: dict[str, Style] = {
    s.key: s
    for s in (
        Style(
            "dark-trap",
            "Dark atmospheric trap",
            "Travis Scott-inspired: distorted 808s, reverb-soaked synths, haunting ad-lib space",
            "dark atmospheric trap beat, heavy distorted 808 bass, crisp hi-hat rolls, reverb-drenched synth pads, "
            "haunting psychedelic textures",
            "dark psychedelic rap album cover, smoky neon haze, surreal desert night",
        ),
        Style(
            "melodic-psych",
            "Melodic psychedelic",
            "Don Toliver-inspired: warm detuned keys, bouncy drums, dreamy melodies",
            "melodic psychedelic rap beat, warm detuned synth keys, bouncy drums, dreamy melodic lead, lush chorus",
            "dreamy psychedelic album cover, liquid colours, soft glow, retro-futurist",
        ),
        Style(
            "moody-hum",
            "Moody hum-driven",
            "Kid Cudi-inspired: humming melodies, spacey pads, introspective night-time feel",
            "moody spacey hip hop beat, hummed vocal-like melody, airy synth pads, slow introspective groove",
            "lonely astronaut under a night sky album cover, moody blue tones, cinematic",
        ),
        Style(
            "boom-bap",
            "Boom bap",
            "90s East Coast: dusty drum breaks, jazzy samples, vinyl crackle",
            "classic boom bap hip hop beat, dusty drum break, jazzy piano sample, upright bass, vinyl crackle",
            "90s hip hop album cover, gritty city street, film grain photo",
        ),
        Style(
            "lofi",
            "Lo-fi chill",
            "Study beats: mellow keys, soft swing drums, tape warmth",
            "lofi hip hop beat, mellow rhodes chords, soft swung drums, tape saturation, rain ambience",
            "cozy lofi illustration, bedroom window at dusk, warm pastel anime style",
        ),
        Style(
            "drill",
            "Drill",
            "UK/NY drill: sliding 808s, triplet hats, dark piano",
            "drill beat, sliding 808 bass, triplet hi-hats, syncopated snares, dark piano melody",
            "gritty drill mixtape cover, night city, high contrast monochrome",
        ),
        Style(
            "synthwave",
            "Synthwave",
            "80s retro: analog arps, gated drums, neon nostalgia",
            "synthwave track, analog arpeggiated synths, gated reverb drums, retro 80s bassline",
            "synthwave album cover, neon grid sunset, chrome lettering, 80s retro",
        ),
        Style(
            "house",
            "House",
            "Four-on-the-floor: deep bass, open hats, chopped vocals",
            "deep house track, four on the floor kick, warm sub bass, open hi-hats, chopped vocal stabs",
            "club night album cover, abstract light beams, vibrant colour gradient",
        ),
    )
}

MOODS: dict[str, Mood] = {
    m.key: m
    for m in (
        Mood(
            "happy", "Happy / energetic", "positive", "high", 128, "major key", "bright high register",
            "upbeat, joyful, energetic", "sunny, vibrant, joyful", ("#ffcf33", "#ff7a59", "#35d0ba", "#ffffff"),
        ),
        Mood(
            "tense", "Tense / angry", "negative", "high", 150, "minor key", "aggressive low register",
            "tense, aggressive, dissonant, driving", "harsh, fiery, chaotic",
            ("#1a1a1a", "#c0152f", "#ff5a1f", "#f2f2f2"),
        ),
        Mood(
            "sad", "Sad / low", "negative", "low", 72, "minor key", "dark low register",
            "melancholic, sad, slow, sparse", "rainy, lonely, muted blue", ("#1d2b45", "#3d5a80", "#98c1d9", "#e0e6ef"),
        ),
        Mood(
            "calm", "Calm / relaxed", "positive", "low", 85, "major key", "soft mid register",
            "calm, relaxed, warm, gentle", "serene, soft light, pastel", ("#a8dadc", "#f1faee", "#e9c46a", "#457b9d"),
        ),
    )
}  # fmt: skip


#: Beats per bar (``BeatParams.time_signature``, what ACE-Step takes) as musicians write the metre.
METRE_WORDS = {2: "2/4", 3: "3/4", 4: "4/4", 6: "6/8"}


def describe_music(
    *,
    prompt: str | None,
    style: str | None,
    mood: str | None,
    bpm: int | None,
    key: str | None = None,
    time_signature: int | None = None,
) -> str:
    """The text the model sees: the user's words first (they matter most), then preset words, tempo and key last.

    A tempo the user asked for (``bpm``) replaces any tempo the words name: "trap, 140 bpm" with the option
    ``bpm: 100`` is made at 100; a key asked for replaces a key the words name. A mood's own tempo only fills
    in when nothing names one. ``key`` is normalized (``normalize_key``).
    """
    parts = [prompt.strip()] if prompt and prompt.strip() else []
    if style:
        parts.append(STYLES[style].music)
    if mood:
        m = MOODS[mood]
        parts.append(f"{m.music}, {m.mode}, {m.register}")
    text = ", ".join(parts)
    if bpm is None and mood and not names_tempo(text):
        text = f"{text}, {MOODS[mood].bpm} bpm"
    if bpm is not None or key is not None:
        text = fit_to_request(text, bpm=bpm, key=key)
    if time_signature is not None:
        text = f"{text}, {METRE_WORDS[time_signature]} time"
    return text
