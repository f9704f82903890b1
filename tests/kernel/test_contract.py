from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from beatforge.contract import (
    JOB_FUNCTIONS,
    PARAMS_BY_KIND,
    ArtifactKind,
    AudioMeta,
    BeatParams,
    CompactMeta,
    CoverMeta,
    CoverParams,
    JobKind,
    JobParams,
    JobProgress,
    JobRequest,
    LoopJobParams,
    LoopKey,
    LoopMeta,
    LoopParams,
    MidiMeta,
    MidiParams,
    PackParams,
    Relation,
    SamplingParams,
    TrainParams,
    clean_prompt,
    explain,
    parse_params,
)

DESCRIBED: dict[str, object] = {"prompt": "dark trap, 140 bpm", "style": "dark-trap", "mood": "tense", "title": "Night"}


def _params(**overrides: object) -> BeatParams:
    return BeatParams.model_validate({"prompt": "dark trap, 140 bpm", "duration_s": 10, "seed": 7, **overrides})


BEAT = _params(model="facebook/musicgen-small", takes=2, sampling={"top_k": 50}, loop={"bars": 4, "target_bpm": 140})
COVER = CoverParams.model_validate({**DESCRIBED, "seed": 99})
LOOP = LoopJobParams.model_validate({**DESCRIBED, "seed": 7, "take": 2, "loop": {"bars": 8, "format": "flac"}})
MIDI = MidiParams.model_validate({**DESCRIBED, "seed": 7, "take": 3, "stems": True})
UPLOAD = MidiParams(prompt="my track.wav", upload="uploads/ab-my-track.wav")
PACK = PackParams.model_validate(
    {"prompt": "RPG levels", "count": 8, "bpm": 100, "key": "A minor", "seed": 5, "loop": {"bars": 2, "format": "mp3"}}
)
TRAIN = TrainParams(prompt="model house", name="house", base="small", steps=200, upload="uploads/ab-clips.zip")


@pytest.mark.parametrize(
    "model",
    [
        _params(),
        BEAT,
        COVER,
        LOOP,
        MIDI,
        UPLOAD,
        LoopParams(min_duration_s=2, max_duration_s=8, target_bpm=90, stretch=True, format="mp3"),
        SamplingParams(top_p=0.9, temperature=0.7, guidance_scale=5),
        JobRequest[BeatParams](job_id=3, params=BEAT),
        JobRequest[CoverParams](job_id=4, params=COVER),
        JobRequest[LoopJobParams](job_id=5, params=LOOP),
        JobRequest[MidiParams](job_id=6, params=UPLOAD),
        JobProgress(stage="generating", done=5, total=10, eta_s=1.5),
        AudioMeta(
            take=2,
            seed=11,
            licence="MIT",
            sample_rate=32_000,
            channels=2,
            continued_s=1.5,
            bpm=92.4,
            key="F minor",
            loop_error="no steady beat",
            compact_error="ffmpeg is missing",
        ),
        CompactMeta(take=2, format="mp3", bitrate_kbps=320, of="beat.wav", seed=11),
        CoverMeta(
            source="diffusion", model="stabilityai/sd-turbo", prompt="square album cover art", prompt_source="llm"
        ),
        CoverMeta(source="procedural", note="the cover model is not available"),
        LoopMeta(
            bars=4,
            bpm=120.0,
            seam_score=1.04,
            key=LoopKey(label="A minor", tonic="A", mode="minor", confidence=0.8),
            stretched=True,
            s3_keys=["loops/5/a.wav", "loops/5/a.json"],
            prompt="x",
            seed=3,
        ),
        MidiMeta(drum_hits=40, bass_notes=12, melody_notes=30, separation="demucs", source="beat #1", bpm=92.5),
    ],
    ids=lambda model: type(model).__name__,
)
def test_every_model_round_trips_through_json(model: BaseModel) -> None:
    wire = json.dumps(model.model_dump(mode="json"))
    assert type(model).model_validate(json.loads(wire)) == model


@pytest.mark.parametrize("params", [BEAT, COVER, LOOP, MIDI, UPLOAD, PACK, TRAIN], ids=lambda p: p.kind)
def test_stored_parameters_read_back_as_their_kinds_model(params: JobParams) -> None:
    stored = json.loads(json.dumps(params.model_dump(mode="json")))
    assert parse_params(params.kind, stored) == params
    assert PARAMS_BY_KIND[params.kind] is type(params)


def test_the_queue_payload_of_any_kind_names_its_own_fields_only() -> None:
    for params in (BEAT, COVER, LOOP, MIDI, PACK, TRAIN):
        payload = JobRequest[JobParams](job_id=1, params=params).model_dump(mode="json")
        assert payload["schema_version"] == 2 and payload["params"] == params.model_dump(mode="json")
        assert JobRequest[type(params)].model_validate(payload).params == params  # type: ignore[misc]


