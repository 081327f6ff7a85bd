"""Dynamic micro-batching: concurrent requests' items coalesce into one forward pass.

Items are queued with a future and their arrival time each. One collector task takes the
first waiting item, then keeps taking items until the batch holds ``max_batch`` of them or
``max_delay_s`` has passed since the first one *arrived*, and runs ``fn(batch)`` on an
executor thread, so the event loop never blocks on the model. While a batch runs, the next
one fills; items that already waited ``max_delay_s`` behind a running batch go in the next
pass at once (no second wait). ``fn`` returns one result per item, in order; an exception in
``fn`` fails every item of that batch.

With batching off (:class:`DirectRunner`) each call runs its own items as one pass on the
same executor: the baseline the benchmark compares against.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
R = TypeVar("R")

BatchFn = Callable[[Sequence[T]], Sequence[R]]


class Runner(Protocol[T_contra, R]):
    """Runs items through the model; ``forward_calls`` counts the passes made."""

    forward_calls: int

    async def run(self, items: Sequence[T_contra]) -> list[R]: ...


@dataclass
class DirectRunner(Generic[T, R]):
    """No coalescing: each call's items are one pass on ``executor``."""

    fn: BatchFn[T, R]
    executor: Executor
    on_batch: Callable[[int], None] | None = None
    forward_calls: int = 0

    async def run(self, items: Sequence[T]) -> list[R]:
        if not items:
            return []
        self.forward_calls += 1
        if self.on_batch is not None:
            self.on_batch(len(items))
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self.executor, self.fn, list(items))
        return _checked(results, len(items))


@dataclass
class MicroBatcher(Generic[T, R]):
    """Coalesces items of concurrent :meth:`run` calls into batches of at most ``max_batch``."""

    fn: BatchFn[T, R]
    executor: Executor
    max_batch: int
    max_delay_s: float
    on_batch: Callable[[int], None] | None = None
    forward_calls: int = 0
    _queue: asyncio.Queue[tuple[T, asyncio.Future[R], float]] | None = field(
        default=None, repr=False
    )
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_delay_s < 0:
            raise ValueError(f"max_delay_s must be >= 0, got {self.max_delay_s}")

    async def run(self, items: Sequence[T]) -> list[R]:
        """Results for ``items`` (in order), computed in whatever batches they land in."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._collect(self._queue), name="micro-batcher")
        futures: list[asyncio.Future[R]] = []
        arrived = time.monotonic()
        for item in items:
            fut: asyncio.Future[R] = loop.create_future()
            self._queue.put_nowait((item, fut, arrived))
            futures.append(fut)
        return list(await asyncio.gather(*futures))

    async def close(self) -> None:
        """Stop the collector (pending items get ``CancelledError``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _collect(self, queue: asyncio.Queue[tuple[T, asyncio.Future[R], float]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item, fut, arrived = await queue.get()
            batch = [(item, fut)]
            deadline = arrived + self.max_delay_s
            while len(batch) < self.max_batch:
                try:
                    item, fut, _ = queue.get_nowait()
                    batch.append((item, fut))
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item, fut, _ = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                batch.append((item, fut))
            live = [(item, fut) for item, fut in batch if not fut.done()]
            if not live:
                continue
            self.forward_calls += 1
            if self.on_batch is not None:
                self.on_batch(len(live))
            try:
                results = await loop.run_in_executor(
                    self.executor, self.fn, [item for item, _ in live]
                )
                checked = _checked(results, len(live))
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, checked, strict=True):
                if not fut.done():
                    fut.set_result(result)


def _checked(results: Sequence[R], expected: int) -> list[R]:
    out = list(results)
    if len(out) != expected:
        raise RuntimeError(f"batch function returned {len(out)} results for {expected} items")
    return out
