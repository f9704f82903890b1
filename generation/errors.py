"""Generation errors. The worker turns each into a contract ``ErrorCode`` and a sentence for the user."""

from __future__ import annotations

from beatforge.contract import ErrorCode


class GenerationError(Exception):
    """A failure the user should hear about, in words they understand."""

    code: ErrorCode = ErrorCode.GENERATION_FAILED


class ModelUnavailable(GenerationError):
    code = ErrorCode.MODEL_UNAVAILABLE


class AudioParameterError(GenerationError, ValueError):
    code = ErrorCode.INVALID_REQUEST


class GenerationCancelled(GenerationError):
    code = ErrorCode.CANCELLED


class MelodyUnsupported(GenerationError):
    """A melody was given to a model that cannot follow one."""

    code = ErrorCode.INVALID_REQUEST
