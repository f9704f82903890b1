"""Which music engines (MusicGen, ACE-Step) are resident in this worker: loaded on demand, bounded by memory and
by number.

Names are resolved through the model registry (``generation/registry.py``): a registry name (``small``,
an admin's fine-tune or LoRA), or a directory / Hugging Face id passed through as it is. Loading takes
seconds to minutes, so it happens at start-up for the default model and at most once per model after
that; a job never reloads a model that is already resident.

**Memory.** Each resident engine's size is the bytes of its parameters and buffers. Before adding one,
the least recently used engines are evicted until everything fits the budget: ``memory_gb``
(``settings.model_memory_gb``, GiB) or, when 0, automatic: on CUDA 80 % of the device's memory minus
what is allocated outside this cache (a cover pipeline, activations), on a CPU a fixed 8 GiB. The model
being loaded always stays, even alone over budget. ``max_resident`` bounds the count as well. When the
new model's size is known beforehand (loaded before, or weight files on disk) room is made before
loading, so peak memory stays in budget; a load that still runs out of GPU memory evicts everything
else and tries once more.

**LoRA.** A ``lora`` entry loads its base model *fresh* (never the resident base engine) and merges the
adapter into its weights (``MusicEngine.apply_lora``: peft for MusicGen, diffusers' LoRA loader for
ACE-Step): generation then runs at the base model's speed with no adapter layers, and the base engine,
which others may be using, is untouched. The price is a full copy of the model in memory per resident
LoRA, accounted for like any engine.

**Locking.** ``_lock`` guards the table of resident engines and is held only for dictionary work,
never while loading, so a job asking for a resident model gets it at once even while another model
loads. ``_load_lock`` lets one load run at a time: two jobs asking for the same missing model load it
once, and two different loads never hold two new models' memory at once.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from beatforge.config import Settings
from generation.device import resolve_device
from generation.errors import ModelUnavailable
from generation.music.acestep import AceStepEngine, AceStepSampler
from generation.music.engine import MusicEngine
from generation.music.musicgen import Decoding, MusicGenEngine
from generation.music.registry import BUILT_IN_CODE, ModelRegistry, ModelSpec, is_local_source

log = logging.getLogger(__name__)

GIB = 1 << 30
#: The automatic budget: this share of a GPU's memory, or this many GiB on a CPU.
CUDA_BUDGET_SHARE = 0.8
CPU_BUDGET_GIB = 8.0


def module_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the modules' parameters and buffers (each shared tensor once)."""
    tensors = {id(t): t for m in modules for t in (*m.parameters(), *m.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def engine_bytes(engine: MusicEngine) -> int:
    return module_bytes(*engine.modules())


def weights_bytes(source: str) -> int | None:
    """The size of a model's weight files (a local directory or the Hugging Face cache), None if unknown.

    Files in float32 loaded as float16 take half this in memory, so it errs on the big side.
    """
    if source in BUILT_IN_CODE:
        return None
    directory: Path | None = None
    if is_local_source(source):
        directory = Path(source).expanduser()
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            config = try_to_load_from_cache(source, "config.json")
        except Exception:  # an estimate only: no estimate is a fine answer
            config = None
        if isinstance(config, str):
            directory = Path(config).parent
    if directory is None or not directory.is_dir():
        return None
    for pattern in ("*.safetensors", "*.bin"):
        files = list(directory.glob(pattern))
        if files:
            return sum(f.stat().st_size for f in files)
    return None


def _out_of_memory(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, torch.OutOfMemoryError):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


@dataclass(slots=True)
class _Resident:
    engine: MusicEngine
    bytes: int


class ModelCache:
    """Resident engines by requested name, least recently used first.

    Args:
        device: where engines load (``cpu``, ``cuda``, ``cuda:1``).
        default: the name ``get(None)`` loads.
        max_resident: at most this many engines resident.
        registry: resolves names; default: built-ins and pass-through only.
        memory_gb: the memory budget in GiB; 0 = automatic (see the module docstring).
        acestep: how ACE-Step engines sample (steps, guidance, shift).
        decoding: how MusicGen engines decode (``auto``: the engine's choice for its device).
    """

    def __init__(
        self,
        *,
        device: str,
        default: str,
        max_resident: int = 4,
        registry: ModelRegistry | None = None,
        memory_gb: float = 0.0,
        acestep: AceStepSampler | None = None,
        decoding: Decoding | Literal["auto"] = "auto",
    ) -> None:
        if max_resident < 1:
            raise ValueError("max_resident must be at least 1")
        if memory_gb < 0:
            raise ValueError("memory_gb must not be negative")
        self.device, self.default, self.max_resident = device, default, max_resident
        self.registry = registry if registry is not None else ModelRegistry()
        self.memory_gb = memory_gb
        self.acestep = acestep if acestep is not None else AceStepSampler()
        self.decoding = decoding
        self._engines: OrderedDict[str, _Resident] = OrderedDict()
        self._sizes: dict[str, int] = {}  # bytes measured at earlier loads, to make room before a reload
        self._load_s: dict[str, float] = {}  # seconds the last load of each model took (model affinity's switch cost)
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, default: str | None = None, registry: ModelRegistry | None = None
    ) -> ModelCache:
        """The cache as configured; ``registry`` defaults to built-ins + the registry file (the worker adds its
        database rows; the command line has no database)."""
        return cls(
            device=resolve_device(settings.device),
            default=default or settings.default_model,
            registry=registry if registry is not None else ModelRegistry(settings.model_registry_file),
            memory_gb=settings.model_memory_gb,
            max_resident=settings.model_max_resident,
            acestep=AceStepSampler(settings.acestep_steps, settings.acestep_guidance, settings.acestep_shift),
            decoding=settings.musicgen_decoding,
        )

    def get(self, name: str | None) -> MusicEngine:
        """Return the engine for ``name`` (None: the default), loading it and evicting others as needed.

        Raises:
            ModelUnavailable: an unknown name, or it cannot be loaded; the error repeats on each call,
                so a model that appears later (a download finished, a volume mounted) is picked up
                without a restart.
        """
        key = name or self.default
        engine = self._resident(key)
        if engine is not None:
            return engine
        spec = self.registry.get(key)
        with self._load_lock:
            engine = self._resident(key)  # loaded by another thread while this one waited
            if engine is not None:
                return engine
            expected = self._sizes.get(key) or self._estimate(spec)
            if expected is not None:
                self._evict(incoming=expected)
            started = time.perf_counter()
            engine = self._load(spec)
            load_s = time.perf_counter() - started
            size = engine_bytes(engine)
            self._sizes[key] = size
            with self._lock:
                self._engines[key] = _Resident(engine, size)
                self._load_s[key] = load_s
            self._evict(keep=key)
        log.info("model resident", extra={"model": key, "bytes": size, "resident": self.resident()})
        return engine

    def resident(self) -> list[str]:
        """Resident names, least recently used first."""
        with self._lock:
            return list(self._engines)

    def load_times(self) -> dict[str, float]:
        """Seconds the last load of each model loaded here took."""
        with self._lock:
            return dict(self._load_s)

    def resident_bytes(self) -> int:
        with self._lock:
            return sum(r.bytes for r in self._engines.values())

    def budget_bytes(self) -> int:
        """The memory the cache may fill now (see the module docstring)."""
        with self._lock:
            return self._budget_locked()

    def clear(self) -> None:
        """Drop every resident engine."""
        with self._lock:
            self._engines.clear()
        self._collect()

    # -- internals ------------------------------------------------------------------------------------

    def _resident(self, key: str) -> MusicEngine | None:
        with self._lock:
            hit = self._engines.get(key)
            if hit is None:
                return None
            self._engines.move_to_end(key)
            return hit.engine

    def _budget_locked(self) -> int:
        if self.memory_gb > 0:
            return int(self.memory_gb * GIB)
        if self.device.startswith("cuda") and torch.cuda.is_available():
            device = torch.device(self.device)
            index = device.index if device.index is not None else torch.cuda.current_device()
            total = torch.cuda.get_device_properties(index).total_memory
            ours = sum(r.bytes for r in self._engines.values())
            outside = max(0, torch.cuda.memory_allocated(index) - ours)
            return max(0, int(CUDA_BUDGET_SHARE * total) - outside)
        return int(CPU_BUDGET_GIB * GIB)

    def _evict(self, *, incoming: int = 0, keep: str | None = None) -> None:
        """Evict least recently used engines (never ``keep``) until ``incoming`` more bytes fit, by memory and count."""
        evicted: list[str] = []
        with self._lock:
            budget = self._budget_locked()  # once: evicted engines are freed only after the lock is released
            slots = self.max_resident - (1 if incoming else 0)

            def over() -> bool:
                used = sum(r.bytes for r in self._engines.values())
                return len(self._engines) > slots or used + incoming > budget

            for name in list(self._engines):
                if not over():
                    break
                if name != keep:
                    del self._engines[name]
                    evicted.append(name)
            if over():
                log.warning(
                    "models over the memory budget",
                    extra={"resident": list(self._engines), "incoming_bytes": incoming, "budget_bytes": budget},
                )
        if evicted:
            log.info("models evicted", extra={"models": evicted})
            self._collect()

    def _collect(self) -> None:
        gc.collect()
        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _estimate(self, spec: ModelSpec) -> int | None:
        if spec.kind == "lora":
            try:
                return weights_bytes(self.registry.base_of(spec).source)
            except ModelUnavailable:
                return None
        return weights_bytes(spec.source)

    def _load(self, spec: ModelSpec) -> MusicEngine:
        try:
            return self._load_once(spec)
        except ModelUnavailable as exc:
            if not _out_of_memory(exc) or not self.resident():
                raise
        log.warning("out of memory loading a model; evicting all others", extra={"model": spec.name})
        self.clear()
        return self._load_once(spec)

    def _load_once(self, spec: ModelSpec) -> MusicEngine:
        if spec.kind != "lora":
            engine = self._load_engine(spec)
        else:
            # A fresh copy of the base: merging rewrites its weights, and the resident base must stay as it is.
            engine = self._load_engine(self.registry.base_of(spec))
            engine.apply_lora(spec.source)
        engine.name = spec.name  # what jobs record as the model they ran: the name asked for
        return engine

    def _load_engine(self, spec: ModelSpec) -> MusicEngine:
        if spec.engine == "acestep":
            return AceStepEngine.load(spec.source, device=self.device, settings=self.acestep)
        engine = MusicGenEngine.load(spec.source, device=self.device)
        if self.decoding != "auto":
            engine.decoding = self.decoding
        return engine
