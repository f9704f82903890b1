"""The LLM client against a real HTTP server on loopback that speaks the chat-completions API."""

from __future__ import annotations

import time

import pytest

from beatforge.config import Settings
from generation.cover.maker import CoverMaker
from generation.prompts.llm import ChatClient, LLMError, clean_llm_text
from tests.support.chat_server import SCENE, ChatServer


def _settings(url: str | None, **overrides: object) -> Settings:
    base = {"llm_base_url": url, "llm_model": "llama3.2", "llm_api_key": "sk-test", "llm_timeout_s": 0.5}
    return Settings(_env_file=None, **(base | overrides))  # type: ignore[call-arg, arg-type]


def test_no_llm_configured_means_no_client() -> None:
    assert ChatClient.from_settings(_settings(None)) is None


def test_completion_is_sent_openai_style_and_cleaned(chat_server: ChatServer) -> None:
    client = ChatClient.from_settings(_settings(chat_server.url))
    assert client is not None
    answer = client.complete(system="sys", user="describe")
    assert clean_llm_text(answer, max_chars=400) == SCENE
    (sent,) = chat_server.requests
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["body"]["model"] == "llama3.2" and [m["role"] for m in sent["body"]["messages"]] == ["system", "user"]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("garbage", "not JSON"),
        ("no-choices", "no choices"),
        ("error", "HTTP 500"),
        ("slow", "unreachable or too slow"),
    ],
)
def test_bad_answers_and_timeouts_raise_llm_error(chat_server: ChatServer, mode: str, message: str) -> None:
    chat_server.mode = mode
    client = ChatClient.from_settings(_settings(chat_server.url))
    assert client is not None
    started = time.monotonic()
    with pytest.raises(LLMError, match=message):
        client.complete(system="s", user="u")
    assert time.monotonic() - started < 0.95  # the timeout, not the server, decided


def test_unreachable_server_raises() -> None:
    with pytest.raises(LLMError, match="unreachable"):
        ChatClient("http://127.0.0.1:9", "m", timeout_s=0.5).complete(system="s", user="u")


@pytest.mark.parametrize("text", ["", "   ", "```\n```", "\x00\x07"])
def test_empty_answers_are_refused(text: str) -> None:
    with pytest.raises(LLMError, match="nothing usable"):
        clean_llm_text(text, max_chars=100)


def test_cover_prompt_written_by_the_llm(chat_server: ChatServer) -> None:
    settings = _settings(chat_server.url, cover_model="debug", cover_safety_check=False, cover_size=64)
    cover = CoverMaker(settings, device="cpu").make(
        description="spacey hip hop", seed=1, style="moody-hum", mood="calm"
    )
    assert cover.source == "diffusion" and cover.prompt_source == "llm"
    assert cover.prompt is not None and SCENE in cover.prompt
    brief = chat_server.requests[0]["body"]["messages"][1]["content"]
    assert "spacey hip hop" in brief and "Moody hum-driven" in brief and "Calm / relaxed" in brief


@pytest.mark.parametrize("mode", ["garbage", "too-long", "slow"])
def test_a_failing_llm_falls_back_to_the_template(chat_server: ChatServer, mode: str) -> None:
    chat_server.mode = mode
    settings = _settings(chat_server.url, cover_model="debug", cover_safety_check=False, cover_size=64)
    cover = CoverMaker(settings, device="cpu").make(description="spacey hip hop", seed=1)
    assert cover.source == "diffusion" and cover.prompt_source == "template"
    assert cover.prompt is not None and "inspired by: spacey hip hop" in cover.prompt
