"""A real HTTP server on loopback speaking OpenAI's chat-completions API, for the LLM paths' tests."""

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


class ChatServer:
    """Answers POST /v1/chat/completions according to ``mode``; records what it was sent."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.content = f'```\n"{SCENE}"\n```'  # what an "ok" answer says
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
                    content = outer.content if outer.mode == "ok" else "word " * 500
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                # In "slow" mode the client has given up by now (that is the test); its closed socket is expected.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
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
