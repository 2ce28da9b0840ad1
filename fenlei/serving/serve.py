"""HTTP service for an exported bundle (FastAPI + onnxruntime; no torch, no transformers).

    API_KEY=... fenlei serve --bundle bundles/NAME --host 0.0.0.0 --port 8000 --api_key_env API_KEY

Endpoints:

- ``POST /predict`` with ``{"text": "..."}`` or ``{"texts": ["...", ...]}`` (optional ``"top_k"``) returns
  ``{"predictions": [{"label", "predicted_label", "confidence", "uncertain", "top_k": [{"label", "score"}]}]}``,
  one per text, in order. ``label`` is ``"uncertain"`` under the bundle's confidence threshold.
- ``GET /health``: ``{"status": "ok"}`` once the model is loaded (it is loaded before the server accepts requests);
  never needs a key.
- ``GET /metadata``: labels, precision, temperature, thresholds, limits and the bundle's export metadata (file
  names, never absolute paths).
- ``/docs`` and ``/openapi.json`` only with ``--docs``.

With ``--api_key_env NAME``, ``/predict`` and ``/metadata`` need the key (fenlei.serving.auth); a non-loopback
``--host`` without a key refuses to start unless ``--allow_unauthenticated``. Limits (fenlei.serving.limits,
fenlei.serving.admission, fenlei.serving.protocol) apply before anything is parsed: body size (413), head and body
timeouts (408), a bounded queue and a request deadline (503 with ``Retry-After``); a request whose client has gone
is not computed. Bad requests answer 422 with a message naming the problem and never echo the input: missing
text, both or neither of text/texts, empty text, text over ``max_chars``, a lone surrogate, a text with no visible
character, more than ``max_items`` texts, top_k out of range or not finite, malformed JSON. Never a 500.
One onnxruntime session serves every request, ``max_concurrent`` (default 1) calls at a time: on a few CPU cores
concurrent calls only fight over the same cores (each call already uses all intra-op threads).
"""

# No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations, and the request model is
# built inside create_app (its limits are arguments), where string annotations could not be resolved.

import asyncio
import os
import sys
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal, Optional

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fenlei.errors import exit_status_of
from fenlei.serving.admission import Admission, ClientGone, Overloaded
from fenlei.serving.auth import DOCS_PATHS, OPEN_PATHS, APIKeyAuth, check_exposure, read_api_key
from fenlei.serving.limits import ARRIVAL_KEY, BodyLimit, ServiceLimits
from fenlei.serving.predictor import BundlePredictor
from fenlei.text_limits import text_problem

MAX_ERRORS = 10  # validation errors listed per reply (a 1 MB list of bad items would give 100,000s)


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
               max_chars: int = 2000, max_items: int = 64, default_top_k: int = 5, batch_size: int = 32,
               limits: Optional[ServiceLimits] = None, api_key: Optional[str] = None, docs: bool = False) -> FastAPI:
    """Build the FastAPI app around one :class:`BundlePredictor` (loaded here, before the first request).

    ``limits``: the service limits (defaults of :class:`ServiceLimits`); ``api_key``: required on every path but
    ``/health`` (and the docs) when given; ``docs``: serve ``/docs`` and ``/openapi.json``."""
    limits = limits or ServiceLimits()
    predictor = BundlePredictor(bundle_dir, precision=precision, intra_op_threads=intra_op_threads)
    num_labels = len(predictor.label_names)
    admission = Admission(max_concurrent=limits.max_concurrent, max_queue=limits.max_queue)

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

    app = FastAPI(title="fenlei classifier", version=str(predictor.metadata.get("format_version", 1)),
                  description=f"Text classification with {num_labels} labels from bundle {Path(bundle_dir).name}.",
                  docs_url="/docs" if docs else None, redoc_url=None, openapi_url="/openapi.json" if docs else None)
    app.state.predictor = predictor
    app.state.admission = admission
    app.state.limits = limits

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": public_errors(exc.errors())})

    async def compute(texts: list[str], top_k: int, deadline: float, request: Request) -> list[dict[str, Any]]:
        """Predict in batches of similar length, checking before each that the client is still there and the
        deadline has not passed: an abandoned or late request stops costing CPU after at most one batch."""
        loop = asyncio.get_running_loop()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Any] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            if await request.is_disconnected():
                admission.stats["client_gone"] += 1
                raise ClientGone
            if loop.time() > deadline:
                admission.stats["deadline"] += 1
                raise Overloaded(f"not computed within the request deadline of {limits.request_timeout:g} s; "
                                 "retry later or send fewer texts", admission.retry_after())
            index = order[start:start + batch_size]
            batch = await run_in_threadpool(predictor.predict, [texts[i] for i in index], top_k, batch_size)
            for i, prediction in zip(index, batch, strict=True):
                out[i] = prediction
        return out

    @app.post("/predict", response_model=PredictResponse,
              responses={401: {"description": "missing or wrong API key"}, 408: {"description": "body too slow"},
                         413: {"description": "body too large"}, 422: {"description": "invalid request"},
                         503: {"description": "queue full or deadline passed (see Retry-After)"}})
    async def predict(payload: PredictRequest, request: Request) -> Any:
        texts = [payload.text] if payload.text is not None else list(payload.texts or [])
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = request.scope.get(ARRIVAL_KEY, loop.time()) + limits.request_timeout
        try:
            async with admission.slot(deadline, request.is_disconnected, limits.request_timeout):
                predictions = await compute(texts, payload.top_k, deadline, request)
        except Overloaded as err:
            return JSONResponse(status_code=503, content={"detail": str(err)},
                                headers={"Retry-After": str(err.retry_after)})
        except ClientGone:  # nobody reads this reply; uvicorn drops it
            return JSONResponse(status_code=503, content={"detail": "client disconnected; not computed"})
        return {"predictions": predictions, "precision": predictor.precision,
                "elapsed_ms": 1000 * (time.perf_counter() - started)}

    @app.get("/health")
    async def health() -> dict[str, Any]:  # async: answered on the event loop even when every thread is busy
        return {"status": "ok", "labels": num_labels, "precision": predictor.precision}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        meta = predictor.metadata
        return {**file_names(predictor.info()), "labels": predictor.label_names,
                "thresholds": predictor.thresholds.tolist(),
                "limits": {"max_chars": max_chars, "max_items": max_items, "max_body_bytes": limits.max_body_bytes,
                           "request_timeout": limits.request_timeout, "max_queue": limits.max_queue,
                           "max_concurrent": limits.max_concurrent},
                "export": file_names({k: meta.get(k) for k in ("created", "quantization", "parity", "calibration",
                                                               "sizes_bytes", "versions", "optimization")}),
                "source": file_names({k: v for k, v in (meta.get("source") or {}).items() if k != "config"})}

    # Added last = runs first: the key is checked before the body is read, the body is capped before it is parsed.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout)
    if api_key is not None:
        app.add_middleware(APIKeyAuth, api_key=api_key, open_paths=OPEN_PATHS | (DOCS_PATHS if docs else set()))
    return app


