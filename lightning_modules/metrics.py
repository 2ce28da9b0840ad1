"""Classification metrics: one MetricCollection per stage (never shared, so stages cannot leak into each other).

Definitions (torchmetrics 1.9):
- ``acc``: plain (micro) accuracy; ``top5``: micro top-5 accuracy from the (N, C) scores.
- ``f1_macro``: unweighted mean of per-class F1 over the classes that occur in the targets or the predictions of
  that split (a class with neither is dropped, as scikit-learn's ``f1_score(average="macro")`` does).
- ``f1_weighted``: per-class F1 weighted by support.
- ``ece``: expected calibration error, 15 equal-width bins over max-softmax confidence.
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    metrics = {
        "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "f1_macro": MulticlassF1Score(num_classes=num_classes, average="macro"),
        "f1_weighted": MulticlassF1Score(num_classes=num_classes, average="weighted"),
        "ece": MulticlassCalibrationError(num_classes=num_classes, n_bins=15, norm="l1"),
    }
    if num_classes > 5:
        metrics["top5"] = MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


def calibration_safe_probs(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities with confidence clamped below 1.0: torchmetrics puts a confidence of exactly 1.0
    into an extra bin (open bug), which distorts ECE for very confident models."""
    return torch.softmax(logits.float(), dim=-1).clamp(max=1.0 - 1e-6)
