"""A real HTTP server on loopback speaking OpenAI's chat-completions API, for the LLM paths' tests.

It answers in the wire format the ``openai`` client parses (``chat.completion`` objects, error bodies,
``retry-after`` headers), so the tests exercise the real client: its retries, timeouts and parsing.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SCENE = "a lone astronaut on a violet dune under two moons, neon haze, cinematic, painted"


def completion(content: str, model: str = "stand-in") -> dict[str, Any]:
    """A chat-completions answer as OpenAI sends it."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class ChatServer:
    """Answers POST /v1/chat/completions according to ``mode``; records what it was sent.

    Modes: ``ok``, ``slow`` (1 s late), ``garbage`` (HTML), ``no-choices``, ``too-long``, ``error`` (500
    every time), ``no-schemas`` (400 to any ``response_format``, like a server without structured outputs).
    ``fail_first`` lists statuses answered, in order, before the mode applies (e.g. ``[429]``), each with
    ``retry_after`` as its ``retry-after`` header when set.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.content = f'```\n"{SCENE}"\n```'  # what an "ok" answer says
        self.fail_first: list[int] = []
        self.retry_after: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []  # time.monotonic() of each request, to check the client's back-off
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                outer.times.append(time.monotonic())
                if outer.fail_first:
                    self._error(outer.fail_first.pop(0))
                    return
                if outer.mode == "error":
                    self._error(500)
                    return
                if outer.mode == "no-schemas" and "response_format" in body:
                    self._error(400, "response_format is not supported")
                    return
                if outer.mode == "slow":
                    time.sleep(1.0)
                if outer.mode == "garbage":
                    self._send(200, b"<html>not json</html>", "text/html")
                elif outer.mode == "no-choices":
                    self._send(200, json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode())
                else:
                    content = "word " * 500 if outer.mode == "too-long" else outer.content
                    self._send(200, json.dumps(completion(content, body.get("model", ""))).encode())

            def _error(self, status: int, message: str = "stand-in failure") -> None:
                payload = json.dumps({"error": {"message": message, "type": "test", "code": None}}).encode()
                headers = {"retry-after": outer.retry_after} if outer.retry_after else {}
                self._send(status, payload, headers=headers)

            def _send(
                self,
                status: int,
                payload: bytes,
                content_type: str = "application/json",
                headers: dict[str, str] | None = None,
            ) -> None:
                # In "slow" mode the client has given up by now (that is the test); its closed socket is expected.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
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
