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
        ("garbage", "not a chat completion"),
        ("no-choices", "no choices"),
        ("slow", "too slow"),
    ],
)
def test_bad_answers_and_timeouts_raise_llm_error(chat_server: ChatServer, mode: str, message: str) -> None:
    chat_server.mode = mode
    client = ChatClient(chat_server.url, "m", timeout_s=0.5, max_retries=0)
    started = time.monotonic()
    with pytest.raises(LLMError, match=message):
        client.complete(system="s", user="u")
    assert time.monotonic() - started < 0.95  # the timeout, not the server, decided


def test_a_rate_limit_is_retried_after_the_servers_delay(chat_server: ChatServer) -> None:
    chat_server.fail_first, chat_server.retry_after = [429], "1"
    client = ChatClient(chat_server.url, "m", timeout_s=5, max_retries=2)
    assert clean_llm_text(client.complete(system="s", user="u"), max_chars=400) == SCENE
    first, second = chat_server.times
    assert second - first >= 0.95  # retry-after: 1 honoured (the client's own back-off starts at 0.5 s)


def test_a_server_error_is_retried_then_reported(chat_server: ChatServer) -> None:
    chat_server.mode, chat_server.retry_after = "error", "0.05"
    client = ChatClient(chat_server.url, "m", timeout_s=5, max_retries=2)
    with pytest.raises(LLMError, match="HTTP 500"):
        client.complete(system="s", user="u")
    assert len(chat_server.requests) == 3  # the first try and two retries


@pytest.mark.parametrize("retries", [0, 4])
def test_the_retries_setting_bounds_the_tries(chat_server: ChatServer, retries: int) -> None:
    chat_server.mode, chat_server.retry_after = "error", "0.01"
    client = ChatClient.from_settings(_settings(chat_server.url, llm_max_retries=retries, llm_timeout_s=5))
    assert client is not None
    with pytest.raises(LLMError, match="HTTP 500"):
        client.complete(system="s", user="u")
    assert len(chat_server.requests) == retries + 1


def test_a_transient_server_error_is_survived(chat_server: ChatServer) -> None:
    chat_server.fail_first, chat_server.retry_after = [500, 503], "0.05"
    client = ChatClient(chat_server.url, "m", timeout_s=5, max_retries=2)
    assert clean_llm_text(client.complete(system="s", user="u"), max_chars=400) == SCENE
    assert len(chat_server.requests) == 3


def test_a_slow_server_is_bounded_by_timeout_and_retries(chat_server: ChatServer) -> None:
    chat_server.mode = "slow"
    client = ChatClient(chat_server.url, "m", timeout_s=0.3, max_retries=1)
    started = time.monotonic()
    with pytest.raises(LLMError, match="too slow"):
        client.complete(system="s", user="u")
    assert len(chat_server.requests) == 2 and time.monotonic() - started < 2.0


def test_a_refused_schema_is_asked_again_without_it_once(chat_server: ChatServer) -> None:
    chat_server.mode, chat_server.content = "no-schemas", '["a b c"]'
    client = ChatClient(chat_server.url, "m", timeout_s=5, max_retries=0)
    schema = {"name": "x", "schema": {"type": "object"}}
    assert client.complete(system="s", user="u", schema=schema) == '["a b c"]'
    assert client.complete(system="s", user="u", schema=schema) == '["a b c"]'
    formats = [r["body"].get("response_format") for r in chat_server.requests]
    assert formats == [{"type": "json_schema", "json_schema": schema}, None, None]


def test_a_server_without_a_key_setting_gets_no_real_key(chat_server: ChatServer) -> None:
    ChatClient(chat_server.url, "m", timeout_s=5).complete(system="s", user="u")
    assert chat_server.requests[0]["auth"] != "Bearer sk-test"


def test_unreachable_server_raises() -> None:
    with pytest.raises(LLMError, match="unreachable"):
        ChatClient("http://127.0.0.1:9", "m", timeout_s=0.5, max_retries=0).complete(system="s", user="u")


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