def test_each_kind_has_one_job_function() -> None:
    assert (
        {kind: kind.function for kind in JobKind}
        == dict(JOB_FUNCTIONS)
        == {
            JobKind.BEAT: "generate_beat",
            JobKind.COVER: "draw_cover",
            JobKind.LOOP: "cut_loop",
            JobKind.MIDI: "transcribe_midi",
            JobKind.PACK: "make_pack",
            JobKind.TRAIN: "train_model",
        }
    )
    assert set(PARAMS_BY_KIND) == set(JobKind)


def test_vocabularies_are_the_strings_stored_and_sent() -> None:
    assert [k.value for k in ArtifactKind] == [
        "audio", "audio_compact", "cover", "loop", "metadata", "preview", "midi", "stems", "stems_preview", "pack",
        "pack_preview",
    ]  # fmt: skip
    assert [r.value for r in Relation] == ["reroll", "extend", "edit", "loop", "midi", "cover", "remix"]
    assert JobKind("beat") is JobKind.BEAT and JobKind.BEAT == "beat"


def test_a_request_from_another_schema_version_is_refused() -> None:
    payload = JobRequest[BeatParams](job_id=1, params=_params()).model_dump(mode="json")
    payload["schema_version"] = 1
    with pytest.raises(ValidationError):
        JobRequest[BeatParams].model_validate(payload)


@pytest.mark.parametrize(
    ("request_type", "params"),
    [
        (JobRequest[BeatParams], COVER),
        (JobRequest[CoverParams], LOOP),
        (JobRequest[LoopJobParams], MIDI),
        (JobRequest[MidiParams], BEAT),
    ],
)
def test_a_payload_of_another_kind_is_refused(request_type: type[BaseModel], params: JobParams) -> None:
    with pytest.raises(ValidationError):
        request_type.model_validate({"job_id": 1, "params": params.model_dump(mode="json")})


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (BeatParams, {"prompt": "x", "duration_s": 5, "seed": 1, "temperature": 2}),
        # the fields of another kind are not placeholders any more: they are refused
        (BeatParams, {"prompt": "x", "duration_s": 5, "seed": 1, "take": 2}),
        (BeatParams, {"prompt": "x", "duration_s": 5, "seed": 1, "midi": None}),
        (CoverParams, {"prompt": "x", "seed": 1, "duration_s": 5}),
        (LoopJobParams, {"prompt": "x", "seed": 1, "bpm": 90}),
        (MidiParams, {"prompt": "x", "duration_s": 120}),
    ],
)
def test_unknown_fields_are_refused_rather_than_ignored(model: type[BaseModel], data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_artifact_metadata_written_by_older_workers_still_reads() -> None:
    """Rows outlive their worker: a take's old ``model`` key is ignored, what was not recorded is None."""
    old = AudioMeta.model_validate({"model": "facebook/musicgen-small", "seed": 5})
    assert (old.take, old.seed, old.licence, old.bpm) == (1, 5, None, None)
    assert "model" not in old.model_dump()
    loop = LoopMeta.model_validate({"bars": 2, "bpm": 120.0, "seam_score": 1.0, "key": {"label": "A minor"}})
    assert loop.key.label == "A minor" and not loop.stretched and loop.s3_error is None


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
        ({"duration_s": 241}, "duration must be at most 240"),
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


@pytest.mark.parametrize(
    ("model", "data", "phrase"),
    [
        (CoverParams, {"prompt": "x", "seed": 1, "style": "polka"}, "'polka' is not a known style"),
        (LoopJobParams, {"prompt": "x", "seed": 1, "take": 5}, "take must be at most 4"),
        (LoopJobParams, {"prompt": "x", "seed": 1, "loop": {"stretch": True}}, "stretching needs a target bpm"),
        (MidiParams, {"prompt": "x", "upload": "12/x.wav"}, "upload"),
    ],
)
def test_follow_up_kinds_explain_bad_input_too(model: type[BaseModel], data: dict[str, object], phrase: str) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    assert phrase in explain(info.value)


def test_progress_percent() -> None:
    assert JobProgress(stage="generating", done=3, total=12).percent == 25


def test_arqs_failure_result_serialises() -> None:
    """arq stores a job it gives up on with our serializer: its exception must not be a TypeError."""
    from arq.worker import JobExecutionFailed

    from beatforge.queue import dumps, loads

    assert loads(dumps({"r": JobExecutionFailed("max 2 retries exceeded")})) == {
        "r": "JobExecutionFailed: max 2 retries exceeded"
    }


@pytest.mark.parametrize(
    "changes",
    [{"name": "My Model"}, {"name": "../up"}, {"steps": 0}, {"steps": 100_000}, {"upload": "/etc/passwd"}],
)
def test_a_training_run_refuses_a_bad_name_step_count_or_upload_path(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TrainParams.model_validate({**TRAIN.model_dump(), **changes})
