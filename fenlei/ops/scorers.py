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
    return (path / "config.yaml").is_file() and ((path / "run_summary.json").is_file() or (path / "checkpoints").is_dir())


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
    """The best checkpoint of a finished fit, with the tokenizer and ``max_length`` of the run's ``config.yaml``."""

    def __init__(self, run_dir: Path, name: Optional[str] = None, checkpoint: Optional[Path] = None) -> None:
        import torch
        import yaml

        from fenlei.pretrained import resolve_pretrained
        from fenlei.training.cli import RunError, best_checkpoint
        from lightning_modules import EncoderClassifier

        self.run_dir = Path(run_dir)
        self.name = name or self.run_dir.name
        config = yaml.safe_load((self.run_dir / "config.yaml").read_text()) or {}
        data_args = (config.get("data") or {}).get("init_args") or {}
        if "tokenizer" not in data_args:
            raise OpsError(f"{self.run_dir / 'config.yaml'}: no data.init_args.tokenizer")
        try:
            self.checkpoint = Path(checkpoint) if checkpoint else best_checkpoint(self.run_dir)
        except RunError as err:
            raise OpsError(str(err)) from None
        self.max_length = int(data_args.get("max_length", 128))
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(data_args["tokenizer"]))
        self.model = EncoderClassifier.load_from_checkpoint(self.checkpoint, map_location="cpu").eval()
        self.label_names = list(self.model.hparams.label_names or range(self.model.hparams.num_classes))
        self.label_names = [str(label) for label in self.label_names]
        self.n_params = int(sum(p.numel() for p in self.model.parameters()))
        self._torch = torch

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[start:start + batch_size]), truncation=True,
                                       max_length=self.max_length, padding=True, return_tensors="pt")
                logits = self.model(batch["input_ids"], batch["attention_mask"]).float()
                out.append(torch.softmax(logits, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.label_names)), dtype=np.float32)


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
