"""The optional LLM, through the official ``openai`` client (the OpenAI API, Ollama, vLLM, LM Studio, ...).

Any OpenAI-compatible server works: ``base_url`` comes from the settings. The client's own retries
cover rate limits (429, honouring ``retry-after``), server errors and dropped connections; every
failure ends as an :class:`LLMError`, so callers can fall back to their templates. Whatever the model
answers is untrusted text: it is cleaned and bounded before anyone uses it.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

import openai
from openai import OpenAI
from openai.types.chat import ChatCompletion

from beatforge.config import Settings

log = logging.getLogger(__name__)

_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$", re.IGNORECASE)
#: Local servers (Ollama, vLLM) want no key, but the client refuses to start without one.
_NO_KEY = "no-key-needed"


class LLMError(Exception):
    """The LLM could not be reached, or answered something unusable. Callers fall back to templates."""


class ChatClient:
    """Chat completions with a bounded wait: worst case ``(max_retries + 1) * timeout_s`` plus back-off.

    Synchronous on purpose: its callers (cover scenes, ✨ prompts and packs in worker threads, the CLI) are.
    """

    def __init__(
        self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 20.0, max_retries: int = 2
    ) -> None:
        self.model, self.timeout_s = model, timeout_s
        self._openai = OpenAI(
            base_url=base_url.rstrip("/"), api_key=api_key or _NO_KEY, timeout=timeout_s, max_retries=max_retries
        )
        # Set after a server refused a JSON schema (400), so later calls do not pay for that round trip again.
        self.schemas_refused = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatClient | None:
        """None when no LLM is configured: every caller must work without one."""
        if not settings.llm_base_url:
            return None
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        return cls(
            settings.llm_base_url,
            settings.llm_model,
            api_key=key,
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )

    def close(self) -> None:
        """Release the connection pool (the CLI is done with the LLM long before it is done generating)."""
        self._openai.close()

    def complete(
        self,
        *,
        system: str,
        user: str,
        max_tokens: int = 200,
        temperature: float = 0.9,
        schema: dict[str, Any] | None = None,
    ) -> str:
        """The assistant's text. With ``schema`` (an OpenAI ``json_schema`` object), ask for structured output.

        Servers without structured outputs answer 400 to ``response_format``; the request is then sent
        again without it, and the caller's parser must cope with free-form JSON (it must anyway: a
        server may also accept the schema and ignore it).

        Raises:
            LLMError: unreachable, too slow, an HTTP error after the retries, or no text in the answer.
        """
        messages: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        if schema is not None and not self.schemas_refused:
            try:
                return self._create(messages, max_tokens, temperature, {"type": "json_schema", "json_schema": schema})
            except LLMError as exc:
                if not isinstance(exc.__cause__, openai.BadRequestError):
                    raise
                self.schemas_refused = True
                log.info("the LLM server refused a JSON schema; asking for plain JSON", extra={"reason": str(exc)})
        return self._create(messages, max_tokens, temperature, None)

    def _create(
        self, messages: list[Any], max_tokens: int, temperature: float, response_format: dict[str, Any] | None
    ) -> str:
        try:
            completion = self._openai.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                response_format=response_format if response_format is not None else openai.omit,  # type: ignore[arg-type]
            )
        except openai.APITimeoutError as exc:  # a subclass of APIConnectionError: check it first
            raise LLMError(f"the LLM server is too slow (no answer within {self.timeout_s:g} s)") from exc
        except openai.APIConnectionError as exc:
            raise LLMError(f"the LLM server is unreachable ({exc})") from exc
        except openai.APIStatusError as exc:
            raise LLMError(f"the LLM server answered HTTP {exc.status_code}") from exc
        except openai.APIError as exc:  # e.g. a 200 whose body is not a chat completion
            raise LLMError(f"the LLM server answered something that is not a chat completion ({exc})") from exc
        # The client hands back a non-JSON body as is, and builds models without validating them.
        if not isinstance(completion, ChatCompletion):
            raise LLMError("the LLM server answered something that is not a chat completion")
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as exc:
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
