"""Confidence thresholds for abstention, chosen on validation data, and applying them at serving time.

Rule everywhere: a prediction is *accepted* iff ``confidence >= threshold``; otherwise it comes back as
``uncertain``. Confidences should be the calibrated max-softmax probabilities (after temperature scaling), the same
quantity the serving side computes, so that a threshold chosen on validation means the same thing in production.

Tie handling: a scalar threshold cannot split examples with the same confidence, so candidate thresholds are the
distinct confidence values and each tie group is accepted or rejected as a whole. Achieved coverage can therefore
overshoot a coverage target, and a precision target is only checked at tie-group boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Slack for comparing achieved ratios to targets: 9/10 must count as reaching a 0.9 target although 9/10 < 0.9 can
# hold in floating point.
_RATIO_TOL = 1e-12


@dataclass(frozen=True)
class ThresholdResult:
    """A selected threshold and what it achieves on the data it was selected on.

    ``reachable`` is False when no threshold meets the target; ``threshold`` then abstains on everything
    (``coverage == 0`` and ``precision`` is NaN, as precision of an empty set is undefined).
    """

    threshold: float
    precision: float
    coverage: float
    reachable: bool
    n: int


def _abstain_all_threshold(max_conf: float) -> float:
    """Smallest float strictly above both the largest confidence seen and 1.0.

    Above the max seen confidence rejects every validation example; also above 1.0 so that a probability on new data
    that exceeds the validation maximum is still rejected ("abstain on everything" must hold at serving time too).
    """
    return float(np.nextafter(max(float(max_conf), 1.0), np.inf))


def _check_conf_correct(confidences: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidences, dtype=np.float64)
    k = np.asarray(correct)
    if c.ndim != 1 or c.shape[0] == 0:
        raise ValueError(f"confidences must be a non-empty 1-D array, got shape {c.shape}")
    if k.shape != c.shape:
        raise ValueError(f"correct must have shape {c.shape}, got {k.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("confidences contain NaN or inf")
    return c, k.astype(bool)


def _tie_group_curve(c: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct confidence ``v`` (descending): ``v``, #accepted and #correct among ``conf >= v``."""
    order = np.argsort(-c, kind="stable")
    c_sorted = c[order]
    cum_correct = np.cumsum(k[order])
    # Last index of each tie group in descending order: accepting value v accepts the whole group.
    last = np.flatnonzero(np.append(c_sorted[1:] != c_sorted[:-1], True))
    return c_sorted[last], last + 1, cum_correct[last]


def select_threshold(
    confidences: np.ndarray,
    correct: np.ndarray,
    target_precision: float | None = None,
    target_coverage: float | None = None,
) -> ThresholdResult:
    """Choose a global confidence threshold on validation data for exactly one target.

    - ``target_precision``: the *lowest* threshold whose accepted set has precision (accuracy among accepted)
      ``>= target``, i.e. the largest coverage meeting the target. Precision is not monotone in the threshold, so
      every tie-group boundary is checked, not just the first crossing from the top. If no threshold reaches the
      target, returns ``reachable=False`` with a threshold that abstains on everything, so callers cannot silently
      ship a threshold that misses the target; they should check ``reachable`` and log or lower the target.
    - ``target_coverage``: the *highest* threshold that still accepts at least ``target`` of the examples (the
      most selective one meeting the coverage), so ties can make the achieved coverage larger than asked. Always
      reachable for a target in ``(0, 1]``.

    ``correct[i]`` says whether the (argmax) prediction for example ``i`` was right.
    """
    if (target_precision is None) == (target_coverage is None):
        raise ValueError("give exactly one of target_precision and target_coverage")
    target = float(target_precision if target_precision is not None else target_coverage)  # type: ignore[arg-type]
    if not (0.0 < target <= 1.0):
        raise ValueError(f"target must lie in (0, 1], got {target}")
    c, k = _check_conf_correct(confidences, correct)
    n = len(c)
    values, n_acc, n_cor = _tie_group_curve(c, k)

    if target_precision is not None:
        ok = n_cor >= (target - _RATIO_TOL) * n_acc
        if not ok.any():
            return ThresholdResult(_abstain_all_threshold(values[0]), math.nan, 0.0, False, n)
        i = int(np.flatnonzero(ok)[-1])  # values descend, so the last qualifying group is the lowest threshold
    else:
        # Number of examples needed; the tolerance stops 0.3 * 10 = 3.0000000000000004 from requiring 4.
        need = math.ceil(target * n - _RATIO_TOL * n)
        i = int(np.flatnonzero(n_acc >= need)[0])  # first (highest) threshold accepting enough
    return ThresholdResult(float(values[i]), float(n_cor[i] / n_acc[i]), float(n_acc[i] / n), True, n)


