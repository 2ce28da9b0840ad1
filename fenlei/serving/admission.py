"""Admission control of the HTTP service: a concurrency limit, a bounded FIFO queue, and a per-request deadline.

At most ``max_concurrent`` requests compute at once and at most ``max_queue`` wait for a turn; a request that finds
the queue full is refused at once (:class:`Overloaded`, answered 503 with ``Retry-After``) instead of piling up:
without a bound, 64 maximal requests at concurrency 32 made 37 clients time out while the server kept computing
their abandoned requests. A waiting request leaves the queue when its deadline passes (503 too) or when its client
has gone (:class:`ClientGone`: nothing is computed for it).

asyncio only (the service runs on uvicorn's asyncio loop); the state lives on one event loop thread, so plain
counters need no lock.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

# How often a queued request checks whether its client is still there.
POLL_S = 0.25
# Retry-After is an estimate of the wait (queue length x recent service time), kept within these bounds.
RETRY_AFTER_RANGE = (1, 60)


class Overloaded(Exception):
    """The request cannot be served in time: the queue is full, or its deadline passed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientGone(Exception):
    """The client disconnected before its request was computed."""


class Admission:
    """A FIFO of requests in front of ``max_concurrent`` compute slots, at most ``max_queue`` of them waiting."""

    def __init__(self, max_concurrent: int = 1, max_queue: int = 32) -> None:
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.service_s = 0.1  # moving average of how long a request holds a slot (for Retry-After)
        self.stats: Counter[str] = Counter()  # admitted, queue_full, deadline, client_gone (read by tests, /health)

    @property
    def waiting(self) -> int:
        return sum(not f.done() for f in self._waiters)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the work ahead of it spread over the slots."""
        ahead = (self.waiting + self.running) * self.service_s / self.max_concurrent
        low, high = RETRY_AFTER_RANGE
        return int(min(high, max(low, math.ceil(ahead))))

    def _release(self) -> None:
        # Hand the slot straight to the next waiter (running stays the same), so a new arrival cannot jump the queue.
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.running -= 1

    async def _acquire(self, deadline: float, gone: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        if self.running < self.max_concurrent and not self.waiting:
            self.running += 1
            return
        if self.waiting >= self.max_queue:
            self.stats["queue_full"] += 1
            raise Overloaded(f"server busy: {self.waiting} requests are queued (limit {self.max_queue}); retry later",
                             self.retry_after())
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append(future)
        try:
            while not future.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.stats["deadline"] += 1
                    raise Overloaded(f"not served within the request deadline of {timeout_s:g} s; retry later",
                                     self.retry_after())
                try:
                    # shield: a timeout must not cancel the future, which _release may resolve at the same moment.
                    await asyncio.wait_for(asyncio.shield(future), min(POLL_S, remaining))
                except TimeoutError:
                    if not future.done() and await gone():
                        self.stats["client_gone"] += 1
                        raise ClientGone from None
        except BaseException:
            if future.done() and not future.cancelled():
                self._release()  # the slot was handed over just as this request gave up: pass it on
            else:
                future.cancel()
            raise

    @asynccontextmanager
    async def slot(self, deadline: float, gone: Callable[[], Awaitable[bool]], timeout_s: float) -> AsyncIterator[None]:
        """Hold a compute slot; ``deadline`` is on the event loop's clock, ``gone`` says whether the client left."""
        await self._acquire(deadline, gone, timeout_s)
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.stats["admitted"] += 1
        try:
            yield
        finally:
            self.service_s = 0.8 * self.service_s + 0.2 * (loop.time() - started)
            self._release()
