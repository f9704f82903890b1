"""Auto-mode prompt planning, with the LLM path against a real chat-completions server on loopback."""

from __future__ import annotations

import json
import random

import pytest

from generation.prompts.auto import (
    PROMPTS_SCHEMA,
    parse_llm_prompts,
    plan_prompts,
    template_prompts,
)
from generation.prompts.llm import ChatClient, LLMError
from tests.support.chat_server import ChatServer

GOOD = [
    "calm celtic harp loop with soft strings and hand drums, 84 bpm, village at dawn",
    "tense orchestral loop with low brass stabs and taiko drums, 140 bpm, boss battle",
    "mysterious ambient loop with glassy pads and distant choir, 70 bpm, ancient ruins",
]


def _client(server: ChatServer) -> ChatClient:
    return ChatClient(server.url, "mistral", timeout_s=0.5, max_retries=0)


def test_templates_are_varied_reproducible_and_use_the_use_case() -> None:
    a = template_prompts(use_case="Background music for RPG levels.", count=20, rng=random.Random(1))
    b = template_prompts(use_case="Background music for RPG levels.", count=20, rng=random.Random(1))
    assert a == b and len(set(a)) == 20
    assert all("bpm" in p and p.endswith("for background music for rpg levels") for p in a)


def test_llm_prompts_are_used_when_valid(chat_server: ChatServer) -> None:
    chat_server.content = "Here you go:\n```json\n" + json.dumps([*GOOD, "x"]) + "\n```"
    plan = plan_prompts(use_case="RPG levels", count=3, client=_client(chat_server), seed=1)
    assert (plan.source, plan.prompts, plan.note) == ("llm", tuple(GOOD), None)
    sent = chat_server.requests[0]["body"]["messages"][1]["content"]
    assert "RPG levels" in sent and "3 varied prompts" in sent


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        ("I cannot help with that.", "ok", "not answer with a JSON array"),
        ('["unterminated', "ok", "not answer with a JSON array"),
        ("[1, 2, 3]", "ok", "not an array of strings"),
        (json.dumps(["\x00\x07", "ok", *GOOD[:1]]), "ok", "1 usable prompts; 3 were asked for"),
        ("", "garbage", "not a chat completion"),
        ("", "slow", "too slow"),
        ("", "error", "HTTP 500"),
        ('{"prompts": "not a list"}', "ok", "not an array of strings"),
    ],
)
def test_a_bad_llm_answer_falls_back_to_templates_and_says_why(
    chat_server: ChatServer, content: str, mode: str, reason: str
) -> None:
    chat_server.content, chat_server.mode = content, mode
    plan = plan_prompts(use_case="RPG levels", count=3, client=_client(chat_server), seed=1)
    assert plan.source == "templates" and len(plan.prompts) == 3
    assert plan.note is not None and reason in plan.note


def test_without_an_llm_the_templates_say_so() -> None:
    plan = plan_prompts(use_case="stream intros", count=2, client=None, seed=3)
    assert plan.source == "templates" and "no LLM is configured" in (plan.note or "")


@pytest.mark.parametrize(("use_case", "count"), [("  ", 3), ("ok", 0), ("ok", 501)])
def test_bad_requests_are_refused(use_case: str, count: int) -> None:
    with pytest.raises(ValueError):
        plan_prompts(use_case=use_case, count=count, client=None, seed=1)


def test_overlong_prompts_are_dropped() -> None:
    with pytest.raises(LLMError, match="0 usable"):
        parse_llm_prompts(json.dumps(["word " * 200]), count=1)


def test_templates_carry_the_requested_tempo_and_key() -> None:
    prompts = template_prompts(use_case="RPG levels", count=30, rng=random.Random(2), bpm=100, key="A minor")
    assert all(", 100 bpm," in p and " in A minor " in p for p in prompts)
    assert not any(f"{n} bpm" in p for p in prompts for n in range(70, 150) if n != 100)


def test_the_llm_is_asked_for_the_tempo_with_a_schema_and_off_tempo_answers_are_corrected(
    chat_server: ChatServer,
) -> None:
    chat_server.content = json.dumps({"prompts": GOOD})  # 84, 140 and 70 bpm, for a 100 bpm batch
    plan = plan_prompts(use_case="RPG levels", count=3, client=_client(chat_server), seed=1, bpm=100, key="f#m")
    assert plan.source == "llm"
    assert (
        plan.prompts[0]
        == "calm celtic harp loop with soft strings and hand drums, 100 bpm, village at dawn, in F# minor"
    )
    assert all("100 bpm" in p and p.count("bpm") == 1 and "F# minor" in p for p in plan.prompts)
    body = chat_server.requests[0]["body"]
    assert body["response_format"] == {"type": "json_schema", "json_schema": PROMPTS_SCHEMA}
    assert "exactly 100 bpm" in body["messages"][1]["content"] and "F# minor" in body["messages"][1]["content"]


def test_an_answer_that_ignores_the_schema_is_still_used(chat_server: ChatServer) -> None:
    chat_server.content = "Sure!\n```json\n" + json.dumps(GOOD) + "\n```"  # a bare array, not {"prompts": ...}
    plan = plan_prompts(use_case="RPG levels", count=3, client=_client(chat_server), seed=1, bpm=100)
    assert plan.source == "llm" and all("100 bpm" in p for p in plan.prompts)


def test_a_server_refusing_schemas_gets_plain_json(chat_server: ChatServer) -> None:
    chat_server.mode, chat_server.content = "no-schemas", json.dumps(GOOD)
    plan = plan_prompts(use_case="RPG levels", count=3, client=_client(chat_server), seed=1, bpm=100)
    assert plan.source == "llm" and len(plan.prompts) == 3
    assert ["response_format" in r["body"] for r in chat_server.requests] == [True, False]


def test_a_rate_limited_llm_is_retried(chat_server: ChatServer) -> None:
    chat_server.fail_first, chat_server.retry_after, chat_server.content = [429], "0.05", json.dumps({"prompts": GOOD})
    client = ChatClient(chat_server.url, "mistral", timeout_s=5, max_retries=2)
    plan = plan_prompts(use_case="RPG levels", count=3, client=client, seed=1, bpm=100)
    assert plan.source == "llm" and len(chat_server.requests) == 2


def test_a_failing_llm_gives_templates_at_the_requested_tempo(chat_server: ChatServer) -> None:
    chat_server.mode = "garbage"
    plan = plan_prompts(use_case="RPG levels", count=5, client=_client(chat_server), seed=1, bpm=100)
    assert plan.source == "templates" and all(", 100 bpm," in p for p in plan.prompts)


@pytest.mark.parametrize("key", ["H minor", "minor", "C dorian", ""])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="is not a key"):
        plan_prompts(use_case="ok", count=1, client=None, seed=1, key=key)
