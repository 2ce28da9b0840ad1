"""Dynamic batching for the HTTP service: concurrent ``/predict`` requests share onnxruntime calls.

Requests wait in one bounded queue (fenlei.serving.admission); each of ``sessions`` worker threads owns an
onnxruntime session and loops: take the texts at the head of the queue (several requests, up to
``max_batch_texts`` texts; a bigger request is split into pieces), run them as one batch, hand every request its
own rows. While a worker computes, new requests queue up and form the next batch, so batches grow with the load
on their own and a lone request never waits for company. ``batch_wait_ms`` adds a short wait only when it can pay:
a worker with texts to spare waits up to that long while other ``/predict`` requests are still being read or
validated (:class:`Arrivals` counts them), never when none are coming.

Each caller gets exactly its own rows. What batching changes is the padding and, for a dynamically quantized INT8
model, the activation scales (computed per batch): a text's INT8 probabilities can differ slightly with the other
texts of its batch, as they already did between the texts of one request (docs/deployment.md). fp32 answers
agree to float rounding. ``--max_batch_texts 1`` computes every text alone.

Before serving, every worker warms its session up (a short and a full-length batch: onnxruntime allocates its
buffers on the first runs); :attr:`Batcher.ready` is set when all have (``/ready``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import numpy as np

from fenlei.errors import OptionError
from fenlei.serving.admission import POLL_S, ClientGone, Job, JobQueue, Overloaded
from fenlei.serving.limits import ASGIApp, Receive, Scope, Send

ARRIVING_KEY = "fenlei.arriving"  # in a /predict request's scope while Arrivals counts it
log = logging.getLogger("fenlei.serve")


class Observer(Protocol):
    """What the batcher reports (fenlei.serving.telemetry turns it into Prometheus metrics)."""

    def batch(self, texts: int, requests: int, seconds: float) -> None: ...

    def queue(self, waiting: int, texts: int) -> None: ...

    def ready(self, ready: bool) -> None: ...

    def rejected(self, reason: str) -> None: ...


class _Silent:
    def batch(self, texts: int, requests: int, seconds: float) -> None:
        pass

    def queue(self, waiting: int, texts: int) -> None:
        pass

    def ready(self, ready: bool) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass


def default_threads(sessions: int) -> int | None:
    """Intra-op threads per session: onnxruntime's own choice for one session, the cores shared out for several."""
    if sessions == 1:
        return None
    return max(1, len(os.sched_getaffinity(0)) // sessions)


class Batcher:
    """A pool of ``sessions`` onnxruntime sessions behind one queue; see the module docstring.

    Args:
        predictor: the loaded bundle; its session is the pool's first, the others share its checked files.
        sessions: batches computed at once, each on a session of its own (``--max_concurrent``).
        threads: intra-op threads per session (default: :func:`default_threads`).
        max_batch_texts: most texts per onnxruntime call.
        batch_wait_ms: longest wait for requests still being read when a batch has room (0: never wait).
        max_queue: requests that may wait before 503 (``--max_queue``).
        request_timeout: the requests' deadline, for the messages of a 503.
    """

    def __init__(self, predictor: Any, sessions: int = 1, threads: int | None = None, max_batch_texts: int = 32,
                 batch_wait_ms: float = 2.0, max_queue: int = 32, request_timeout: float = 30.0,
                 observer: Observer | None = None) -> None:
        if not isinstance(max_batch_texts, int) or isinstance(max_batch_texts, bool) or max_batch_texts < 1:
            raise OptionError(f"--max_batch_texts must be an integer >= 1, got {max_batch_texts!r}")
        if isinstance(batch_wait_ms, bool) or not isinstance(batch_wait_ms, (int, float)) or not 0 <= batch_wait_ms <= 1000:
            raise OptionError(f"--batch_wait_ms must be a number of milliseconds from 0 to 1000, got {batch_wait_ms!r}")
        self.observer: Observer = observer or _Silent()
        self.max_batch_texts, self.wait_s = max_batch_texts, batch_wait_ms / 1000
        threads = threads if threads is not None else default_threads(sessions)
        self.threads = threads  # intra-op threads per session; None: onnxruntime's default (its cores)
        # The first session is the predictor's own: tests and tools that patch app.state.predictor reach it.
        self.predictors = [predictor, *(predictor.with_new_session(threads) for _ in range(sessions - 1))]
        self.queue = JobQueue(max_queue=max_queue, max_texts=max_batch_texts, workers=sessions,
                              timeout_s=request_timeout, on_change=self.observer.queue,
                              on_reject=self.observer.rejected)
        self.ready = threading.Event()
        self._warm = 0
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    @property
    def stats(self) -> Any:
        return self.queue.stats

    # ---- lifecycle ----

    def start(self) -> None:
        """Start the workers (idempotent): on the app's start-up, or with the first request where nothing ran it."""
        if self._threads:
            return
        with self._start_lock:
            if self._threads:
                return
            threads = [threading.Thread(target=self._work, args=(i,), name=f"fenlei-batch-{i}", daemon=True)
                       for i in range(len(self.predictors))]
            for thread in threads:
                thread.start()
            self._threads = threads

    def close(self, timeout: float = 30.0) -> None:
        """Let the workers finish every queued request, then stop them."""
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout)

    def _warm_up(self, predictor: Any) -> None:
        width = max(1, int(getattr(predictor, "max_length", 32)))
        predictor.predict_logits(["warm up"], batch_size=1)
        predictor.predict_logits(["warm " * width] * self.max_batch_texts, batch_size=self.max_batch_texts)

    def _work(self, index: int) -> None:
        predictor = self.predictors[index]
        try:
            self._warm_up(predictor)
        except Exception:  # noqa: BLE001 - a session that cannot run: logged, /ready stays 503
            log.exception("fenlei serve: warm-up of session %d failed", index)
        else:
            with self._start_lock:
                self._warm += 1
                if self._warm == len(self.predictors):
                    self.ready.set()
                    self.observer.ready(True)
        while (pieces := self.queue.take(self.max_batch_texts, self.wait_s)) is not None:
            texts = [text for piece in pieces for text in piece.texts]
            started = time.perf_counter()
            probs, error = None, None
            try:
                probs = predictor.predict_proba(texts, batch_size=len(texts))
            except Exception as err:  # noqa: BLE001 - handed to the requests of this batch
                error = err
            seconds = time.perf_counter() - started
            self.queue.finish(pieces, probs, error, seconds)
            self.observer.batch(len(texts), len({id(p.job) for p in pieces}), seconds)

    # ---- the event loop's side ----

    async def predict_proba(self, texts: list[str], deadline: float, gone: Callable[[], Awaitable[bool]],
                            scope: MutableMapping[str, Any] | None = None) -> np.ndarray:
        """Calibrated probabilities of ``texts`` (rows in their order), computed in the shared batches.

        ``deadline`` (on :func:`time.monotonic`'s clock): :class:`Overloaded` when it passes before the request
        started, or between its pieces; :class:`ClientGone` when ``gone()`` says the client left; ``scope``: the
        request's, to end its :class:`Arrivals` count as it joins the queue."""
        self.start()
        job = Job(texts, deadline, asyncio.get_running_loop())
        try:
            self.queue.put(job)
        finally:
            if scope is not None and scope.pop(ARRIVING_KEY, False):
                self.queue.arrived(-1)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and self.queue.expire(job):
                    raise Overloaded(f"not served within the request deadline of {self.queue.timeout_s:g} s; "
                                     "retry later", self.queue.retry_after())
                try:
                    # shield: a timeout must not cancel the future, which a worker may resolve at the same moment.
                    return await asyncio.wait_for(asyncio.shield(job.future), min(POLL_S, remaining) if remaining > 0
                                                  else POLL_S)
                except TimeoutError:
                    if await gone() and self.queue.abandon(job):
                        raise ClientGone from None
        except asyncio.CancelledError:  # the server gave up on the request (shutdown past its grace period)
            self.queue.abandon(job, "cancelled")
            raise


class Arrivals:
    """ASGI middleware: counts ``POST /predict`` requests from arrival until they join the batcher's queue (or are
    answered without it: 401, 413, 422), so a batch with room waits for them and only for them."""

    def __init__(self, app: ASGIApp, batcher: Batcher, path: str = "/predict") -> None:
        self.app, self.batcher, self.path = app, batcher, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        scope[ARRIVING_KEY] = True
        self.batcher.queue.arrived(+1)
        try:
            await self.app(scope, receive, send)
        finally:
            if scope.pop(ARRIVING_KEY, False):
                self.batcher.queue.arrived(-1)
