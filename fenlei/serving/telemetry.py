"""What the HTTP service tells its operators: Prometheus metrics, a request id, an access log.

:class:`ServiceMetrics` holds the Prometheus metrics (prometheus-client) of one app, in a registry of its own:

- ``fenlei_requests_total{route, status}`` and ``fenlei_request_errors_total{route, status}`` (status >= 400), and
  the latency histogram ``fenlei_request_duration_seconds{route}``, for every request, refused ones included
  (status 499: the client left before any reply);
  ``route`` is the endpoint, or ``other`` for any path the service does not have (a caller cannot grow the label
  set);
- ``fenlei_batch_texts`` and ``fenlei_batch_requests`` (texts and requests per onnxruntime call),
  ``fenlei_batch_duration_seconds``, the queue gauges ``fenlei_queue_requests`` and ``fenlei_queue_texts``;
- ``fenlei_predictions_total`` and ``fenlei_uncertain_predictions_total`` (the share of ``uncertain`` answers is
  their ratio), ``fenlei_rejected_total{reason}`` (queue_full, deadline, client_gone, cancelled), ``fenlei_ready``
  (the minimum over the workers), ``fenlei_worker_processes`` (how many have built their app: a scrape sees whether
  all N are up).

Under several worker processes (``uvicorn --workers N``) set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder before
the start: every process then writes its values there and ``/metrics`` answers the sum over all of them
(prometheus-client's multiprocess mode) whichever process serves the scrape. ``fenlei serve --workers N`` makes a
temporary folder itself where none is set (fenlei.serving.workers).

:class:`Observe` (ASGI middleware, outermost) gives every request an id (the client's ``X-Request-ID`` when it is
a plain token of at most 128 characters, else a new one), sends it back in the ``X-Request-ID`` header, counts the
request in the metrics and writes one access-log line with it (logger ``fenlei.access``), e.g.
``127.0.0.1:51234 "POST /predict HTTP/1.1" 200 3.2 ms id=5f0c...``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from typing import Any

from fenlei.serving.limits import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_KEY = "fenlei.request_id"
_PLAIN_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")  # what may go into a header and a log line unchanged
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ROUTES = frozenset({"/predict", "/health", "/ready", "/metrics", "/metadata", "/docs", "/docs/oauth2-redirect",
                    "/openapi.json"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

access_log = logging.getLogger("fenlei.access")


def route_of(path: str) -> str:
    return path if path in ROUTES else "other"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class ServiceMetrics:
    """The service's Prometheus metrics (see the module docstring); also the batcher's observer."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("fenlei_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.errors = Counter("fenlei_request_errors", "HTTP requests answered with a status >= 400",
                              ["route", "status"], registry=r)
        self.latency = Histogram("fenlei_request_duration_seconds", "time from arrival to the end of the reply",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_texts = Histogram("fenlei_batch_texts", "texts per onnxruntime call", buckets=SIZE_BUCKETS,
                                     registry=r)
        self.batch_requests = Histogram("fenlei_batch_requests", "requests sharing one onnxruntime call",
                                        buckets=SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("fenlei_batch_duration_seconds", "time of one batch (tokenization included)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_requests = Gauge("fenlei_queue_requests", "requests waiting for a batch", registry=r,
                                    multiprocess_mode="livesum")
        self.queue_texts = Gauge("fenlei_queue_texts", "texts waiting for a batch", registry=r,
                                 multiprocess_mode="livesum")
        self.predictions = Counter("fenlei_predictions", "texts answered", registry=r)
        self.uncertain = Counter("fenlei_uncertain_predictions", "texts answered 'uncertain' (under the threshold)",
                                 registry=r)
        self.rejected_total = Counter("fenlei_rejected", "requests not computed, by reason", ["reason"], registry=r)
        self.is_ready = Gauge("fenlei_ready", "1 once the model is loaded and every session warmed up", registry=r,
                              multiprocess_mode="livemin")
        self.is_ready.set(0)
        self.processes = Gauge("fenlei_worker_processes", "server processes that have built the app (1, or the "
                               "live workers of --workers N)", registry=r, multiprocess_mode="livesum")
        self.processes.set(1)

    # ---- the batcher's observer ----

    def batch(self, texts: int, requests: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)

    def queue(self, waiting: int, texts: int) -> None:
        self.queue_requests.set(waiting)
        self.queue_texts.set(texts)

    def ready(self, ready: bool) -> None:
        self.is_ready.set(1 if ready else 0)

    def rejected(self, reason: str) -> None:
        self.rejected_total.labels(reason).inc()

    # ---- the app's ----

    def answered(self, predictions: list[dict[str, Any]]) -> None:
        self.predictions.inc(len(predictions))
        if uncertain := sum(bool(p["uncertain"]) for p in predictions):
            self.uncertain.inc(uncertain)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def close(self) -> None:
        """At the process's end, in multiprocess mode: drop its live gauges (queue, ready) from the shared folder,
        so a worker that a supervisor replaced does not count in them any more (its counters stay: they happened)."""
        if multiprocess_dir():
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type: this process's metrics, or every process's in
        multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def ensure_access_log(level: int = logging.INFO) -> None:
    """Access lines on stderr where nothing else handles ``fenlei.access`` (``fenlei serve``, ``uvicorn
    --factory``); a logging configuration of the host application wins."""
    access_log.setLevel(level)
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        access_log.addHandler(handler)
        access_log.propagate = False


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _PLAIN_ID.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


class Observe:
    """ASGI middleware: request id, metrics and access log of every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = scope[REQUEST_ID_KEY] = request_id_of(scope)
        status = 499  # no reply: the client left first (nginx's code for it)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, (REQUEST_ID_HEADER, request_id.encode("ascii"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = 500  # Starlette's outermost middleware answers it
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.request(route_of(scope["path"]), status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("-", 0)
                path = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string")
                                        else "")
                path = path[:200].encode("unicode_escape").decode("ascii")  # a decoded %0A cannot forge a line
                access_log.info('%s:%s "%s %s HTTP/%s" %d %.1f ms id=%s', client[0], client[1], scope["method"],
                                path, scope.get("http_version", "1.1"), status, 1000 * seconds, request_id)
