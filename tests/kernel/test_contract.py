from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from beatforge.contract import (
    BeatParams,
    ErrorCode,
    GenerateRequest,
    JobOutcome,
    JobProgress,
    JobStatus,
    clean_prompt,
    explain,
)


def _params(**overrides: object) -> BeatParams:
    return BeatParams.model_validate({"prompt": "dark trap, 140 bpm", "duration_s": 10, "seed": 7, **overrides})


@pytest.mark.parametrize(
    "model",
    [
        _params(),
        GenerateRequest(job_id=3, params=_params(model="facebook/musicgen-small")),
        JobProgress(stage="generating", done=5, total=10, eta_s=1.5),
        JobOutcome(job_id=3, status=JobStatus.FAILED, error_code=ErrorCode.MODEL_UNAVAILABLE, message="no weights"),
        JobOutcome(job_id=3, status=JobStatus.DONE, audio_path="3/a.wav"),
    ],
)
def test_every_model_round_trips_through_json(model: BeatParams) -> None:
    wire = json.dumps(model.model_dump(mode="json"))
    assert type(model).model_validate(json.loads(wire)) == model


def test_a_request_from_another_schema_version_is_refused() -> None:
    payload = GenerateRequest(job_id=1, params=_params()).model_dump(mode="json")
    payload["schema_version"] = 2
    with pytest.raises(ValidationError):
        GenerateRequest.model_validate(payload)


def test_unknown_fields_are_refused_rather_than_ignored() -> None:
    with pytest.raises(ValidationError):
        BeatParams.model_validate({"prompt": "x", "duration_s": 5, "seed": 1, "temperature": 2})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  dark   trap \n\n 808s ", "dark trap 808s"),
        ("bell\x07 and\u202e override\u200b", "bell and override"),
        ("ping @everyone and @HERE", "ping ＠everyone and ＠HERE"),
        ("hi <@123> <@!5> <@&456> <#789>", "hi ‹@123> ‹@!5> ‹@&456> ‹#789>"),
    ],
)
def test_clean_prompt(raw: str, expected: str) -> None:
    assert clean_prompt(raw) == expected
    assert clean_prompt(expected) == expected  # idempotent: follow-up jobs re-validate stored prompts


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        ({"prompt": " \t\n"}, "prompt is empty"),
        ({"prompt": "\x00\x01"}, "prompt is empty"),
        ({"prompt": "x" * 5000}, "prompt is 5000 characters long; the limit is 500"),
        ({"duration_s": 0.5}, "duration must be at least 1"),
        ({"duration_s": 121}, "duration must be at most 120"),
        ({"takes": 5}, "takes must be at most 4"),
        ({"takes": 0}, "takes must be at least 1"),
        ({"sampling": {"temperature": 0}}, "sampling.temperature must be at least 0.05"),
        ({"sampling": {"top_p": 1.5}}, "sampling.top_p must be at most 1"),
        ({"sampling": {"guidance_scale": 50}}, "sampling.guidance_scale must be at most 20"),
        ({"continue_from": "../../etc/passwd"}, "continue_from"),
        ({"melody": "12/x.wav"}, "melody"),
        ({"seed": -1}, "seed must be at least 0"),
    ],
)
def test_bad_input_is_explained_in_the_options_words(overrides: dict[str, object], phrase: str) -> None:
    with pytest.raises(ValidationError) as info:
        _params(**overrides)
    assert phrase in explain(info.value)


def test_progress_percent() -> None:
    assert JobProgress(stage="generating", done=3, total=12).percent == 25
