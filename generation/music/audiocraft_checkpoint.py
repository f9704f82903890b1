"""Reading what audiocraft writes, safely: torch files whose pickles name classes we do not import
(omegaconf configs, audiocraft's own), and the wrappers around the state dict (``export_lm``'s, training
checkpoints'). ``generation/music/audiocraft_import.py`` turns what this reads into a transformers MusicGen.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

import torch
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information and no stubs are installed
from torch import Tensor

from generation.errors import ModelUnavailable

log = logging.getLogger(__name__)


class AudiocraftImportError(ModelUnavailable):
    """The checkpoint, or the base model it needs, cannot become a transformers MusicGen."""


class _Opaque:
    """Stands in for a class a checkpoint names but we neither trust nor need (omegaconf's DictConfig...).

    Registered as a "safe global" for ``torch.load(weights_only=True)``, so nothing from the file is
    imported or run: the object only keeps the arguments and state the pickle hands it.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:  # noqa: ARG004
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _opaque_class(qualname: str) -> type[_Opaque]:
    return type(qualname.rsplit(".", 1)[-1], (_Opaque,), {"qualname": qualname})


def load_torch_file(path: Path) -> Any:
    """``torch.load`` without running code from the file: tensors, containers and inert stand-ins.

    Raises:
        AudiocraftImportError: not a file torch can read.
    """
    path = Path(path)
    if not path.is_file():
        raise AudiocraftImportError(f"{path} does not exist or is not a file")
    stand_ins: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = []
    is_zip = zipfile.is_zipfile(path)
    if is_zip:  # the current torch.save format; the names it needs can be listed without loading
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as exc:  # a damaged archive: torch.load below says it better
            log.debug("could not list the checkpoint's globals: %s", exc)
            names = []
        stand_ins = [(_opaque_class(name), name) for name in names]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as exc:  # a foreign file makes the unpickler fail in any number of ways
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise AudiocraftImportError(
            f"{path.name} is not a torch checkpoint beatforge can read ({first}); "
            "export it with audiocraft's `export_lm` (audiocraft.utils.export) first"
        ) from exc


def _plain(value: Any, depth: int = 0) -> Any:
    """A stand-in omegaconf config (or any nesting of them) as plain dicts, lists and scalars."""
    if depth > 50:
        return None
    if isinstance(value, _Opaque):
        state = getattr(value, "state", value.__dict__)
        if isinstance(state, tuple) and state and isinstance(state[0], dict):  # (dict, slots) pickles
            state = state[0]
        if isinstance(state, dict):
            if "_content" in state:
                return _plain(state["_content"], depth + 1)
            if "_val" in state:
                return _plain(state["_val"], depth + 1)
        return None
    if isinstance(value, dict):
        return {str(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in value]
    return value


def _config(package: dict[str, Any]) -> dict[str, Any]:
    """The experiment config audiocraft stores beside the weights (YAML text once exported)."""
    raw = package.get("xp.cfg")
    if isinstance(raw, str):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError:
            return {}
    raw = _plain(raw)
    return raw if isinstance(raw, dict) else {}


def _is_state_dict(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, Tensor) for v in value.values())


def unwrap_checkpoint(package: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The flat state dict inside whatever audiocraft wrapped it in, and its config (maybe empty).

    Handles a bare state dict, ``export_lm``'s ``{"best_state": sd, "xp.cfg": yaml}``, and training
    checkpoints ``{"best_state": {"model": sd}, "fsdp_best_state": ..., "model": sd, "xp.cfg": ...}``.
    """
    if _is_state_dict(package):
        return dict(package), {}
    if isinstance(package, dict):
        cfg = _config(package)
        for key in ("fsdp_best_state", "best_state", "model", "state_dict"):
            inner = package.get(key)
            if isinstance(inner, dict) and not _is_state_dict(inner) and _is_state_dict(inner.get("model")):
                inner = inner["model"]
            if _is_state_dict(inner):
                return {k: v for k, v in inner.items() if isinstance(v, Tensor)}, cfg
        if "pretrained" in package:
            return {}, {"pretrained": str(package["pretrained"]), **cfg}
    raise AudiocraftImportError(f"{path.name} holds no model weights (no state dict, 'best_state' or 'model' in it)")
