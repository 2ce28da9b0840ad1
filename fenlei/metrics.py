"""fenlei's metrics on NumPy arrays: the one macro-F1, and the metrics for binned numeric targets.

``macro_f1`` is scikit-learn's ``f1_score(average="macro", zero_division=0)``: the unweighted mean of per-class
F1 over the classes that occur in the targets or the predictions (every report, gate and benchmark uses it).

Numeric targets: how far off, in target units and in bins, a bin prediction is.

Accuracy alone hides how wrong an ordinal prediction is (bin 0 vs bin 3 counts the same as bin 2 vs bin 3),
so these report target-unit error (``target_mae``, to compare against ``constant_predictor_mae``, the
baseline any model must beat), bin distance (``mae_in_bins``) and quadratic weighted kappa.
NumPy and scikit-learn only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score

__all__ = [
    "macro_f1",
    "constant_predictor_mae",
    "exact_bin_accuracy",
    "mae_in_bins",
    "ordinal_decode",
    "quadratic_weighted_kappa",
    "target_mae",
]


def macro_f1(y_true: Any, y_pred: Any, labels: Any = None) -> float:
    """Macro F1 over ``labels`` (default: the classes present in ``y_true`` or ``y_pred``), 0 for a class never hit."""
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(y_true), np.asarray(y_pred), labels=labels, average="macro", zero_division=0))


def worst_class_f1(y_true: Any, y_pred: Any) -> float:
    """The lowest per-class F1 over the classes that occur in ``y_true`` (negative ids, labels unseen in training,
    are left out): the class a macro average hides. A class only ever predicted is not counted (its F1 is 0 by
    definition and would say nothing about the classes the test set has)."""
    from sklearn.metrics import f1_score

    true = np.asarray(y_true)
    present = sorted(int(c) for c in set(true.tolist()) if c >= 0)
    if not present:
        return 0.0
    return float(f1_score(true, np.asarray(y_pred), labels=present, average=None, zero_division=0).min())


def _1d(values: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    return array


def _bins(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of bin ids")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name} must hold integer bin ids (use ordinal_decode for regressed values)")
        array = array.astype(np.int64)
    return array.astype(np.int64)


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} vs {len(b)}")


def target_mae(true_targets: Any, predicted_bins: Any, bin_medians: Any) -> float:
    """Mean |target - median of the predicted bin|: the error in target units (e.g. words) of a bin predictor.

    Replacing a bin by its train median is the natural point estimate for "how long will the answer be";
    this makes classifiers over different binnings comparable with each other and with regression.
    """
    y = _1d(true_targets, "true_targets")
    bins = _bins(predicted_bins, "predicted_bins")
    medians = _1d(bin_medians, "bin_medians")
    _same_length(y, bins)
    if bins.min() < 0 or bins.max() >= len(medians):
        raise ValueError(f"predicted_bins must lie in [0, {len(medians) - 1}]")
    return float(np.abs(y - medians[bins]).mean())


def constant_predictor_mae(train_targets: Any, test_targets: Any) -> float:
    """MAE of always predicting the train median (the MAE-optimal constant): the floor a model must beat."""
    train = _1d(train_targets, "train_targets")
    test = _1d(test_targets, "test_targets")
    return float(np.abs(test - np.median(train)).mean())


def mae_in_bins(true_bins: Any, predicted_bins: Any) -> float:
    """Mean absolute distance in bin ids (0 = exact, 1 = off by one bin on average)."""
    t, p = _bins(true_bins, "true_bins"), _bins(predicted_bins, "predicted_bins")
    _same_length(t, p)
    return float(np.abs(t - p).mean())


def exact_bin_accuracy(true_bins: Any, predicted_bins: Any) -> float:
    """Fraction of rows whose predicted bin is exactly the true bin."""
    t, p = _bins(true_bins, "true_bins"), _bins(predicted_bins, "predicted_bins")
    _same_length(t, p)
    return float((t == p).mean())


def quadratic_weighted_kappa(true_bins: Any, predicted_bins: Any, num_bins: int | None = None) -> float:
    """Cohen's kappa with quadratic weights (sklearn): chance-corrected agreement that punishes far-off bins more.

    Pass ``num_bins`` so bins absent from both arrays still count as labels (same value as sklearn with
    ``labels=range(num_bins)``). Returns 0.0 where kappa is undefined (e.g. a single label everywhere).
    """
    t, p = _bins(true_bins, "true_bins"), _bins(predicted_bins, "predicted_bins")
    _same_length(t, p)
    labels = None if num_bins is None else list(range(int(num_bins)))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = cohen_kappa_score(t, p, labels=labels, weights="quadratic")
    return 0.0 if np.isnan(score) else float(score)


def ordinal_decode(regressed_values: Any, num_bins: int) -> np.ndarray:
    """Turn regressed bin ids (floats) into valid bin ids: round half up (floor(x + 0.5)), clip to [0, num_bins-1].

    Half-up rather than NumPy's round-half-to-even so that 0.5, 1.5, 2.5 are treated alike.
    """
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    values = _1d(regressed_values, "regressed_values")
    if not np.all(np.isfinite(values)):
        raise ValueError("regressed_values contain NaN or infinite values")
    return np.clip(np.floor(values + 0.5), 0, int(num_bins) - 1).astype(np.int64)


def numeric_target_report(
    true_bins: Any,
    predicted_bins: Any,
    true_targets: Any,
    predicted_values: Any,
    num_bins: int,
    train_median: float,
) -> dict[str, float]:
    """Every figure a numeric-target run reports, bins and target units side by side.

    ``predicted_values`` are point predictions in target units: the predicted bin's train median for bin
    predictors, the regressor's output for regressors. ``f1_macro`` averages per-bin F1 over the bins that occur in
    the targets or the predictions (scikit-learn's definition); ``min_bin_f1`` is the worst of those, so a scheme
    that never predicts a rare bin shows it. ``constant_mae`` is always predicting the train median: a labelling
    whose ``target_mae`` is not clearly below it says little about the number.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import f1_score

    t, p = _bins(true_bins, "true_bins"), _bins(predicted_bins, "predicted_bins")
    y = _1d(true_targets, "true_targets")
    yhat = _1d(predicted_values, "predicted_values")
    _same_length(t, p)
    _same_length(y, yhat)
    _same_length(t, y)
    present = sorted(set(t.tolist()) | set(p.tolist()))
    per_bin = f1_score(t, p, labels=present, average=None, zero_division=0)
    residual = y - yhat
    total = float(((y - y.mean()) ** 2).sum())
    spearman = spearmanr(y, yhat).statistic if len(np.unique(yhat)) > 1 and len(np.unique(y)) > 1 else 0.0
    return {
        "acc": exact_bin_accuracy(t, p),
        "f1_macro": float(per_bin.mean()),
        "min_bin_f1": float(per_bin.min()),
        "mae_bins": mae_in_bins(t, p),
        "qwk": quadratic_weighted_kappa(t, p, num_bins),
        "target_mae": float(np.abs(residual).mean()),
        "target_rmse": float(np.sqrt((residual**2).mean())),
        "target_r2": float(1.0 - (residual**2).sum() / total) if total > 0 else 0.0,
        "target_spearman": float(0.0 if np.isnan(spearman) else spearman),
        "constant_mae": float(np.abs(y - float(train_median)).mean()),
    }
