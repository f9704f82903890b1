"""The numbers every side must agree on, each written once: what a job may ask for, and Discord's limits.

The contract validates with them, the bot's command options and forms offer them, the worker and the
loop cutter check them again; a bound changed here changes everywhere at once.
"""

from __future__ import annotations

from typing import Final

PROMPT_MAX_CHARS: Final = 500
TITLE_MAX_CHARS: Final = 80
MIN_DURATION_S: Final = 1.0
#: The longest beat any engine makes (each engine has its own limit, beatforge/engines.py); MusicGen makes beats
#: longer than its 30-second window window by window (generation/music/musicgen.py).
MAX_DURATION_S: Final = 240.0
WINDOW_S: Final = 30.0
#: The most audio a loop is cut from: what every engine can make (MusicGen's longest beat).
LOOP_SOURCE_MAX_S: Final = 120.0
MAX_TAKES: Final = 4
#: Best of N (``/beat best_of``): how many takes may be made for CLAP to pick the best ``takes`` of.
MIN_BEST_OF: Final = 2
MAX_BEST_OF: Final = 8
MAX_SEED: Final = 2**31 - 1
#: The largest job number a command option may carry: Discord declares integer options only up to 2**53, and
#: SQLite's INTEGER (64-bit signed) would overflow past 2**63 - 1 before any row is even looked for.
MAX_JOB_ID: Final = 2**53 - 1

#: Tempi a user may ask for, and the range the tempo detector accepts as a hint.
MIN_BPM: Final = 40
MAX_BPM: Final = 300

#: Loops: whole bars, seconds of audio, and the bar counts a producer expects a loop to have.
LOOP_MIN_S: Final = 1.0
LOOP_MAX_S: Final = 128.0
MAX_LOOP_BARS: Final = 64
POWER_OF_TWO_BARS: Final = (1, 2, 4, 8, 16)

#: Packs (/pack, ``beatforge auto`` in Discord): the most loops one pack may hold; a server's admins choose
#: their own maximum up to this (``/admin limits pack_loops``).
MAX_PACK_LOOPS: Final = 16

#: Discord: the upload limit of a server without boosts, and the length of a message's text.
DISCORD_UPLOAD_LIMIT: Final = 10 * 2**20
DISCORD_MESSAGE_CHARS: Final = 2000
