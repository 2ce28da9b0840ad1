"""HTTP service for an exported bundle (FastAPI + onnxruntime; no torch, no transformers).

    API_KEY=... fenlei serve --bundle bundles/NAME --host 0.0.0.0 --port 8000 --api_key_env API_KEY
    fenlei serve --bundle bundles/NAME --workers 2        # two processes on one port (fenlei.serving.workers)
    FENLEI_SERVE_ARGS="--bundle bundles/NAME" uvicorn --factory fenlei.serving.serve:app_factory --workers 2

Endpoints:

- ``POST /predict`` with ``{"text": "..."}`` or ``{"texts": ["...", ...]}`` (optional ``"top_k"``) returns
  ``{"predictions": [{"label", "predicted_label", "confidence", "uncertain", "top_k": [{"label", "score"}]}]}``,
  one per text, in order. ``label`` is ``"uncertain"`` under the bundle's confidence threshold.
- ``GET /health``: ``{"status": "ok"}`` while the process is alive (the model is loaded before the server accepts
  requests); ``GET /ready``: 200 once every onnxruntime session is warmed up, 503 before. Neither needs a key.
- ``GET /metrics``: Prometheus metrics (fenlei.serving.telemetry).
- ``GET /metadata``: labels, precision, temperature, thresholds, limits and the bundle's export metadata (file
  names, never absolute paths).
- ``/docs`` and ``/openapi.json`` only with ``--docs``.

With ``--api_key_env NAME``, every path but ``/health`` and ``/ready`` needs the key (fenlei.serving.auth); a
non-loopback ``--host`` without a key refuses to start unless ``--allow_unauthenticated``. Limits
(fenlei.serving.limits, fenlei.serving.admission, fenlei.serving.protocol) apply before anything is parsed: body
size (413), head and body timeouts (408), a bounded queue and a request deadline (503 with ``Retry-After``); a
request whose client has gone is not computed. Bad requests answer 422 with a message naming the problem and never
echo the input: missing text, both or neither of text/texts, empty text, text over ``max_chars``, a lone surrogate,
a text with no visible character, more than ``max_items`` texts, top_k out of range or not finite, malformed JSON.
Never a 500. Concurrent requests share onnxruntime calls (fenlei.serving.batcher: up to ``max_batch_texts`` texts
a call, ``max_concurrent`` calls at once, each on its own session). Every reply carries an ``X-Request-ID``, also
in the access log. SIGTERM stops accepting connections and finishes the requests in flight, batched ones included
(within the request deadline), then the workers.
"""

# No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations, and the request model is
# built inside create_app (its limits are arguments), where string annotations could not be resolved.

import logging
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fenlei.errors import OptionError, exit_status_of
from fenlei.serving.admission import ClientGone, Overloaded
from fenlei.serving.auth import DOCS_PATHS, OPEN_PATHS, APIKeyAuth, check_exposure, read_api_key
from fenlei.serving.batcher import Arrivals, Batcher
from fenlei.serving.limits import ARRIVAL_KEY, BodyLimit, ServiceLimits
from fenlei.serving.predictor import BundlePredictor
from fenlei.serving.telemetry import Observe, ServiceMetrics, ensure_access_log
from fenlei.text_limits import text_problem

MAX_ERRORS = 10  # validation errors listed per reply (a 1 MB list of bad items would give 100,000s)
FACTORY_ENV = "FENLEI_SERVE_ARGS"  # the options of `fenlei serve` for app_factory (uvicorn --factory)


