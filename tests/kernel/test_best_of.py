"""Best of N in the contract: its bounds, that it covers the takes, how many takes it makes, and takes' scores."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from beatforge.bounds import MAX_BEST_OF, MIN_BEST_OF
from beatforge.contract import AudioMeta, BeatParams


def beat(**params: object) -> BeatParams:
    return BeatParams.model_validate({"prompt": "lofi", "duration_s": 5, "seed": 1, **params})


def test_best_of_makes_more_takes_than_it_keeps() -> None:
    assert (beat().best_of, beat().generated_takes) == (None, 1)
    assert beat(takes=3).generated_takes == 3
    assert beat(best_of=MAX_BEST_OF, takes=2).generated_takes == MAX_BEST_OF
    assert beat(best_of=MIN_BEST_OF, takes=MIN_BEST_OF).generated_takes == MIN_BEST_OF


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({"best_of": MIN_BEST_OF - 1}, "greater than or equal to 2"),
        ({"best_of": MAX_BEST_OF + 1}, "less than or equal to 8"),
        ({"best_of": 2, "takes": 3}, "best_of (2) must be at least takes (3)"),
    ],
)
def test_best_of_out_of_bounds_is_refused(params: dict[str, object], phrase: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(phrase)):
        beat(**params)


def test_a_takes_score_is_optional_so_old_rows_still_read() -> None:
    old = AudioMeta.model_validate({"take": 2, "seed": 7})
    assert (old.text_match, old.best_of) == (None, None)
    scored = AudioMeta.model_validate({"take": 1, "text_match": 0.25, "best_of": 4})
    assert (scored.text_match, scored.best_of) == (0.25, 4)
    with pytest.raises(ValidationError):
        AudioMeta(text_match=1.5)  # a cosine: never outside [-1, 1]
