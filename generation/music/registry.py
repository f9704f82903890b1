"""The model registry: which music models a worker can run, by short name, on which engine, and where their weights are.

Three layers, looked up in this order, make one registry:

1. **Built-ins** (:data:`BUILTINS`): Meta's official MusicGen checkpoints (``small`` → ``facebook/musicgen-small``,
   ..., ``stereo-melody``; CC-BY-NC), ACE-Step 1.5's diffusers checkpoints (``acestep``, ``acestep-base``; MIT),
   and ``debug`` / ``debug-acestep``, tiny random models built in code. They cannot be removed, and no custom
   entry may take their names.
2. **Database rows** (``registered_models``, ``storage/model_registry.py``): what admins add from Discord.
3. **The JSON file** (``settings.model_registry_file``): entries added with :meth:`ModelRegistry.register`
   (CLI, scripts), written atomically; edits by other processes are picked up on the next lookup.

A row and a file entry with the same name: the row wins. The worker builds its view once at start-up
with :func:`load_registry` (built-ins + file + rows); a running worker sees rows added later when it
restarts, or when its cache is handed ``registry.with_rows(new_rows)``.

A name that is not registered still works when it is an existing directory or looks like a Hugging
Face id (``owner/name``): it passes through as an ad-hoc base model, so ``facebook/musicgen-small``
and test directories keep working. Anything else is :class:`ModelUnavailable`, listing the known names.

A ``lora`` entry is a base model (its registry name) plus a peft adapter directory saved with
``save_pretrained`` from the MusicGen decoder (``get_peft_model(model.decoder, config)``);
``generation/models.py`` loads the base and merges the adapter into it.

This module does not import torch: the bot may validate entries with it.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from beatforge.engines import ENGINE_NAMES, capabilities
from generation.errors import ModelUnavailable
from storage.files import atomic_write_text

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

ModelKind = Literal["base", "finetune", "lora"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)

#: Registry names: lowercase, no slash, so a name is never mistaken for a directory or a Hugging Face id.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: ``owner/name`` as the Hugging Face Hub spells repository ids.
_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9_.-]{1,96}$")

META_LICENCE = "CC-BY-NC 4.0 (non-commercial)"
ACESTEP_LICENCE = "MIT"
#: ``generation.music.tiny.DEBUG_MODEL`` and ``generation.music.acestep_tiny.DEBUG_ACESTEP``, repeated so that
#: this module never imports torch.
DEBUG_MODEL = "debug"
DEBUG_ACESTEP = "debug-acestep"
#: Sources that are built in code, not read from a directory or the Hub.
BUILT_IN_CODE = (DEBUG_MODEL, DEBUG_ACESTEP)
_FILE_VERSION = 1
_UNREAD = object()


class RegistryError(ValueError):
    """An entry that cannot be registered or removed, with the reason in words."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model a worker can run.

    ``source`` is a Hugging Face id or a local directory; for a ``lora``, the adapter (its base model
    is ``base``, a registry name). ``melody``: takes a melody (chroma) input; ``stereo``: two channels.
    ``engine``: what runs it (``beatforge.engines``); a lora's is its base's.
    """

    name: str
    source: str
    kind: ModelKind = "base"
    base: str | None = None
    licence: str = ""
    description: str = ""
    melody: bool = False
    stereo: bool = False
    engine: str = "musicgen"

    def __post_init__(self) -> None:
        if self.engine not in ENGINE_NAMES:
            raise RegistryError(f"engine must be one of {', '.join(ENGINE_NAMES)}, not {self.engine!r}")
        if self.kind not in MODEL_KINDS:
            raise RegistryError(f"kind must be one of {', '.join(MODEL_KINDS)}, not {self.kind!r}")
        if (self.kind == "lora") != (self.base is not None):
            raise RegistryError(f"{self.name!r}: a lora needs a base model (its registry name); other kinds take none")
        if not self.source:
            raise RegistryError(f"{self.name!r}: the source must not be empty")

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | object) -> ModelSpec:
        """From a JSON object or anything with the same attributes (``storage.model_registry.ModelRow``)."""
        get = data.get if isinstance(data, Mapping) else lambda key, default=None: getattr(data, key, default)
        return cls(
            name=str(get("name")),
            source=str(get("source", "")),
            kind=get("kind", "base"),
            base=get("base"),
            licence=str(get("licence", "") or ""),
            description=str(get("description", "") or ""),
            melody=bool(get("melody", False)),
            stereo=bool(get("stereo", False)),
            engine=str(get("engine", "musicgen") or "musicgen"),
        )

    def to_data(self) -> dict[str, Any]:
        return asdict(self)


def _official(name: str, params: str, *, melody: bool = False, stereo: bool = False) -> ModelSpec:
    what = "text + melody to music" if melody else "text to music"
    return ModelSpec(
        name=name,
        source=f"facebook/musicgen-{name}",
        licence=META_LICENCE,
        description=f"Meta's MusicGen {params} parameters, {what}, {'stereo' if stereo else 'mono'}, 32 kHz",
        melody=melody,
        stereo=stereo,
    )


def _acestep(name: str, variant: str, repo: str, what: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        source=f"ACE-Step/acestep-v15-{repo}-diffusers",
        licence=ACESTEP_LICENCE,
        description=f"ACE-Step 1.5 XL {variant} (diffusers), {what}; tempo, key and metre as controls, 48 kHz stereo",
        stereo=True,
        engine="acestep",
    )


#: The official checkpoints and the debug models, by registry name.
BUILTINS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _official("small", "300M"),
        _official("medium", "1.5B"),
        _official("large", "3.3B"),
        _official("melody", "1.5B", melody=True),
        _official("stereo-small", "300M", stereo=True),
        _official("stereo-medium", "1.5B", stereo=True),
        _official("stereo-large", "3.3B", stereo=True),
        _official("stereo-melody", "1.5B", melody=True, stereo=True),
        _acestep("acestep", "turbo", "xl-turbo", "8 steps, guidance distilled in"),
        _acestep("acestep-base", "base", "xl-base", "more steps with guidance, more variety"),
        ModelSpec(
            name=DEBUG_MODEL,
            source=DEBUG_MODEL,
            licence="none needed (random weights built in code)",
            description="tiny random MusicGen for tests and CI: noise-like audio, no download",
        ),
        ModelSpec(
            name=DEBUG_ACESTEP,
            source=DEBUG_ACESTEP,
            licence="none needed (random weights built in code)",
            description="tiny random ACE-Step for tests and CI: noise-like audio, no download",
            stereo=True,
            engine="acestep",
        ),
    )
}
_BUILTIN_BY_SOURCE = {spec.source: spec for spec in BUILTINS.values()}


def is_local_source(source: str) -> bool:
    """A directory path (existing or not) rather than a Hugging Face id or ``debug``."""
    return source.startswith(("/", "./", "../", "~", ".\\")) or Path(source).expanduser().is_dir()


def looks_like_hf_id(source: str) -> bool:
    return bool(_HF_ID.match(source)) and ".." not in source


def _ad_hoc(name: str) -> ModelSpec:
    """An unregistered directory or Hugging Face id, run as a base model under its own name."""
    official = _BUILTIN_BY_SOURCE.get(name)
    if official is not None:  # facebook/musicgen-small: the built-in's facts, under the name asked for
        return replace(official, name=name)
    where = "a local directory" if is_local_source(name) else "a Hugging Face id"
    # a diffusers pipeline directory is an ACE-Step model; anything else is taken for MusicGen
    engine = "acestep" if (Path(name).expanduser() / "model_index.json").is_file() else "musicgen"
    return ModelSpec(name=name, source=name, licence="unknown", description=f"unregistered: {where}", engine=engine)


def _marker(spec: ModelSpec) -> str:
    """The file that makes a directory a model of ``spec``'s kind and engine."""
    if spec.kind == "lora":
        # peft's adapters (MusicGen) or diffusers' save_lora_weights (ACE-Step)
        return "adapter_config.json" if spec.engine == "musicgen" else "pytorch_lora_weights.safetensors"
    return "config.json" if spec.engine == "musicgen" else "model_index.json"


