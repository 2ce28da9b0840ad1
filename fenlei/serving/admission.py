"""Admission control of the HTTP service: a bounded FIFO of requests waiting for the batcher, and their deadlines.

Every ``/predict`` request becomes a :class:`Job` in one :class:`JobQueue`; the batcher's workers
(fenlei.serving.batcher) take pieces of the jobs at its head, up to a batch's worth of texts, and hand the rows
back. At most ``max_queue`` requests wait that have not started (beyond what idle workers take at once); the next
one is refused at once (:class:`Overloaded`, answered 503 with ``Retry-After``) instead of piling up: without a
bound, 64 maximal requests at concurrency 32 made 37 clients time out while the server kept computing their
abandoned requests. A waiting request leaves the queue when its deadline passes (503 too) or when its client has
gone (:class:`ClientGone`: nothing is computed for it); a request of more texts than one batch holds is computed
in pieces and stops between them at its deadline or when its client leaves.

Two kinds of thread share the queue: the event loop puts jobs and waits for them, the workers take pieces and
fill in rows. One lock (a :class:`threading.Condition`) guards it, and answers reach the loop through
``call_soon_threadsafe``. Nothing here is bound to one event loop (FastAPI's TestClient runs each request on a loop
of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# How often a waiting request checks whether its client is still there.
POLL_S = 0.25
# Retry-After is an estimate of the wait (batches queued x recent batch time), kept within these bounds.
RETRY_AFTER_RANGE = (1, 60)


class Overloaded(Exception):
    """The request cannot be served in time: the queue is full, or its deadline passed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientGone(Exception):
    """The client disconnected before its request was computed."""


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the waiting request was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Job:
    """One request's texts on their way through the queue.

    The texts are sorted by length (pieces of a long request then pad less); :meth:`result` gives the rows back in
    the request's order. ``deadline`` is on :func:`time.monotonic`'s clock."""

    def __init__(self, texts: list[str], deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        self.order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        self.texts = [texts[i] for i in self.order]
        self.deadline = deadline
        self.loop = loop
        self.future: asyncio.Future[np.ndarray] = loop.create_future()
        self.rows: np.ndarray | None = None  # in sorted order, filled piece by piece
        self.given = 0  # texts handed to batches so far
        self.in_flight = 0  # pieces being computed
        self.closed = False  # answered, failed or abandoned: nothing more is computed for it

    @property
    def started(self) -> bool:
        return self.given > 0

    def result(self) -> np.ndarray:
        assert self.rows is not None
        out = np.empty_like(self.rows)
        out[self.order] = self.rows
        return out

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        """Answer the waiting request (from any thread); a loop that is gone has nobody left to answer."""
        self.closed = True
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(_resolve, self.future, value, error)


@dataclass(frozen=True)
class Piece:
    """Texts ``start:stop`` (in the job's sorted order) of one job, part of one batch."""

    job: Job
    start: int
    stop: int

    @property
    def texts(self) -> list[str]:
        return self.job.texts[self.start:self.stop]


class JobQueue:
    """The FIFO of jobs in front of the batcher's workers; see the module docstring."""

    def __init__(self, max_queue: int = 32, max_texts: int = 32, workers: int = 1, timeout_s: float = 30.0,
                 on_change: Callable[[int, int], None] | None = None,
                 on_reject: Callable[[str], None] | None = None) -> None:
        self.max_queue, self.max_texts, self.workers, self.timeout_s = max_queue, max_texts, workers, timeout_s
        self.cond = threading.Condition()
        self.jobs: deque[Job] = deque()
        self.idle = 0  # workers waiting for a job
        self.arriving = 0  # /predict requests read or validated at this moment, not yet put (batcher.Arrivals)
        self.closed = False
        self.batch_s = 0.05  # moving average of a batch's compute time (for Retry-After)
        # admitted, queue_full, deadline, client_gone (read by tests and the metrics)
        self.stats: Counter[str] = Counter()
        self.on_change = on_change or (lambda waiting, texts: None)  # the queue gauges of /metrics
        self.on_reject = on_reject or (lambda reason: None)  # its rejection counter

    # ---- read under the lock ----

    def waiting(self) -> int:
        """Requests in the queue that have not started."""
        return sum(not job.started for job in self.jobs)

    def queued_texts(self) -> int:
        return sum(len(job.texts) - job.given for job in self.jobs)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the batches ahead of it spread over the workers."""
        ahead = math.ceil(self.queued_texts() / self.max_texts) + self.workers - self.idle
        low, high = RETRY_AFTER_RANGE
        return int(min(high, max(low, math.ceil(ahead * self.batch_s / self.workers))))

    def _reject(self, reason: str) -> None:
        self.stats[reason] += 1
        self.on_reject(reason)

    def _changed(self) -> None:
        self.on_change(self.waiting(), self.queued_texts())

    # ---- the event loop's side ----

    def arrived(self, delta: int) -> None:
        """A /predict request began (+1) or stopped (-1) being read and validated (batch waits count on them)."""
        with self.cond:
            self.arriving += delta
            if delta < 0:
                self.cond.notify_all()  # a worker waiting for this request stops waiting if it will not come

    def put(self, job: Job) -> None:
        """Queue ``job``, or raise :class:`Overloaded` when ``max_queue`` requests already wait."""
        with self.cond:
            if self.closed:
                raise Overloaded("the server is shutting down; retry later", RETRY_AFTER_RANGE[0])
            waiting = self.waiting()
            if waiting >= self.max_queue + self.idle:  # an idle worker takes a request at once: it does not wait
                self._reject("queue_full")
                raise Overloaded(f"server busy: {waiting} requests are queued (limit {self.max_queue}); retry later",
                                 self.retry_after())
            self.jobs.append(job)
            self.stats["admitted"] += 1
            self._changed()
            self.cond.notify_all()

    def _close(self, job: Job, reason: str) -> None:
        job.closed = True
        with contextlib.suppress(ValueError):  # not queued any more: all its pieces were given out
            self.jobs.remove(job)
        self._reject(reason)
        self._changed()

    def expire(self, job: Job) -> bool:
        """The deadline of a job that has not started passed: take it out (True), unless a worker just took it."""
        with self.cond:
            if job.closed or job.started:
                return False
            self._close(job, "deadline")
            return True

    def abandon(self, job: Job, reason: str = "client_gone") -> bool:
        """Nobody waits for ``job`` any more: compute nothing more for it (True unless it was already closed)."""
        with self.cond:
            if job.closed:
                return False
            self._close(job, reason)
            return True

    # ---- the workers' side ----

    def _drop_late(self) -> None:
        """Closed jobs leave the queue; a job past its deadline fails (a started one between its pieces; one that
        has not started is usually answered by its own request first, see :meth:`expire`)."""
        now = time.monotonic()
        for job in list(self.jobs):
            if job.closed:
                self.jobs.remove(job)
            elif job.deadline < now:
                started = job.started
                self._close(job, "deadline")
                message = (f"not computed within the request deadline of {self.timeout_s:g} s; retry later or send "
                           "fewer texts") if started else (f"not served within the request deadline of "
                                                           f"{self.timeout_s:g} s; retry later")
                job.settle(error=Overloaded(message, self.retry_after()))

    def take(self, max_texts: int, wait_s: float) -> list[Piece] | None:
        """The next batch: pieces of the jobs at the head, at most ``max_texts`` texts in all (None once closed
        and empty). With texts to spare, it waits up to ``wait_s`` for the requests still being read to join it."""
        with self.cond:
            while True:
                self._drop_late()
                if not self.jobs:
                    if self.closed:
                        return None
                    self.idle += 1
                    try:
                        self.cond.wait()
                    finally:
                        self.idle -= 1
                    continue
                end = time.monotonic() + wait_s
                while self.arriving > 0 and self.queued_texts() < max_texts and (left := end - time.monotonic()) > 0:
                    self.cond.wait(left)
                self._drop_late()
                if self.jobs:
                    return self._pieces(max_texts)

    def _pieces(self, max_texts: int) -> list[Piece]:
        pieces, n = [], 0
        while self.jobs and n < max_texts:
            job = self.jobs[0]
            k = min(max_texts - n, len(job.texts) - job.given)
            pieces.append(Piece(job, job.given, job.given + k))
            job.given += k
            job.in_flight += 1
            n += k
            if job.given == len(job.texts):
                self.jobs.popleft()
        self._changed()
        return pieces

    def finish(self, pieces: list[Piece], probs: np.ndarray | None, error: BaseException | None, seconds: float) -> None:
        """Hand a computed batch's rows (or its error) to the jobs of its pieces."""
        with self.cond:
            self.batch_s = 0.8 * self.batch_s + 0.2 * seconds
            offset = 0
            for piece in pieces:
                job, n = piece.job, piece.stop - piece.start
                job.in_flight -= 1
                if not job.closed:
                    if error is not None:
                        job.settle(error=error)
                    else:
                        assert probs is not None
                        if job.rows is None:
                            job.rows = np.empty((len(job.texts), probs.shape[1]), dtype=probs.dtype)
                        job.rows[piece.start:piece.stop] = probs[offset:offset + n]
                        if job.given == len(job.texts) and job.in_flight == 0:
                            job.settle(value=job.result())
                offset += n

    def close(self) -> None:
        """No new jobs; the workers finish what is queued, then stop."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
