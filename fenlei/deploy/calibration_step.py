"""The bundle's calibration: a temperature per precision, fitted on the held-out logits of the served model, and
the abstention threshold chosen on them (``calibration.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np

from fenlei.deploy.errors import ExportError

UNCERTAIN_LABEL = "uncertain"


@dataclass(frozen=True)
class CalibrationOptions:
    """The ``calibration and abstention`` options of ``fenlei export``."""

    temperature: bool = True
    threshold: Literal["none", "global", "per_class"] = "global"
    target_precision: Optional[float] = None
    target_coverage: float = 0.95
    threshold_value: Optional[float] = None
    min_class_support: int = 30


def calibration_entry(logits: np.ndarray, labels: np.ndarray, options: CalibrationOptions) -> dict[str, Any]:
    """Temperature (NLL on held-out logits), ECE before/after, and the abstention threshold for one precision."""
    from fenlei.calibration import calibrate, select_per_class_thresholds, select_threshold, softmax

    report = calibrate(logits, labels) if options.temperature else None
    temperature = report.temperature if report else 1.0
    probs = softmax(logits, temperature)
    pred = probs.argmax(1)
    conf = probs.max(1)
    correct = pred == labels
    entry: dict[str, Any] = {"temperature": temperature, "report": report.to_dict() if report else None}
    if options.threshold == "none":
        entry["threshold"] = {"mode": "none"}
    elif options.threshold_value is not None:
        entry["threshold"] = {"mode": "global", "value": float(options.threshold_value), "chosen_by": "--threshold_value"}
    elif options.threshold == "global":
        target = ({"target_precision": options.target_precision} if options.target_precision
                  else {"target_coverage": options.target_coverage})
        result = select_threshold(conf, correct, **target)
        if not result.reachable:
            raise ExportError(f"threshold: target precision {options.target_precision} is not reachable on the held-out "
                              f"data (accuracy {correct.mean():.4f}); lower --target_precision or use --target_coverage")
        entry["threshold"] = {"mode": "global", "value": result.threshold, "chosen_by": target,
                              "validation": {"precision": result.precision, "coverage": result.coverage, "n": result.n}}
    else:  # per_class: only a precision target makes sense per predicted class
        target_precision = options.target_precision or 0.9
        res = select_per_class_thresholds(conf, pred, correct, len(probs[0]), target_precision, options.min_class_support)
        accepted = conf >= res.thresholds[pred]
        entry["threshold"] = {"mode": "per_class", "values": [float(v) for v in res.thresholds],
                              "chosen_by": {"target_precision": target_precision, "min_support": options.min_class_support},
                              "fallback_to_global": [bool(v) for v in res.fallback],
                              "validation": {"coverage": float(accepted.mean()),
                                             "precision": float(correct[accepted].mean()) if accepted.any() else None}}
    return entry


def bundle_calibration(logits_by_precision: dict[str, np.ndarray], labels: np.ndarray, options: CalibrationOptions,
                       fitted_on: str) -> dict[str, Any]:
    """The content of ``calibration.json``: one entry per precision, each from that engine's own logits."""
    return {"uncertain_label": UNCERTAIN_LABEL, "fitted_on": fitted_on, "n": len(labels),
            "by_precision": {precision: calibration_entry(logits, labels, options)
                             for precision, logits in logits_by_precision.items()}}