def serve(*, bundle: str, host: str = "127.0.0.1", port: int = 8000, precision: Literal["int8", "fp32"] = "int8",
          threads: Optional[int] = None, max_chars: int = 2000, max_items: int = 64, top_k: int = 5,
          log_level: str = "info", api_key_env: Optional[str] = None, allow_unauthenticated: bool = False,
          docs: bool = False, max_body_bytes: int = 1_000_000, header_timeout: float = 10.0,
          body_timeout: float = 10.0, keep_alive_timeout: float = 5.0, request_timeout: float = 30.0,
          max_queue: int = 32, max_concurrent: int = 1, max_connections: int = 256) -> None:
    """Serve a bundle over HTTP (FastAPI + uvicorn, one worker).

    Args:
        bundle: bundle folder written by `fenlei export`
        host: address to listen on; anything but a loopback address needs --api_key_env or --allow_unauthenticated
        port: port to listen on
        precision: bundle model to serve
        threads: onnxruntime intra-op threads (default: one per core)
        max_chars: longest accepted text, in characters (422 above)
        max_items: most texts per request (422 above)
        top_k: default top-k when a request gives none
        log_level: uvicorn log level
        api_key_env: name of the environment variable holding the API key; /predict and /metadata then need
            'Authorization: Bearer KEY' or 'X-API-Key: KEY' (401 without)
        allow_unauthenticated: serve a non-loopback --host without an API key
        docs: serve the OpenAPI schema (/openapi.json) and interactive docs (/docs), open without a key
        max_body_bytes: largest request body, in bytes (413 above; chunked bodies are counted as they arrive)
        header_timeout: seconds to send a complete request head (408 and closed after)
        body_timeout: seconds to send the whole body once the head is in (408 after)
        keep_alive_timeout: seconds an idle keep-alive connection stays open
        request_timeout: seconds from arrival within which a request must be computed (503 with Retry-After after)
        max_queue: requests that may wait for a compute slot (503 with Retry-After beyond)
        max_concurrent: requests computed at once
        max_connections: open connections and in-flight requests (503 beyond, from uvicorn)
    """
    limits = ServiceLimits(max_body_bytes=max_body_bytes, header_timeout=header_timeout, body_timeout=body_timeout,
                           keep_alive_timeout=keep_alive_timeout, request_timeout=request_timeout,
                           max_queue=max_queue, max_concurrent=max_concurrent, max_connections=max_connections)
    api_key = read_api_key(api_key_env)
    check_exposure(host, api_key, allow_unauthenticated)  # before the bundle loads: refuse in milliseconds
    app = create_app(bundle, precision=precision, intra_op_threads=threads, max_chars=max_chars, max_items=max_items,
                     default_top_k=top_k, limits=limits, api_key=api_key, docs=docs)
    import uvicorn

    from fenlei.serving.protocol import uvicorn_config

    uvicorn.Server(uvicorn_config(app, host, port, limits, log_level)).run()


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei serve``; a bad bundle raises BundleError (reported by the fenlei command)."""
    from fenlei.typed_cli import run_typed

    return run_typed(serve, sys.argv[1:] if argv is None else argv, prog="fenlei serve",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
