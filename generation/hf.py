"""Typed doors into transformers, where its own annotations are loose or missing.

transformers overrides ``Module.eval`` without annotations and wraps ``Module.to`` so that a type checker binds
the device as ``self``. Called on a variable typed by ``torch.nn.Module`` (the bound below), both are checked
against torch's own signatures and still run transformers' overrides. A composite model's sub-configs (MusicGen's
text encoder, codec and decoder) are typed ``dict | config | None`` because they may be given as dicts; once a
model is built they are configs, which :func:`sub_config` checks.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from transformers import PreTrainedConfig

from generation.errors import ModelUnavailable

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def evaluating(model: ModuleT) -> ModuleT:
    """``model`` in inference mode (dropout off): ``model.eval()``, with the model's own type kept."""
    model.eval()
    return model


def on_device(model: ModuleT, device: str | torch.device) -> ModuleT:
    """``model`` moved to ``device`` in place: ``model.to(device)``, with the model's own type kept."""
    model.to(device)
    return model


def sub_config(config: dict[Any, Any] | PreTrainedConfig | None, *, part: str) -> PreTrainedConfig:
    """A built composite model's ``part`` config (e.g. ``config.audio_encoder``).

    Raises:
        ModelUnavailable: the model was built without that part (a broken checkpoint).
    """
    if not isinstance(config, PreTrainedConfig):
        raise ModelUnavailable(f"the model has no {part} configuration")
    return config
