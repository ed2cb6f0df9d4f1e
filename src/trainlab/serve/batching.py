"""Dynamic micro-batching: requests that arrive within ``max_delay`` seconds of each other go
through the model as one batch (up to ``max_batch`` images), on a worker thread, so the event
loop keeps accepting requests while the model computes.

A request waits at most ``max_delay`` from its arrival for others to join it: requests that
queued while the model was busy on the previous batch have waited already, so they go into the
next batch at once. Joining, splitting and the model all run on the worker thread, which leaves
the event loop only the queue to handle (each torch call from the loop thread would release and
then wait to retake the GIL from the worker).
"""

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


@dataclass
class _Request:
    images: torch.Tensor
    future: asyncio.Future
    arrived: float  # loop.time(), seconds


class MicroBatcher:
    """``await batcher.run(images)`` -> the rows of ``fn(all queued images)`` for ``images``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, max_batch: int = 64,
                 max_delay: float = 0.005):  # fmt: skip
        self.fn, self.max_batch, self.max_delay = fn, max_batch, max_delay
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Request] | None = None
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
        if len(images) > self.max_batch:  # never more than max_batch images in one forward pass
            chunks = images.split(self.max_batch)
            return torch.cat(await asyncio.gather(*(self.run(chunk) for chunk in chunks)))
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._queue.put_nowait(_Request(images, future, loop.time()))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        held: _Request | None = None  # taken from the queue, but too many for the last batch
        while True:
            pending = [held if held is not None else await queue.get()]
            held = None
            size = len(pending[0].images)
            deadline = pending[0].arrived + self.max_delay
            while size < self.max_batch:
                if queue.empty():  # wait for more only until the first request's deadline
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        request = await asyncio.wait_for(queue.get(), timeout)
                    except (TimeoutError, asyncio.TimeoutError):  # the same from Python 3.11
                        break
                else:  # queued already (while the model was busy): no waiting, no task
                    request = queue.get_nowait()
                if size + len(request.images) > self.max_batch:
                    held = request  # first in the next batch: its requests stay in order
                    break
                pending.append(request)
                size += len(request.images)
            await self._compute(pending, loop)

    def _forward(self, parts: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """On the worker thread: one batch through ``fn``, split back into the requests' rows."""
        batch = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self.fn(batch).split([len(p) for p in parts])

    async def _compute(self, pending: list[_Request], loop: asyncio.AbstractEventLoop) -> None:
        try:
            outputs = await loop.run_in_executor(
                self._executor, self._forward, [r.images for r in pending]
            )
        except Exception as error:  # the model failed: every waiting request hears of it
            for request in pending:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        size = sum(len(r.images) for r in pending)
        self.stats.batches += 1
        self.stats.images += size
        self.stats.largest = max(self.stats.largest, size)
        for request, output in zip(pending, outputs, strict=True):
            if not request.future.done():  # the client may have gone away
                request.future.set_result(output)
