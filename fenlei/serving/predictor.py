"""Run an exported bundle with onnxruntime, tokenizers and NumPy only (no torch, no transformers).

The bundle (see ``docs/deployment.md``) holds ``model_fp32.onnx``, ``model_int8.onnx``, ``tokenizer.json``,
``labels.json``, ``calibration.json`` and ``metadata.json``, each checked before use (``bundle_check.py``: format,
parity verdict, temperature, thresholds, labels, max_length, files inside the bundle, sha256 of the tokenizer and
model). :class:`BundlePredictor` loads one ONNX session and
reuses it for every call; texts are tokenized with the bundle's own ``tokenizer.json`` (truncated to the
``max_length`` the model was trained with) and padded per batch to the longest text in the batch, not to
``max_length``, which is what makes short texts cheap.

Output of :meth:`BundlePredictor.predict`, one dict per text::

    {"label": "card_arrival" | "uncertain",   # "uncertain" when the confidence is under the threshold
     "predicted_label": "card_arrival",        # the argmax label, always present
     "confidence": 0.93,                       # calibrated max-softmax probability of predicted_label
     "uncertain": false,
     "top_k": [{"label": "card_arrival", "score": 0.93}, ...]}

Probabilities are ``softmax(logits / T)`` with the temperature ``T`` fitted at export time for the chosen
precision; the threshold (global or per predicted class) comes from the same ``calibration.json`` entry.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fenlei.cpu import CPUINFO, read_cpu
from fenlei.numerics import softmax
from fenlei.predictions import prediction_record
from fenlei.serving.bundle_check import (
    BUNDLE_FILES,
    PRECISIONS,
    UNCERTAIN,
    BundleError,
    disabled_optimizers,
    load_bundle,
    read_json,
)
from fenlei.text_limits import char_budget, cut_text

__all__ = ["BUNDLE_FILES", "PRECISIONS", "UNCERTAIN", "BundleError", "BundlePredictor", "cpu_has_vnni",
           "disabled_optimizers", "ort_session", "read_json", "saturation_warning", "session_options", "softmax"]


def session_options(intra_op_threads: int | None = None) -> Any:
    """ORT session options used everywhere (predictor, export's parity gate, benchmarks): one place to tune."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One inference at a time per session call; parallelism comes from intra-op threads (matrix multiplies).
    opts.inter_op_num_threads = 1
    if intra_op_threads:
        opts.intra_op_num_threads = int(intra_op_threads)
    return opts


def ort_session(model_path: str | Path, intra_op_threads: int | None = None,
                disabled_optimizers: Sequence[str] = ()) -> Any:
    """One CPU onnxruntime session with :func:`session_options`; ``disabled_optimizers`` names onnxruntime graph
    transformers to skip (a bundle lists the fusions that would undo its CPU rewrites, see fenlei.deploy.cpu_rewrites)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(model_path), sess_options=session_options(intra_op_threads),
                                providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled_optimizers))


def cpu_has_vnni(cpuinfo: Path = CPUINFO) -> bool | None:
    """Whether this CPU has a VNNI-class INT8 dot product (AVX512-VNNI, AVX-VNNI or AMX-INT8); None where unknown.

    Without one, onnxruntime's u8s8 products sum pairs of products in 16 bits, which saturates with full 8-bit
    weights (the reason for ``reduce_range``)."""
    return read_cpu(cpuinfo).vnni


def saturation_warning(metadata: dict[str, Any], here_vnni: bool | None) -> str | None:
    """A warning when a dynamic INT8 model with full-range 8-bit weights was validated on a CPU with VNNI and is
    loaded on one without: its parity gate then says nothing about this CPU (u8s8 saturation; see
    docs/deployment.md, where an MPNet model fell to 1% agreement at 8-bit on an AVX2 CPU)."""
    # Advisory only: a missing or malformed entry means "unknown", never a failed load.
    quant, cpu = metadata.get("quantization"), metadata.get("export_cpu")
    if not isinstance(quant, dict) or not isinstance(cpu, dict):
        return None
    exported_vnni = cpu.get("vnni")
    risky = quant.get("mode") == "dynamic" and quant.get("weight_type") == "QInt8" and quant.get("reduce_range") is False
    if risky and exported_vnni is True and here_vnni is False:
        return ("model_int8.onnx has 8-bit weights and passed its parity gate on a CPU with VNNI; this CPU has none, "
                "and there its u8s8 products can saturate. Re-run the export on this kind of CPU (it retries with "
                "7-bit weights when needed) or export with --reduce_range.")
    return None


class BundlePredictor:
    """Predict with a fenlei bundle.

    Args:
        bundle_dir: Folder written by ``python cli.py export``.
        precision: ``int8`` (default, ``model_int8.onnx``) or ``fp32`` (``model_fp32.onnx``).
        intra_op_threads: onnxruntime intra-op threads (default: onnxruntime's choice, one per core).
    """

    def __init__(self, bundle_dir: str | Path, precision: str = "int8", intra_op_threads: int | None = None, *,
                 building: bool = False) -> None:
        from tokenizers import Tokenizer

        # Every file and value is checked before use (fenlei.serving.bundle_check); building: the export's parity
        # gate on its own unfinished temporary folder, never a user's bundle.
        bundle = load_bundle(bundle_dir, precision, building=building)
        self.bundle_dir = bundle.folder
        self.precision = precision
        self.metadata: dict[str, Any] = bundle.metadata
        self.label_names: list[str] = bundle.label_names
        self.uncertain_label: str = bundle.uncertain_label
        self.temperature = bundle.temperature
        self.thresholds = bundle.thresholds
        self.max_length = bundle.max_length
        self.pad_token_id = bundle.pad_token_id
        try:
            self.tokenizer = Tokenizer.from_file(str(bundle.tokenizer_file))
        except Exception as err:  # tokenizers raises a bare Exception for a file it cannot parse
            raise BundleError(f"{bundle.tokenizer_file}: not a tokenizers file ({err})") from None
        # The DataModule tokenizes with truncation=True, max_length=...; padding is done here per batch.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        # Texts are cut to this many characters before tokenizing: the tokenizer would walk all of a 100 MB text
        # to keep max_length tokens of it (fenlei.text_limits).
        self.max_chars = char_budget(self.max_length)

        model_path = bundle.model_file
        self.model_path = model_path
        self.disabled_optimizers = tuple(bundle.disabled_optimizers)
        try:
            self.session = ort_session(model_path, intra_op_threads, self.disabled_optimizers)
        except Exception as err:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...) share no base
            raise BundleError(f"{model_path}: onnxruntime cannot load it ({' '.join(str(err).split())[:300]})") from None
        self.warnings: list[str] = list(bundle.warnings)
        if precision == "int8" and (message := saturation_warning(self.metadata, cpu_has_vnni())):
            self.warnings.append(message)
        for message in self.warnings:
            warnings.warn(f"{self.bundle_dir}: {message}", RuntimeWarning, stacklevel=2)
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in self.input_names:
            raise BundleError(f"{model_path}: unexpected model inputs {self.input_names}")
        # The output size against labels.json: from the graph where it is static, else on every run (predict_logits).
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.label_names):
            raise BundleError(f"{model_path}: {n_out} outputs but labels.json has {len(self.label_names)} labels")

    def with_new_session(self, intra_op_threads: int | None = None) -> BundlePredictor:
        """A predictor sharing this one's checked bundle and tokenizer, with an onnxruntime session of its own: the
        service's pool runs one batch per session at a time (the bundle is not read or checked again)."""
        twin = copy.copy(self)
        twin.session = ort_session(self.model_path, intra_op_threads, self.disabled_optimizers)
        return twin

    def _checked_logits(self, logits: Any) -> np.ndarray:
        """A graph whose class axis is dynamic is checked on what it returns: never a silent broadcast or crash."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] != len(self.label_names):
            raise BundleError(f"{self.model_path}: the model returns logits of shape {list(logits.shape)}, but "
                              f"labels.json has {len(self.label_names)} labels")
        return logits

    # ---- tokenization and raw logits ----

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Token ids and attention mask for one batch, padded to its longest text (int64, as exported)."""
        encodings = self.tokenizer.encode_batch([cut_text(t, self.max_chars)[0] for t in texts])
        width = max(1, max(len(e.ids) for e in encodings))
        input_ids = np.full((len(encodings), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            input_ids[row, : len(enc.ids)] = enc.ids
            attention_mask[row, : len(enc.ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return {k: v for k, v in feeds.items() if k in self.input_names}

    def _batches(self, texts: Sequence[str], batch_size: int) -> Iterator[np.ndarray]:
        """Indices of ``texts`` in batches of similar length (less padding); order is restored by the caller."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def predict_logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Raw (uncalibrated) logits, shape (N, C), float32, in input order."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float32)
        for idx in self._batches(texts, batch_size):
            out[idx] = self._checked_logits(self.session.run(None, self.encode([texts[i] for i in idx]))[0])
        return out

    # ---- calibrated outputs ----

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Temperature-calibrated class probabilities, shape (N, C), in input order."""
        return softmax(self.predict_logits(texts, batch_size), self.temperature)

    def format_predictions(self, probs: np.ndarray, top_k: int = 5) -> list[dict[str, Any]]:
        """Turn calibrated probabilities into the documented prediction dicts (label, confidence, top-k, uncertain)."""
        return [prediction_record(p, self.label_names, top_k, float(self.thresholds[int(np.argmax(p))]),
                                  self.uncertain_label) for p in np.atleast_2d(probs)]

    def predict(self, texts: list[str], top_k: int = 5, batch_size: int = 32) -> list[dict[str, Any]]:
        """One prediction dict per text (see the module docstring); under-threshold ones have label ``uncertain``."""
        if not texts:
            return []
        return self.format_predictions(self.predict_proba(texts, batch_size), top_k)

    def info(self) -> dict[str, Any]:
        """A short public summary (for ``/metadata`` and logs)."""
        return {
            "bundle": os.fspath(self.bundle_dir),
            "precision": self.precision,
            "num_labels": len(self.label_names),
            "labels": self.label_names,
            "max_length": self.max_length,
            "temperature": self.temperature,
            "uncertain_label": self.uncertain_label,
            "warnings": self.warnings,
        }