@dataclass(frozen=True)
class PerClassThresholds:
    """Per-class thresholds, indexed by *predicted* class, and how each was obtained.

    ``thresholds[c]`` is what serving uses. ``fallback[c]`` is True where class ``c`` had fewer than ``min_support``
    validation predictions and the global threshold was used instead; ``per_class[c]`` is the class's own selection
    result, or None for fallback classes.
    """

    thresholds: np.ndarray
    global_result: ThresholdResult
    per_class: list[ThresholdResult | None] = field(default_factory=list)
    fallback: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    support: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def select_per_class_thresholds(
    confidences: np.ndarray,
    predicted: np.ndarray,
    correct: np.ndarray,
    num_classes: int,
    target_precision: float,
    min_support: int = 30,
) -> PerClassThresholds:
    """Per-class thresholds reaching ``target_precision`` among the examples *predicted* as each class.

    Grouping by predicted class (not true class) is what makes the threshold usable at serving time, where only the
    prediction is known; the target then holds per predicted class (per-class precision). A class predicted fewer
    than ``min_support`` times on validation gets the global threshold: a threshold tuned on a handful of examples
    is mostly noise. A class with enough support whose target is unreachable gets its own abstain-on-everything
    threshold (``per_class[c].reachable`` is False) rather than the global one, since the global one was shown not
    to reach the target on that class.
    """
    c, k = _check_conf_correct(confidences, correct)
    pred = np.asarray(predicted)
    if pred.shape != c.shape:
        raise ValueError(f"predicted must have shape {c.shape}, got {pred.shape}")
    if not np.issubdtype(pred.dtype, np.integer) or pred.min() < 0 or pred.max() >= num_classes:
        raise ValueError(f"predicted must be integer class indices in [0, {num_classes - 1}]")
    if min_support < 1:
        raise ValueError(f"min_support must be >= 1, got {min_support}")

    global_result = select_threshold(c, k, target_precision=target_precision)
    support = np.bincount(pred, minlength=num_classes).astype(np.int64)
    thresholds = np.full(num_classes, global_result.threshold, dtype=np.float64)
    fallback = support < min_support
    per_class: list[ThresholdResult | None] = []
    for cls in range(num_classes):
        if fallback[cls]:
            per_class.append(None)
            continue
        mask = pred == cls
        result = select_threshold(c[mask], k[mask], target_precision=target_precision)
        thresholds[cls] = result.threshold
        per_class.append(result)
    return PerClassThresholds(thresholds, global_result, per_class, fallback, support)


def abstention_mask(
    probs: np.ndarray, thresholds: float | Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class indices and a boolean mask of accepted predictions (``max prob >= threshold``).

    ``thresholds`` is a global float or a per-class array of length C indexed by the *predicted* class. ``probs``
    of shape (C,) is treated as one example.
    """
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (N, C) or (C,), got {np.shape(probs)}")
    pred = p.argmax(axis=1)
    conf = p[np.arange(len(p)), pred]
    th = np.asarray(thresholds, dtype=np.float64)
    if th.ndim == 0:
        per_example = np.full(len(p), float(th))
    elif th.shape == (p.shape[1],):
        per_example = th[pred]
    else:
        raise ValueError(f"thresholds must be a float or have shape ({p.shape[1]},), got {th.shape}")
    return pred, conf >= per_example


def apply_abstention(
    probs: np.ndarray,
    thresholds: float | Sequence[float] | np.ndarray,
    uncertain_label: str = "uncertain",
    label_names: Sequence[str] | None = None,
) -> list[str]:
    """Label per example: the predicted class name, or ``uncertain_label`` where its max prob is under threshold.

    Without ``label_names`` the class index is returned as a string, so the output is always ``list[str]``.
    """
    pred, accepted = abstention_mask(probs, thresholds)
    num_classes = np.atleast_2d(np.asarray(probs)).shape[1]
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f"label_names has {len(label_names)} names but probs has {num_classes} classes")
    names = list(label_names) if label_names is not None else [str(i) for i in range(num_classes)]
    if uncertain_label in names:
        # Otherwise "uncertain" as output would be ambiguous.
        raise ValueError(f"uncertain_label {uncertain_label!r} is also a class name")
    return [names[i] if ok else uncertain_label for i, ok in zip(pred.tolist(), accepted.tolist(), strict=True)]
