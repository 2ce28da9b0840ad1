"""The figures behind a run report, on NumPy arrays: reliability bins, the most confused label pairs, the
misclassified rows. No plotting and no HTML here (``report_figures``, ``report_html``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label reliability over equal-width confidence bins ``[b/n, (b+1)/n)`` (the bins of
    ``fenlei.calibration.expected_calibration_error``, so the diagram and the ECE agree)."""

    edges: np.ndarray  # (n + 1,)
    count: np.ndarray  # (n,)
    accuracy: np.ndarray  # (n,), NaN for empty bins
    confidence: np.ndarray  # (n,), mean confidence, NaN for empty bins
    ece: float


def reliability_bins(probs: np.ndarray, gold: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    from fenlei.calibration import expected_calibration_error

    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(np.float64)
    bins = np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
        confidence = np.bincount(bins, weights=conf, minlength=n_bins) / count
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), count.astype(np.int64), accuracy, confidence,
                           expected_calibration_error(probs, gold, n_bins))


@dataclass(frozen=True)
class ConfusedPair:
    gold: str
    predicted: str
    count: int
    share_of_gold: float  # of the gold label's rows, how many went to ``predicted``
    examples: list[dict[str, Any]]  # the pair's rows, most confident mistakes first


def confused_pairs(gold: np.ndarray, pred: np.ndarray, conf: np.ndarray, records: Sequence[dict[str, Any]],
                   labels: Sequence[str], top: int = 10, examples: int = 3) -> list[ConfusedPair]:
    """The ``top`` (gold, predicted) pairs with the most errors, ties in label order; each with up to ``examples``
    rows (most confident first)."""
    n = len(labels)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (gold, pred), 1)
    np.fill_diagonal(matrix, 0)
    support = np.bincount(gold, minlength=n)
    flat = np.argsort(-matrix, axis=None, kind="stable")
    pairs = []
    for index in flat[:top]:
        g, p = divmod(int(index), n)
        if matrix[g, p] == 0:
            break
        rows = np.flatnonzero((gold == g) & (pred == p))
        rows = rows[np.argsort(-conf[rows], kind="stable")][:examples]
        pairs.append(ConfusedPair(labels[g], labels[p], int(matrix[g, p]), float(matrix[g, p] / support[g]),
                                  [records[i] for i in rows]))
    return pairs


def misclassified(gold: np.ndarray, probs: np.ndarray, records: Sequence[dict[str, Any]],
                  labels: Sequence[str]) -> list[dict[str, Any]]:
    """Every wrongly predicted row, most confident mistakes first: its line, text, gold and predicted label, the
    confidence and the probability the model gave the gold label."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != gold)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")]
    return [{"line": records[i].get("line", ""), "text": records[i].get("text", ""), "gold": labels[gold[i]],
             "predicted": labels[pred[i]], "confidence": float(probs[i, pred[i]]), "p_gold": float(probs[i, gold[i]])}
            for i in wrong]
