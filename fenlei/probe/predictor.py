"""Predict with a saved probe: the frozen model's features at the probe's layer, then its head, in one object.

:class:`ProbePredictor` offers what ``fenlei infer``'s writer needs from a predictor (``predict``, ``metadata``,
``max_chars``; see ``fenlei.serving.infer``), so ``fenlei infer --probe DIR`` reads and writes exactly what
``fenlei infer --bundle`` does. It needs torch and transformers for the model (the feature extractor is not an
ONNX graph), so it lives here, not in the torch-free ``fenlei.serving``.

Texts are cut to the characters ``fenlei probe`` kept when it fitted (``fenlei.text_limits``) and batched as it
batched them (sorted by token length, ``batch_size`` of the fit unless given): the test file predicted here gives
the probe's own test predictions (tested); other batchings agree up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fenlei.predictions import prediction_record
from fenlei.probe.store import ProbeError, SavedProbe, load_probe
from fenlei.text_limits import char_budget, cut_text


class ProbePredictor:
    """A saved probe with its model loaded (at construction, after the probe's files are checked).

    Args:
        probe_dir: the probe's run directory (``fenlei probe --run_dir``).
        model: the model to load instead of the one the probe names (same files: checked by sha256).
        device: ``auto`` (the GPU when torch sees one), ``cpu``, ``cuda``.
        num_threads: torch threads.
        progress: a progress bar over the texts of each call (on a terminal).
        backbone: ``(model, tokenizer, context)`` already loaded elsewhere (the cascade's reviewer with its adapter
            switched off by ``context()``, a context manager entered around every extraction); the caller has
            checked that it is the probe's model. None: the probe's model is loaded here.
    """

    def __init__(self, probe_dir: str | Path, model: Optional[str] = None, device: str = "auto",
                 num_threads: Optional[int] = None, progress: bool = False,
                 backbone: Optional[tuple[Any, Any, Any]] = None) -> None:
        import contextlib

        from fenlei.probe.features import load_backbone, load_feature_tokenizer
        from fenlei.probe.identity import identity_problem, model_identity

        self.probe: SavedProbe = load_probe(probe_dir)
        features = self.probe.features
        self.model_name = model or self.probe.model["name"]
        problem = identity_problem(self.probe.model, model_identity(self.model_name))
        if problem:
            raise ProbeError(f"{self.probe.folder}: {problem}")
        if num_threads:
            import torch

            torch.set_num_threads(num_threads)
        if backbone is None:
            self.model = load_backbone(self.model_name, device)
            self.tokenizer = load_feature_tokenizer(self.model_name)
            self.context: Any = contextlib.nullcontext
        else:
            self.model, self.tokenizer, self.context = backbone
        self.layer, self.pooling, self.max_length = features["layer"], features["pooling"], features["max_length"]
        self.batch_size = int(features.get("batch_size") or 16)
        self.progress = progress
        self.label_names = self.probe.label_names
        self.metadata: dict[str, Any] = {"text_fields": list(features["text_fields"]),
                                         "text_separator": features.get("text_separator", " "),
                                         "probe": str(self.probe.folder), "model": self.model_name}
        self.max_chars = char_budget(self.max_length)

    def features(self, texts: Sequence[str], batch_size: Optional[int] = None) -> np.ndarray:
        """``[N, H]`` features at the probe's layer and pooling."""
        from fenlei.probe.features import extract_layers, progress_bar

        texts = [cut_text(t, self.max_chars)[0] for t in texts]
        bar = progress_bar(len(texts), "predict", self.progress)
        try:
            with self.context():
                (out,) = extract_layers(self.model, self.tokenizer, texts, [self.layer], self.pooling, self.max_length,
                                        batch_size or self.batch_size, bar)
        finally:
            bar.close()
        if out.shape[1] and out.shape[1] != self.probe.head.dim:
            raise ProbeError(f"{self.probe.folder}: model {self.model_name!r} gives {out.shape[1]} features at layer "
                             f"{self.layer}, the probe's head takes {self.probe.head.dim}")
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: Optional[int] = None) -> np.ndarray:
        """Calibrated class probabilities ``[N, C]`` (``softmax(logits / T)``), in input order."""
        if not texts:
            return np.zeros((0, len(self.label_names)))
        return self.probe.head.predict_proba(self.features(texts, batch_size), self.probe.temperature)

    def format_predictions(self, probs: np.ndarray, top_k: int = 5, digits: Optional[int] = None) -> list[dict[str, Any]]:
        return [prediction_record(p, self.label_names, top_k, self.probe.threshold, self.probe.uncertain_label, digits)
                for p in np.atleast_2d(probs)]

    def predict(self, texts: list[str], top_k: int = 5, batch_size: Optional[int] = None) -> list[dict[str, Any]]:
        """One prediction record per text (``fenlei.predictions``); under the threshold the label is ``uncertain``."""
        if not texts:
            return []
        return self.format_predictions(self.predict_proba(texts, batch_size), top_k)
