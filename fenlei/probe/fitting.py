"""The layer x head sweep of ``fenlei probe``: one head per (layer, head kind) on the train features, scored on
validation and test; the best by validation macro-F1 is the probe that is saved, calibrated on validation.

Selection: validation macro-F1, then validation accuracy, then the order given (layers as listed, heads as
listed); never the test set. Calibration: a temperature fitted on the selected head's validation logits
(``fenlei.calibration``; argmax unchanged) and an abstention threshold, fixed or chosen on validation for a
target precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from fenlei.errors import OptionError
from fenlei.predictions import UNCERTAIN_LABEL, prediction_record
from fenlei.probe.features import layer_name
from fenlei.probe.heads import StandardisedHead, classification_report

Layer = Union[int, float]


@dataclass
class Split:
    """One split's features by layer name and its label ids (-1: a test label never seen in train)."""

    features: dict[str, np.ndarray]
    y: np.ndarray
    labels: list[str]


@dataclass
class Candidate:
    layer: Layer
    layer_index: int
    kind: str
    fitted: StandardisedHead
    validation: Optional[dict[str, Any]]
    test: dict[str, Any]

    def key(self) -> tuple[float, float]:
        v = self.validation or {}
        return (v.get("f1_macro", 0.0), v.get("accuracy", 0.0))


def evaluate(fitted: StandardisedHead, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy and macro-F1 of ``fitted`` on ``(x, y)``; ``accuracy_seen_labels`` leaves out labels train lacks."""
    pred = fitted.predict_proba(x).argmax(1)
    metrics = classification_report(y, pred)
    keep = y >= 0
    metrics["accuracy_seen_labels"] = float((pred[keep] == y[keep]).mean()) if keep.any() else None
    return metrics


def fit_candidates(layers: Sequence[Layer], layer_indices: dict[str, int], kinds: Sequence[str], train: Split,
                   validation: Optional[Split], test: Split, num_classes: int, class_weight: str, C: float,
                   mlp_hidden: int, mlp_epochs: int) -> list[Candidate]:
    """Every (layer, head kind), fitted on train and scored on validation (if any) and test."""
    out = []
    for layer in layers:
        name = layer_name(layer)
        for kind in kinds:
            fitted = StandardisedHead(kind, num_classes, None if class_weight == "none" else "balanced", c=C,
                                      hidden=mlp_hidden, epochs=mlp_epochs)
            fitted.fit(train.features[name], train.y)
            val = evaluate(fitted, validation.features[name], validation.y) if validation is not None else None
            scored = evaluate(fitted, test.features[name], test.y)
            scored["fit_seconds"] = round(fitted.fit_seconds, 3)
            scored["class_weight"] = class_weight
            out.append(Candidate(layer, layer_indices[name], kind, fitted, val, scored))
    return out


def select(candidates: list[Candidate]) -> Candidate:
    """The best by validation macro-F1, then accuracy; the first of equals (``max`` keeps the first)."""
    return max(candidates, key=Candidate.key)


def calibration(selected: Candidate, validation: Optional[Split], temperature: bool, threshold: Optional[float],
                target_precision: Optional[float]) -> dict[str, Any]:
    """``calibration.json`` of the saved probe: temperature (1.0 without validation or with ``temperature`` off),
    the threshold and how it was chosen, and NLL/ECE on validation before and after."""
    from fenlei.calibration import calibrate, select_threshold, softmax

    out: dict[str, Any] = {"temperature": 1.0, "threshold": 0.0, "uncertain_label": UNCERTAIN_LABEL,
                           "fitted_on": None, "report": None, "threshold_chosen_by": "none (never abstains)"}
    if validation is None:
        if target_precision is not None:
            raise OptionError("--target_precision chooses the threshold on validation data; there is none (give a "
                              "validation file or --val_fraction > 0)")
    else:
        x, y = validation.features[layer_name(selected.layer)], validation.y
        logits = selected.fitted.logits(x)
        if temperature:
            report = calibrate(logits, y)
            out.update(temperature=report.temperature, fitted_on="validation", report=report.to_dict())
        probs = softmax(logits, out["temperature"])
        if target_precision is not None:
            result = select_threshold(probs.max(1), probs.argmax(1) == y, target_precision=target_precision)
            if not result.reachable:
                raise OptionError(f"--target_precision {target_precision}: not reachable on validation (accuracy "
                                  f"{float((probs.argmax(1) == y).mean()):.4f}); lower it or give --threshold")
            out.update(threshold=result.threshold, threshold_chosen_by={
                "target_precision": target_precision,
                "validation": {"precision": result.precision, "coverage": result.coverage, "n": result.n}})
    if threshold is not None:
        out.update(threshold=float(threshold), threshold_chosen_by="--threshold")
    return out


def predictions_on_test(selected: Candidate, test: Split, label_names: list[str], calibration_entry: dict[str, Any],
                     top_k: int = 5) -> list[dict[str, Any]]:
    """The selected probe's predictions on the test file in ``fenlei predict``'s record format (6 digits), with
    the true label: what ``fenlei predict --probe`` and ``fenlei infer --probe`` give on the same file."""
    probs = selected.fitted.head.predict_proba(test.features[layer_name(selected.layer)],
                                               calibration_entry["temperature"])
    return [{"row": i, **prediction_record(p, label_names, top_k, calibration_entry["threshold"],
                                           calibration_entry["uncertain_label"], digits=6), "true_label": truth}
            for i, (p, truth) in enumerate(zip(probs, test.labels, strict=True))]


def sweep_rows(candidates: list[Candidate], selected: Candidate) -> list[dict[str, Any]]:
    rows = []
    for c in candidates:
        v = c.validation or {}
        rows.append({"layer": c.layer, "layer_index": c.layer_index, "head": c.kind,
                     "val_accuracy": v.get("accuracy"), "val_f1_macro": v.get("f1_macro"),
                     "test_accuracy": c.test["accuracy"], "test_f1_macro": c.test["f1_macro"],
                     "fit_seconds": c.test["fit_seconds"], "selected": c is selected})
    return rows


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """The sweep as a Markdown table (percentages; the selected row marked)."""
    def pct(value: Optional[float]) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    lines = ["| layer | hidden_states index | head | val accuracy | val macro-F1 | test accuracy | test macro-F1 | "
             "selected |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {layer_name(r['layer'])} | {r['layer_index']} | {r['head']} | {pct(r['val_accuracy'])} | "
                     f"{pct(r['val_f1_macro'])} | {pct(r['test_accuracy'])} | {pct(r['test_f1_macro'])} | "
                     f"{'yes' if r['selected'] else ''} |")
    return "\n".join(lines) + "\n"
