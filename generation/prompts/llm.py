"""A minimal client for OpenAI-compatible chat completions (the OpenAI API, Ollama, vLLM, LM Studio, ...).

Standard library only, so the bot and the worker can both use it without new dependencies.
Whatever the model answers is untrusted text: it is cleaned and bounded before anyone uses it.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from beatforge.config import Settings

log = logging.getLogger(__name__)

_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$", re.IGNORECASE)


class LLMError(Exception):
    """The LLM could not be reached, or answered something unusable. Callers fall back to templates."""


@dataclass(frozen=True, slots=True)
class ChatClient:
    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 20.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatClient | None:
        """None when no LLM is configured: every caller must work without one."""
        if not settings.llm_base_url:
            return None
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        return cls(settings.llm_base_url.rstrip("/"), settings.llm_model, key, settings.llm_timeout_s)

    def complete(self, *, system: str, user: str, max_tokens: int = 200, temperature: float = 0.9) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload: Any = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise LLMError(f"the LLM server answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise LLMError(f"the LLM server is unreachable or too slow ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise LLMError("the LLM server answered something that is not JSON") from exc
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError("the LLM answer has no choices[0].message.content") from exc
        if not isinstance(content, str):
            raise LLMError("the LLM answer's content is not text")
        return content


def clean_llm_text(text: str, *, max_chars: int) -> str:
    """One line of plain text: fences, quotes and control characters removed, bounded in length.

    Raises:
        LLMError: nothing usable is left, or the answer is longer than ``max_chars``.
    """
    text = _FENCE.sub("", text.strip())
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = " ".join(text.split()).strip(" \"'`")
    if not text:
        raise LLMError("the LLM answered with nothing usable")
    if len(text) > max_chars:
        raise LLMError(f"the LLM answer is {len(text)} characters long; at most {max_chars} are accepted")
    return text
