"""Dynamic micro-batching: requests that arrive within ``max_delay`` seconds of each other go
through the model as one batch (up to ``max_batch`` images), on a worker thread, so the event
loop keeps accepting requests while the model computes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    largest: int = 0


class MicroBatcher:
    """``await batcher.run(images)`` -> the rows of ``fn(all queued images)`` for ``images``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, max_batch: int = 64,
                 max_delay: float = 0.005):  # fmt: skip
        self.fn, self.max_batch, self.max_delay = fn, max_batch, max_delay
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        # One thread: the model runs one batch at a time (torch itself uses all cores).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainlab-infer")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False)

    async def run(self, images: torch.Tensor) -> torch.Tensor:
        assert self._queue is not None, "MicroBatcher.start() was not awaited"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((images, future))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            size = len(pending[0][0])
            deadline = loop.time() + self.max_delay
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                pending.append(item)
                size += len(item[0])
            await self._compute(pending, loop)

    async def _compute(self, pending: list, loop: asyncio.AbstractEventLoop) -> None:
        batch = torch.cat([images for images, _ in pending])
        try:
            output = await loop.run_in_executor(self._executor, self.fn, batch)
        except Exception as error:  # the model failed: every waiting request hears of it
            for _, future in pending:
                if not future.done():
                    future.set_exception(error)
            return
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        start = 0
        for images, future in pending:
            if not future.done():  # the client may have gone away
                future.set_result(output[start : start + len(images)])
            start += len(images)
