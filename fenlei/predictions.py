"""The one prediction format of fenlei: run predictions, bundles (``infer``, ``serve``) and the active-learning
queue all describe a prediction with :func:`prediction_record`.

    {"label": "card_arrival",            # the answer: predicted_label, or "uncertain" below the threshold
     "predicted_label": "card_arrival",  # the most probable class, always
     "confidence": 0.93,                 # its (calibrated, where the source is calibrated) probability
     "uncertain": false,
     "top_k": [{"label": "card_arrival", "score": 0.93}, ...]}   # most probable first; ties keep class order

NumPy only: the torch-free serving path uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

UNCERTAIN_LABEL = "uncertain"
# Predictions that take one value for more than this share of the texts come from a collapsed model: it has learned
# the majority class, and no accuracy it reaches counts as meeting a target (the rule of every benchmark here).
COLLAPSED_SHARE = 0.9


def top_answer_share(labels: Sequence[str]) -> Optional[float]:
    """The most frequent label's share of ``labels`` (None for none): above :data:`COLLAPSED_SHARE`, collapsed."""
    return round(max(labels.count(v) for v in set(labels)) / len(labels), 6) if labels else None


def _value(x: float, digits: Optional[int]) -> float:
    return round(float(x), digits) if digits is not None else float(x)


def prediction_record(probs: np.ndarray, label_names: Sequence[str], top_k: int = 5, threshold: float = 0.0,
                      uncertain_label: str = UNCERTAIN_LABEL, digits: Optional[int] = None) -> dict[str, Any]:
    """The prediction for one row of class probabilities ``probs`` (C,).

    ``threshold``: below it the answer is ``uncertain_label`` (0 never abstains); ``digits`` rounds the
    probabilities (files), None keeps them exact (the service)."""
    p = np.asarray(probs, dtype=np.float64)
    k = max(1, min(int(top_k), len(label_names)))
    top = np.argsort(-p, kind="stable")[:k]
    pred = int(top[0])
    confidence = float(p[pred])
    uncertain = bool(confidence < threshold)
    return {
        "label": uncertain_label if uncertain else label_names[pred],
        "predicted_label": label_names[pred],
        "confidence": _value(confidence, digits),
        "uncertain": uncertain,
        "top_k": [{"label": label_names[i], "score": _value(p[i], digits)} for i in top],
    }
