"""The LLM client against a real HTTP server on loopback that speaks the chat-completions API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from beatforge.config import Settings
from beatforge.llm import ChatClient, LLMError, clean_llm_text
from generation.cover import CoverMaker

SCENE = "a lone astronaut on a violet dune under two moons, neon haze, cinematic, painted"


class ChatServer:
    """Answers POST /v1/chat/completions according to ``mode``; records what it was sent."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if outer.mode == "slow":
                    time.sleep(1.0)
                payload: bytes
                if outer.mode == "garbage":
                    payload = b"<html>not json</html>"
                elif outer.mode == "no-choices":
                    payload = json.dumps({"id": "x", "choices": []}).encode()
                elif outer.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                else:
                    content = f'```\n"{SCENE}"\n```' if outer.mode == "ok" else "word " * 500
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return  # keep test output clean; requests are recorded above

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


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
