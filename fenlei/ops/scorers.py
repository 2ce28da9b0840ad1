"""Scorers: anything that turns texts into class probabilities, for model comparison and active learning.

A scorer has ``name``, ``label_names``, ``n_params`` and ``predict_proba(texts, batch_size) -> (N, C)`` array.
Two kinds exist:

- :class:`RunScorer`: a run directory (``config.yaml`` + best checkpoint), scored in torch on the CPU;
- :class:`BundleScorer`: a deployment bundle (``metadata.json`` + ``model_int8.onnx``) through
  ``fenlei.serving.predictor.BundlePredictor``.

:func:`load_scorer` tells them apart by the files a directory holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from fenlei.ops.runs import OpsError


class Scorer(Protocol):
    name: str
    label_names: list[str]
    n_params: Optional[int]

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


def is_bundle(path: Path) -> bool:
    return (path / "metadata.json").is_file() and any(path.glob("*.onnx"))


def is_run_dir(path: Path) -> bool:
    from fenlei.training.run_dir import RunDir

    return RunDir(path).looks_like_run()


def load_scorer(path: str | Path, name: Optional[str] = None, precision: str = "int8",
                threads: Optional[int] = None) -> Scorer:
    """A scorer for a run directory or a bundle directory (OpsError when it is neither)."""
    path = Path(path)
    if not path.is_dir():
        raise OpsError(f"{path}: no such directory (expected a run directory or a bundle)")
    if is_bundle(path):
        return BundleScorer(path, name=name, precision=precision, threads=threads)
    if is_run_dir(path):
        return RunScorer(path, name=name)
    raise OpsError(f"{path}: neither a run directory (config.yaml + checkpoints/) nor a bundle (metadata.json + "
                   "*.onnx)")


class RunScorer:
    """The best checkpoint of a finished fit, rebuilt by :func:`fenlei.training.run_dir.load_run` from the model
    and DataModule classes its ``config.yaml`` records (tokenizer, ``max_length``, feature markers as in training),
    scored in torch through the module's own ``predict_step``. ``text_fields``: the run's input fields, which
    :meth:`LoadedRun.text_of` joins as the DataModule does."""

    def __init__(self, run_dir: Path, name: Optional[str] = None, checkpoint: Optional[Path] = None) -> None:
        from fenlei.training.run_dir import RunError, load_run

        self.run_dir = Path(run_dir)
        self.name = name or self.run_dir.name
        try:
            self.run = load_run(checkpoint or self.run_dir, run_dir=self.run_dir)
        except RunError as err:
            raise OpsError(str(err)) from None
        self.checkpoint = self.run.checkpoint
        self.label_names = self.run.label_names
        self.text_fields = self.run.text_fields
        self.n_params = int(sum(p.numel() for p in self.run.model.parameters()))

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return np.asarray(self.run.predict_proba(list(texts), batch_size=batch_size))


class BundleScorer:
    """A deployment bundle through ``fenlei.serving.predictor.BundlePredictor`` (ONNX Runtime; INT8 by default)."""

    def __init__(self, bundle_dir: Path, name: Optional[str] = None, precision: str = "int8",
                 threads: Optional[int] = None) -> None:
        import inspect

        try:
            from fenlei.serving.predictor import BundlePredictor
        except ImportError as err:
            raise OpsError(f"{bundle_dir}: scoring a bundle needs fenlei.serving.predictor ({err})") from None
        self.bundle_dir = Path(bundle_dir)
        self.name = name or f"{self.bundle_dir.name} ({precision})"
        kwargs: dict[str, Any] = {}
        accepted = inspect.signature(BundlePredictor).parameters
        # Pass the thread count if the predictor takes one (latencies compare only at equal parallelism).
        for key in ("intra_op_threads", "threads", "num_threads", "intra_op_num_threads"):
            if threads is not None and key in accepted:
                kwargs[key] = threads
                break
        self.threads_set = bool(kwargs)
        self.predictor = BundlePredictor(self.bundle_dir, precision=precision, **kwargs)
        self.label_names = [str(label) for label in self.predictor.label_names]
        self.n_params = bundle_param_count(self.bundle_dir, precision)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return np.asarray(self.predictor.predict_proba(list(texts), batch_size=batch_size))


def bundle_param_count(bundle_dir: Path, precision: str = "int8") -> Optional[int]:
    """From ``metadata.json`` (``n_params``, ``num_parameters`` or ``parameters``) if present, else the number of
    elements of the ONNX graph's non-scalar initializers (weights; quantization scales and zero points are
    scalars or per-channel vectors, so the count is a close upper bound)."""
    metadata: dict[str, Any] = json.loads((bundle_dir / "metadata.json").read_text())
    for key in ("n_params", "num_parameters", "parameters", "param_count"):
        if isinstance(metadata.get(key), int):
            return int(metadata[key])
    candidates = [bundle_dir / f"model_{precision}.onnx", bundle_dir / "model.onnx", *sorted(bundle_dir.glob("*.onnx"))]
    model_path = next((p for p in candidates if p.is_file()), None)
    if model_path is None:
        return None
    try:
        import onnx
    except ImportError:
        return None
    graph = onnx.load(str(model_path), load_external_data=False).graph
    total = 0
    for init in graph.initializer:
        size = int(np.prod(init.dims)) if len(init.dims) else 1
        if size > 1:
            total += size
    return total
