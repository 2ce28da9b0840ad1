"""HTTP service for an exported bundle (FastAPI + onnxruntime; no torch, no transformers).

    fenlei serve --bundle bundles/NAME --host 0.0.0.0 --port 8000

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /predict`` with ``{"text": "..."}`` or ``{"texts": ["...", ...]}`` (optional ``"top_k"``) returns
  ``{"predictions": [{"label", "predicted_label", "confidence", "uncertain", "top_k": [{"label", "score"}]}]}``,
  one per text, in order. ``label`` is ``"uncertain"`` under the bundle's confidence threshold.
- ``GET /health``: ``{"status": "ok"}`` once the model is loaded (it is loaded before the server accepts requests).
- ``GET /metadata``: labels, precision, temperature, thresholds and the bundle's export metadata.

Bad requests answer 422 with a message naming the problem (missing text, both or neither of text/texts, empty
text, text over ``max_chars``, more than ``max_items`` texts, top_k out of range, malformed JSON), never 500.
One onnxruntime session serves every request; inference calls are serialised with a lock, because on a few CPU
cores concurrent sessions only fight over the same cores (each call already uses all intra-op threads).
"""

# No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations, and the request model is
# built inside create_app (its limits are arguments), where string annotations could not be resolved.

import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal, Optional

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fenlei.errors import exit_status_of
from fenlei.serving.predictor import BundlePredictor


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


def create_app(bundle_dir: str | Path, precision: str = "int8", intra_op_threads: Optional[int] = None,
               max_chars: int = 2000, max_items: int = 64, default_top_k: int = 5, batch_size: int = 32) -> FastAPI:
    """Build the FastAPI app around one :class:`BundlePredictor` (loaded here, before the first request)."""
    predictor = BundlePredictor(bundle_dir, precision=precision, intra_op_threads=intra_op_threads)
    num_labels = len(predictor.label_names)
    lock = threading.Lock()

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

    app = FastAPI(title="fenlei classifier", version=str(predictor.metadata.get("format_version", 1)),
                  description=f"Text classification with {num_labels} labels from bundle {Path(bundle_dir).name}.")
    app.state.predictor = predictor

    @app.post("/predict", response_model=PredictResponse)
    def predict(request: PredictRequest) -> dict[str, Any]:
        texts = [request.text] if request.text is not None else list(request.texts or [])
        started = time.perf_counter()
        with lock:
            predictions = predictor.predict(texts, top_k=request.top_k, batch_size=batch_size)
        return {"predictions": predictions, "precision": predictor.precision,
                "elapsed_ms": 1000 * (time.perf_counter() - started)}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "labels": num_labels, "precision": predictor.precision}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        meta = predictor.metadata
        return {**predictor.info(), "thresholds": predictor.thresholds.tolist(),
                "limits": {"max_chars": max_chars, "max_items": max_items},
                "export": {k: meta.get(k) for k in ("created", "quantization", "parity", "calibration", "sizes_bytes",
                                                    "versions", "optimization")},
                "source": {k: v for k, v in (meta.get("source") or {}).items() if k != "config"}}

    return app


def serve(*, bundle: str, host: str = "127.0.0.1", port: int = 8000, precision: Literal["int8", "fp32"] = "int8",
          threads: Optional[int] = None, max_chars: int = 2000, max_items: int = 64, top_k: int = 5,
          log_level: str = "info") -> None:
    """Serve a bundle over HTTP (FastAPI + uvicorn, one worker).

    Args:
        bundle: bundle folder written by `fenlei export`
        host: address to listen on
        port: port to listen on
        precision: bundle model to serve
        threads: onnxruntime intra-op threads (default: one per core)
        max_chars: longest accepted text, in characters
        max_items: most texts per request
        top_k: default top-k when a request gives none
        log_level: uvicorn log level
    """
    app = create_app(bundle, precision=precision, intra_op_threads=threads, max_chars=max_chars, max_items=max_items,
                     default_top_k=top_k)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei serve``; a bad bundle raises BundleError (reported by the fenlei command)."""
    from fenlei.typed_cli import run_typed

    return run_typed(serve, sys.argv[1:] if argv is None else argv, prog="fenlei serve",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
