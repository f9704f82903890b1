"""Batching across jobs: beats that wait for the same model at the same moment share one ``generate`` call.

A GPU decodes a batch of 16 nearly as fast as a batch of 1 (each step is bound by reading the weights), so
serving many Discord users from one GPU means generating their beats together. The worker runs several
jobs at once; each beat job hands its takes to :class:`Batcher`, which waits a moment for others, then
runs one :meth:`MusicEngine.generate_batch` for every compatible request and gives each job its rows.
Rows are seeded per take (``generation/sampling.py``), so a job's audio does not depend on its company.

Compatible means: the same engine and sampling settings, and no audio to start from (a prompt, melody or
remix, whose shapes would have to match); anything else runs on its own. Durations may differ: MusicGen runs the
batch to the longest and cuts each row at its own length; ACE-Step groups rows by length itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from beatforge.contract import SamplingParams
from generation.music.engine import GeneratedAudio, GenerationItem, MusicEngine, Preview

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


@dataclass
class _Request:
    items: list[GenerationItem]
    on_progress: ProgressCallback | None
    should_stop: Callable[[], bool] | None
    #: The first seconds of the request's first take, early (``Preview.seconds`` is the same for every request).
    preview: Preview | None = None
    future: asyncio.Future[list[GeneratedAudio]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _previews(batch: list[_Request]) -> Preview | None:
    """One preview for the batch that hands each request that asked its first take's first seconds (a beat no
    longer than that gets none, though a longer one in its batch makes them)."""
    seconds = [r.preview.seconds for r in batch if r.preview is not None]
    if not seconds:
        return None

    def deliver(audio: list[GeneratedAudio]) -> None:
        start = 0
        for r in batch:
            if r.preview is not None and r.items[0].duration_s > r.preview.seconds:
                r.preview.deliver([audio[start]])
            start += len(r.items)

    return Preview(min(seconds), deliver)


class Batcher:
    """Collects requests for ``wait_s`` seconds (or until ``max_rows`` takes), then generates them together."""

    def __init__(self, *, wait_s: float = 0.05, max_rows: int = 16, fade_out_s: float = 0.5) -> None:
        self.wait_s, self.max_rows, self.fade_out_s = wait_s, max_rows, fade_out_s
        self._pending: dict[tuple[int, SamplingParams], list[_Request]] = {}
        self._engines: dict[int, MusicEngine] = {}
        self._gpu = threading.Lock()  # one generate at a time on the device
        self._tasks: set[asyncio.Task[None]] = set()

    async def generate(
        self,
        engine: MusicEngine,
        items: list[GenerationItem],
        *,
        sampling: SamplingParams,
        on_progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        preview: Preview | None = None,
    ) -> list[GeneratedAudio]:
        request = _Request(items, on_progress, should_stop, preview)
        if any(i.has_audio for i in items) or len(items) >= self.max_rows:
            await self._run(engine, sampling, [request])
            return await request.future
        key = (id(engine), sampling)
        group = self._pending.setdefault(key, [])
        self._engines[id(engine)] = engine
        group.append(request)
        if len(group) == 1:  # the first in line waits for company, then takes whoever came
            asyncio.get_running_loop().call_later(self.wait_s, self._flush, key)
        elif sum(len(r.items) for r in group) >= self.max_rows:
            self._flush(key)
        return await request.future

    def _flush(self, key: tuple[int, SamplingParams]) -> None:
        group = self._pending.pop(key, None)
        if not group:
            return
        batch: list[_Request] = []
        for request in group:  # a group over max_rows runs as several batches
            if batch and sum(len(r.items) for r in batch) + len(request.items) > self.max_rows:
                self._start(key, batch)
                batch = []
            batch.append(request)
        self._start(key, batch)

    def _start(self, key: tuple[int, SamplingParams], batch: list[_Request]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(self._engines[key[0]], key[1], batch))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _run(self, engine: MusicEngine, sampling: SamplingParams, batch: list[_Request]) -> None:
        # a job cancelled while it waited for company is not generated at all
        batch = [r for r in batch if not r.future.done() and not (r.should_stop is not None and r.should_stop())]
        if not batch:
            return
        items = [item for r in batch for item in r.items]

        def progress(done: int, total: int) -> None:
            for r in batch:
                if r.on_progress is not None:
                    r.on_progress(done, total)

        def stop() -> bool:  # the batch stops only when every job in it wants to
            return all(r.should_stop is not None and r.should_stop() for r in batch)

        preview = _previews(batch)

        def work() -> list[GeneratedAudio]:
            with self._gpu:
                return engine.generate_batch(
                    items,
                    sampling=sampling,
                    fade_out_s=self.fade_out_s,
                    on_progress=progress,
                    should_stop=stop,
                    preview=preview,
                )

        if len(batch) > 1:
            log.info("batched generation", extra={"model": engine.name, "jobs": len(batch), "rows": len(items)})
        try:
            audio = await asyncio.to_thread(work)
        except Exception as exc:  # every waiting job gets the failure, to report as its own
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        start = 0
        for r in batch:
            if not r.future.done():
                r.future.set_result(audio[start : start + len(r.items)])
            start += len(r.items)