class TopK(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str = Field(description="predicted label, or 'uncertain' when confidence < threshold")
    predicted_label: str = Field(description="argmax label, also when uncertain")
    confidence: float = Field(description="calibrated max-softmax probability")
    uncertain: bool
    top_k: list[TopK]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    precision: str
    elapsed_ms: float


def _printable(value: Any, limit: int) -> Any:
    """An error field safe to send back: integers as they are, text UTF-8-encodable (lone surrogates escaped) and
    cut to ``limit`` characters (a field name can be the attacker's 1 MB string)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "..."


def public_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's validation errors without ``input`` and ``ctx``: FastAPI's default reply echoes the input (all of
    a 100 MB text), and serialising a non-finite input (top_k 1e400, NaN) to JSON raised the 500 of issue 16."""
    errors = list(errors)
    out = [{"loc": [_printable(x, 64) for x in list(e.get("loc", ()))[:8]], "msg": _printable(e.get("msg", ""), 300),
            "type": _printable(e.get("type", ""), 64)} for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        out.append({"loc": [], "msg": f"... and {len(errors) - MAX_ERRORS} more errors", "type": "truncated"})
    return out


def _looks_like_path(value: str) -> bool:
    return os.path.isabs(value) or value.startswith(("~", "./", "../")) or (
        ("/" in value or "\\" in value) and not any(c.isspace() for c in value))


def file_names(value: Any) -> Any:
    """``value`` with every path replaced by its file name: /metadata must not tell a caller where the bundle,
    checkpoint or run directory live on the server."""
    if isinstance(value, dict):
        return {k: file_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [file_names(v) for v in value]
    if isinstance(value, str) and _looks_like_path(value):
        return (PureWindowsPath if "\\" in value else PurePosixPath)(value).name
    return value


def create_app(bundle_dir: str | Path, precision: str = "int8", intra_op_threads: Optional[int] = None,
               max_chars: int = 2000, max_items: int = 64, default_top_k: int = 5, max_batch_texts: int = 32,
               batch_wait_ms: float = 2.0, limits: Optional[ServiceLimits] = None, api_key: Optional[str] = None,
               docs: bool = False) -> FastAPI:
    """Build the FastAPI app around one :class:`BundlePredictor` (loaded here, before the first request) and its
    :class:`~fenlei.serving.batcher.Batcher` (``limits.max_concurrent`` sessions, started with the app).

    ``intra_op_threads``: per session (default: onnxruntime's choice for one session, the cores shared out for
    several); ``max_batch_texts``, ``batch_wait_ms``: see fenlei.serving.batcher; ``limits``: the service limits
    (defaults of :class:`ServiceLimits`); ``api_key``: required on every path but ``/health``, ``/ready`` (and the
    docs) when given; ``docs``: serve ``/docs`` and ``/openapi.json``."""
    limits = limits or ServiceLimits()
    predictor = BundlePredictor(bundle_dir, precision=precision, intra_op_threads=intra_op_threads)
    num_labels = len(predictor.label_names)
    metrics = ServiceMetrics()
    batcher = Batcher(predictor, sessions=limits.max_concurrent, threads=intra_op_threads,
                      max_batch_texts=max_batch_texts, batch_wait_ms=batch_wait_ms, max_queue=limits.max_queue,
                      request_timeout=limits.request_timeout, observer=metrics)

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: Optional[str] = Field(None, description=f"one text (1 to {max_chars} characters)")
        texts: Optional[list[str]] = Field(None, description=f"several texts (1 to {max_items}), each 1 to {max_chars} characters")
        top_k: int = Field(min(default_top_k, num_labels), ge=1, le=num_labels, description="how many labels to list per text")

        @field_validator("text")
        @classmethod
        def _check_text(cls, value: Optional[str]) -> Optional[str]:
            if value is not None:
                _check_one(value, "text")
            return value

        @field_validator("texts")
        @classmethod
        def _check_texts(cls, value: Optional[list[str]]) -> Optional[list[str]]:
            if value is None:
                return value
            if not value:
                raise ValueError("texts is empty; give at least one text")
            if len(value) > max_items:
                raise ValueError(f"too many texts: {len(value)} > {max_items} per request")
            for i, text in enumerate(value):
                _check_one(text, f"texts[{i}]")
            return value

        @model_validator(mode="after")
        def _exactly_one(self) -> Any:
            if (self.text is None) == (self.texts is None):
                raise ValueError("give exactly one of 'text' (a string) and 'texts' (a list of strings)")
            return self

    def _check_one(text: str, where: str) -> None:
        if not text.strip():
            raise ValueError(f"{where} is empty")
        if len(text) > max_chars:
            raise ValueError(f"{where} is too long: {len(text)} characters > {max_chars}")
        if problem := text_problem(text):
            raise ValueError(f"{where} {problem}")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        batcher.start()  # the sessions warm up while the server already answers /health (and /ready: 503)
        try:
            yield
        finally:
            # The server has finished its requests (or given up on them past its grace period): stop the workers.
            batcher.close()
            metrics.close()

    app = FastAPI(title="fenlei classifier", version=str(predictor.metadata.get("format_version", 1)),
                  description=f"Text classification with {num_labels} labels from bundle {Path(bundle_dir).name}.",
                  docs_url="/docs" if docs else None, redoc_url=None, openapi_url="/openapi.json" if docs else None,
                  lifespan=lifespan)
    app.state.predictor = predictor
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.limits = limits

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": public_errors(exc.errors())})

    @app.post("/predict", response_model=PredictResponse,
              responses={401: {"description": "missing or wrong API key"}, 408: {"description": "body too slow"},
                         413: {"description": "body too large"}, 422: {"description": "invalid request"},
                         503: {"description": "queue full or deadline passed (see Retry-After)"}})
    async def predict(payload: PredictRequest, request: Request) -> Any:
        texts = [payload.text] if payload.text is not None else list(payload.texts or [])
        started = time.perf_counter()
        deadline = request.scope.get(ARRIVAL_KEY, time.monotonic()) + limits.request_timeout
        try:
            probs = await batcher.predict_proba(texts, deadline, request.is_disconnected, request.scope)
        except Overloaded as err:
            return JSONResponse(status_code=503, content={"detail": str(err)},
                                headers={"Retry-After": str(err.retry_after)})
        except ClientGone:  # nobody reads this reply; uvicorn drops it
            return JSONResponse(status_code=503, content={"detail": "client disconnected; not computed"})
        predictions = predictor.format_predictions(probs, payload.top_k)
        metrics.answered(predictions)
        # A JSONResponse skips FastAPI's second validation of the reply against PredictResponse (the schema of the
        # docs): it cost more than the rest of the request handling for a short text.
        return JSONResponse({"predictions": predictions, "precision": predictor.precision,
                             "elapsed_ms": 1000 * (time.perf_counter() - started)})

    @app.get("/health")
    async def health() -> dict[str, Any]:  # async: answered on the event loop even when every thread is busy
        return {"status": "ok", "labels": num_labels, "precision": predictor.precision}

    @app.get("/ready", responses={503: {"description": "warming up"}})
    async def ready() -> Any:
        if batcher.ready.is_set():
            return {"status": "ready", "sessions": len(batcher.predictors)}
        return JSONResponse(status_code=503, content={"status": "warming up"}, headers={"Retry-After": "1"})

    @app.get("/metrics")
    def prometheus_metrics() -> Response:  # a thread: the multiprocess collector reads files
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        meta = predictor.metadata
        return {**file_names(predictor.info()), "labels": predictor.label_names,
                "thresholds": predictor.thresholds.tolist(),
                "limits": {"max_chars": max_chars, "max_items": max_items, "max_body_bytes": limits.max_body_bytes,
                           "request_timeout": limits.request_timeout, "max_queue": limits.max_queue,
                           "max_concurrent": limits.max_concurrent, "max_batch_texts": max_batch_texts,
                           "batch_wait_ms": batch_wait_ms, "threads": batcher.threads},
                "export": file_names({k: meta.get(k) for k in ("created", "quantization", "parity", "calibration",
                                                               "sizes_bytes", "versions", "optimization")}),
                "source": file_names({k: v for k, v in (meta.get("source") or {}).items() if k != "config"})}

    # Added last = runs first: every request gets its id and is counted, the key is checked before the body is
    # read, the body is capped before it is parsed.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout)
    app.add_middleware(Arrivals, batcher=batcher)
    if api_key is not None:
        app.add_middleware(APIKeyAuth, api_key=api_key, open_paths=OPEN_PATHS | (DOCS_PATHS if docs else set()))
    app.add_middleware(Observe, metrics=metrics)
    return app


def serve(*, bundle: str, host: str = "127.0.0.1", port: int = 8000, precision: Literal["int8", "fp32"] = "int8",
          threads: Optional[int] = None, max_chars: int = 2000, max_items: int = 64, top_k: int = 5,
          log_level: str = "info", api_key_env: Optional[str] = None, allow_unauthenticated: bool = False,
          docs: bool = False, max_body_bytes: int = 1_000_000, header_timeout: float = 10.0,
          body_timeout: float = 10.0, keep_alive_timeout: float = 5.0, request_timeout: float = 30.0,
          max_queue: int = 32, max_concurrent: int = 1, max_batch_texts: int = 32, batch_wait_ms: float = 2.0,
          max_connections: int = 256, workers: int = 1) -> int:
    """Serve a bundle over HTTP (FastAPI + uvicorn; one process, or several with --workers).

    Args:
        bundle: bundle folder written by `fenlei export`
        host: address to listen on; anything but a loopback address needs --api_key_env or --allow_unauthenticated
        port: port to listen on
        precision: bundle model to serve
        threads: onnxruntime intra-op threads per session (default: one per core, shared out among the sessions)
        max_chars: longest accepted text, in characters (422 above)
        max_items: most texts per request (422 above)
        top_k: default top-k when a request gives none
        log_level: log level (the access log, one line per request with its X-Request-ID, is at info)
        api_key_env: name of the environment variable holding the API key; every path but /health and /ready
            then needs 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (401 without)
        allow_unauthenticated: serve a non-loopback --host without an API key
        docs: serve the OpenAPI schema (/openapi.json) and interactive docs (/docs), open without a key
        max_body_bytes: largest request body, in bytes (413 above; chunked bodies are counted as they arrive)
        header_timeout: seconds to send a complete request head (408 and closed after)
        body_timeout: seconds to send the whole body once the head is in (408 after)
        keep_alive_timeout: seconds an idle keep-alive connection stays open
        request_timeout: seconds from arrival within which a request must be computed (503 with Retry-After after)
        max_queue: requests that may wait for a batch (503 with Retry-After beyond)
        max_concurrent: batches computed at once, each on an onnxruntime session of its own
        max_batch_texts: most texts in one onnxruntime call, gathered from concurrent requests (1: every text alone)
        batch_wait_ms: longest wait of a batch with room for requests that are still being read (0: never wait)
        max_connections: open connections and in-flight requests (503 beyond, from uvicorn), per worker
        workers: server processes on the one port, each with its own model, batches and sessions (the metrics are
            summed over them; --threads defaults to the cores shared out over workers x sessions)
    """
    options = dict(locals())  # the options as given, before any other name exists here
    check_exposure(host, read_api_key(api_key_env), allow_unauthenticated)  # before the bundle loads: milliseconds
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise OptionError(f"--workers must be an integer >= 1, got {workers!r}")
    if workers > 1:
        from fenlei.serving.protocol import server_settings
        from fenlei.serving.workers import serve_workers

        return serve_workers(options, server_settings(limits_of(**options)))
    app = app_of(**options)
    import uvicorn

    from fenlei.serving.protocol import uvicorn_config

    uvicorn.Server(uvicorn_config(app, host, port, app.state.limits, log_level)).run()
    return 0


def limits_of(*, max_body_bytes: int, header_timeout: float, body_timeout: float, keep_alive_timeout: float,
              request_timeout: float, max_queue: int, max_concurrent: int, max_connections: int,
              **_other: Any) -> ServiceLimits:
    """The service limits among ``fenlei serve``'s options (checked by ServiceLimits)."""
    return ServiceLimits(max_body_bytes=max_body_bytes, header_timeout=header_timeout, body_timeout=body_timeout,
                         keep_alive_timeout=keep_alive_timeout, request_timeout=request_timeout, max_queue=max_queue,
                         max_concurrent=max_concurrent, max_connections=max_connections)


def app_of(*, bundle: str, precision: str, threads: Optional[int], max_chars: int, max_items: int, top_k: int,
           log_level: str, api_key_env: Optional[str], docs: bool, max_body_bytes: int, header_timeout: float,
           body_timeout: float, keep_alive_timeout: float, request_timeout: float, max_queue: int, max_concurrent: int,
           max_batch_texts: int, batch_wait_ms: float, max_connections: int, **_server: Any) -> FastAPI:
    """The app of ``fenlei serve``'s options (those of the server itself, host and port, are the server's)."""
    limits = limits_of(max_body_bytes=max_body_bytes, header_timeout=header_timeout, body_timeout=body_timeout,
                       keep_alive_timeout=keep_alive_timeout, request_timeout=request_timeout, max_queue=max_queue,
                       max_concurrent=max_concurrent, max_connections=max_connections)
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise OptionError(f"--log_level must be one of critical, error, warning, info, debug, got {log_level!r}")
    ensure_access_log(level)
    return create_app(bundle, precision=precision, intra_op_threads=threads, max_chars=max_chars,
                      max_items=max_items, default_top_k=top_k, max_batch_texts=max_batch_texts,
                      batch_wait_ms=batch_wait_ms, limits=limits, api_key=read_api_key(api_key_env), docs=docs)


def app_factory() -> FastAPI:
    """The app for any ASGI server, one per worker process: ``uvicorn --factory fenlei.serving.serve:app_factory``.

    Reads the options of ``fenlei serve`` from the environment variable ``FENLEI_SERVE_ARGS`` (e.g.
    ``--bundle bundles/NAME --api_key_env API_KEY``); host, port, the connection cap and the request-head timeout
    are then the server's own options (``uvicorn --host/--port/--limit-concurrency/--timeout-keep-alive``), and
    so is the exposure check: give uvicorn a non-loopback ``--host`` only with ``--api_key_env``."""
    from fenlei.typed_cli import parse_typed

    args = os.environ.get(FACTORY_ENV)
    if not args:
        raise OptionError(f"app_factory: set {FACTORY_ENV} to the options of `fenlei serve` (at least --bundle DIR)")
    return app_of(**parse_typed(serve, shlex.split(args), prog=FACTORY_ENV))


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei serve``; a bad bundle raises BundleError (reported by the fenlei command)."""
    from fenlei.typed_cli import run_typed

    return run_typed(serve, sys.argv[1:] if argv is None else argv, prog="fenlei serve",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
