"""Which MusicGen engines are resident in this worker, loaded on demand and bounded in number.

Loading takes seconds to minutes, so it happens at start-up for the default model and at most
once per model after that; a job never reloads a model that is already resident.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict

from generation.musicgen import MusicGenEngine

log = logging.getLogger(__name__)


class ModelCache:
    def __init__(self, *, device: str, default: str, max_resident: int = 1) -> None:
        self.device, self.default, self.max_resident = device, default, max_resident
        self._engines: OrderedDict[str, MusicGenEngine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str | None) -> MusicGenEngine:
        """Return the engine for ``name`` (None: the default), evicting the least recently used one.

        Raises:
            ModelUnavailable: it cannot be loaded; the error repeats on each call, so a model that
                appears later (a download finished, a volume mounted) is picked up without a restart.
        """
        key = name or self.default
        with self._lock:
            if key in self._engines:
                self._engines.move_to_end(key)
                return self._engines[key]
            while len(self._engines) >= self.max_resident:
                evicted, _ = self._engines.popitem(last=False)
                log.info("model evicted", extra={"model": evicted})
                gc.collect()
            engine = MusicGenEngine.load(key, device=self.device)
            self._engines[key] = engine
            return engine