class ModelRegistry:
    """Built-ins + database rows + a JSON file; thread-safe.

    Args:
        path: the JSON file of custom entries (need not exist yet); None: no file (built-ins and rows).
        rows: database rows (``storage.model_registry.list_models``) or any objects/mappings with
            :class:`ModelSpec`'s fields. Rows that are not valid entries are skipped with a warning.
    """

    def __init__(self, path: Path | None = None, *, rows: Iterable[object] = ()) -> None:
        self.path = path.expanduser() if path is not None else None
        self._lock = threading.RLock()
        self._rows = self._valid_entries((ModelSpec.from_data, row) for row in rows)
        self._file: dict[str, ModelSpec] = {}
        self._file_stamp: object = _UNREAD
        self._file_error: str | None = None
        self._reload_file()

    def with_rows(self, rows: Iterable[object]) -> ModelRegistry:
        """The same built-ins and file with these database rows (replacing any this registry had)."""
        return ModelRegistry(self.path, rows=rows)

    # -- lookups --------------------------------------------------------------------------------------

    def get(self, name: str) -> ModelSpec:
        """The spec for a registry name, or an ad-hoc base spec for a directory or ``owner/name`` id.

        Raises:
            ModelUnavailable: anything else; the message lists the known names.
        """
        with self._lock:
            self._reload_file()
            spec = BUILTINS.get(name) or self._rows.get(name) or self._file.get(name)
            if spec is not None:
                return spec
            if Path(name).expanduser().is_dir() or (looks_like_hf_id(name) and not is_local_source(name)):
                return _ad_hoc(name)
            what = f"model directory {name} does not exist" if is_local_source(name) else f"unknown model {name!r}"
            raise ModelUnavailable(
                f"{what}: use one of {', '.join(self.names())}, a local model directory, "
                "or a Hugging Face id (owner/name)"
            )

    def base_of(self, spec: ModelSpec) -> ModelSpec:
        """A lora's base model.

        Raises:
            ModelUnavailable: the base is no longer registered, or is itself a lora.
        """
        if spec.base is None:
            raise ValueError(f"{spec.name!r} is a {spec.kind}, not a lora")
        with self._lock:
            self._reload_file()
            base = self._registered(spec.base)
        if base is None or base.kind == "lora":
            raise ModelUnavailable(f"lora {spec.name!r} needs base model {spec.base!r}, which is not registered")
        return base

    def names(self) -> builtins.list[str]:
        return [spec.name for spec in self.list()]

    def __contains__(self, name: object) -> bool:
        with self._lock:
            self._reload_file()
            return isinstance(name, str) and self._registered(name) is not None

    # -- edits (the JSON file) ------------------------------------------------------------------------

    def register(self, spec: ModelSpec, *, replace_existing: bool = False, check_source: bool = True) -> ModelSpec:
        """Add ``spec`` to the JSON file and return it as stored (a lora takes its base's melody/stereo).

        Raises:
            RegistryError: a bad or taken name, a lora whose base is unknown or a lora, a local source
                that is not a model (or adapter) directory, a source that is neither a directory nor
                a Hugging Face id, no file configured, or an unreadable file (left as it is).
        """
        with self._lock:
            if self.path is None:
                raise RegistryError("this registry has no file to write to (settings.model_registry_file)")
            self._reload_file()
            if self._file_error is not None:
                raise RegistryError(f"{self.path} cannot be read, so it is left alone: {self._file_error}")
            if spec.name in BUILTINS:
                raise RegistryError(f"{spec.name!r} is a built-in model and cannot be replaced")
            if spec.name in self._rows:
                raise RegistryError(f"a model named {spec.name!r} is registered in the database; change it there")
            if spec.name in self._file and not replace_existing:
                raise RegistryError(f"a model named {spec.name!r} is already registered")
            stored = self._check(spec, known={**self._file, **self._rows})
            if check_source:
                self._check_source(stored)
            entries = dict(self._file) | {stored.name: stored}
            self._write(entries)
            return stored

    def remove(self, name: str) -> ModelSpec:
        """Remove an entry from the JSON file and return it.

        Raises:
            RegistryError: a built-in, a database row (remove it there), an unknown name, or the
                base of a registered lora.
        """
        with self._lock:
            self._reload_file()
            if name in BUILTINS:
                raise RegistryError(f"{name!r} is a built-in model and cannot be removed")
            if name not in self._file:
                if name in self._rows:
                    raise RegistryError(f"{name!r} is registered in the database; remove it there")
                raise RegistryError(f"no model named {name!r} is registered")
            if self._file_error is not None:
                raise RegistryError(f"{self.path} cannot be read, so it is left alone: {self._file_error}")
            users = [s.name for s in {**self._file, **self._rows}.values() if s.base == name]
            if users:
                raise RegistryError(f"{name!r} is the base of {', '.join(sorted(users))}; remove those first")
            removed = self._file[name]
            self._write({k: v for k, v in self._file.items() if k != name})
            return removed

    def list(self) -> builtins.list[ModelSpec]:
        """Built-ins first (in their order), then custom entries by name."""
        with self._lock:
            self._reload_file()
            custom = {**self._file, **self._rows}
            return [*BUILTINS.values(), *(custom[name] for name in sorted(custom))]

    # -- internals ------------------------------------------------------------------------------------

    def _registered(self, name: str) -> ModelSpec | None:
        return BUILTINS.get(name) or self._rows.get(name) or self._file.get(name)

    @staticmethod
    def _check(spec: ModelSpec, *, known: Mapping[str, ModelSpec]) -> ModelSpec:
        """Structure only (no disk): the name, and a lora's base. Returns the spec as it will be stored."""
        if not NAME_PATTERN.match(spec.name):
            raise RegistryError(
                f"{spec.name!r} is not a valid model name: 1-64 lowercase letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if spec.kind != "lora":
            return spec
        assert spec.base is not None  # ModelSpec checks it
        base = BUILTINS.get(spec.base) or known.get(spec.base)
        if base is None:
            raise RegistryError(f"lora {spec.name!r}: base model {spec.base!r} is not registered")
        if base.kind == "lora":
            raise RegistryError(f"lora {spec.name!r}: base {spec.base!r} is itself a lora")
        return replace(spec, melody=base.melody, stereo=base.stereo, engine=base.engine)

    @staticmethod
    def _check_source(spec: ModelSpec) -> None:
        if spec.source in BUILT_IN_CODE and spec.kind != "lora":
            return
        if is_local_source(spec.source):
            directory = Path(spec.source).expanduser()
            marker = _marker(spec)
            if not directory.is_dir():
                raise RegistryError(f"{spec.name!r}: source directory {spec.source} does not exist")
            if not (directory / marker).is_file():
                what = f"a {'LoRA adapter' if spec.kind == 'lora' else 'model'} for {capabilities(spec.engine).label}"
                raise RegistryError(f"{spec.name!r}: {spec.source} has no {marker}, so it is not {what}")
        elif not looks_like_hf_id(spec.source):
            raise RegistryError(
                f"{spec.name!r}: source {spec.source!r} is neither a directory nor a Hugging Face id (owner/name)"
            )

    def _valid_entries(self, items: Iterable[tuple[Any, object]]) -> dict[str, ModelSpec]:
        """Specs from raw entries, skipping (with a warning) any that are malformed or clash with a built-in.

        A lora's base is checked at lookup (:meth:`base_of`), since it may live in the other layer.
        """
        entries: dict[str, ModelSpec] = {}
        for make, raw in items:
            try:
                spec = make(raw)
                if spec.name in BUILTINS:
                    raise RegistryError(f"{spec.name!r} is a built-in model name")
                if not NAME_PATTERN.match(spec.name):
                    raise RegistryError(f"{spec.name!r} is not a valid model name")
            except (RegistryError, TypeError, ValueError, AttributeError) as exc:
                log.warning("model registry entry skipped", extra={"entry": repr(raw)[:300], "error": str(exc)})
                continue
            entries[spec.name] = spec
        return entries

    def _stamp(self) -> tuple[int, int, int] | None:
        """Identifies one version of the file: an atomic write makes a new inode, an edit in place a new mtime."""
        assert self.path is not None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _reload_file(self) -> None:
        """Read the file when it changed since the last read (another process may have written it)."""
        if self.path is None:
            return
        stamp = self._stamp()
        if stamp == self._file_stamp:
            return
        self._file_stamp = stamp
        if stamp is None:
            self._file, self._file_error = {}, None
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            models = data["models"]
            if not isinstance(models, builtins.list):
                raise TypeError("'models' must be a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Keep serving what was read before: a worker must not go down over a hand-edit gone wrong.
            self._file_error = f"{type(exc).__name__}: {exc}"
            log.error("model registry file unreadable", extra={"path": str(self.path), "error": self._file_error})
            return
        self._file_error = None
        self._file = self._valid_entries((ModelSpec.from_data, entry) for entry in models)

    def _write(self, entries: Mapping[str, ModelSpec]) -> None:
        assert self.path is not None
        data = {"version": _FILE_VERSION, "models": [entries[name].to_data() for name in sorted(entries)]}
        # atomically: another process's registry reads the old file or the new one, never half of it
        atomic_write_text(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        self._file = dict(entries)
        self._file_stamp = self._stamp()


async def load_registry(path: Path | None, sessions: async_sessionmaker[AsyncSession] | None) -> ModelRegistry:
    """The worker's registry: built-ins + the JSON file at ``path`` + the ``registered_models`` rows."""
    rows: builtins.list[object] = []
    if sessions is not None:
        from storage.model_registry import list_models

        async with sessions() as session:
            rows = builtins.list(await list_models(session))
    return ModelRegistry(path, rows=rows)
