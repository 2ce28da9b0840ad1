"""Test-time report: per-class precision/recall/F1 (CSV and markdown), a confusion-matrix PNG, metrics JSON, and
the per-row predictions (``predictions.jsonl``, also written by ``validate``) that ``fenlei report`` reads.

A LightningModule describes its test epoch in a :class:`TestReport` (its ``test_report`` attribute, set in
``on_test_epoch_end``); ``fenlei.training.callbacks.TestReportWriter`` writes it into ``<run dir>/test/`` and,
when a W&B logger is attached, into the W&B run as a table and an image.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from fenlei.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from fenlei.numerics import softmax
from fenlei.training.run_dir import (
    CONFUSION_MATRIX_PNG,
    DECODING_METRICS_FILE,
    EVAL_PREDICTIONS_FILE,
    PER_CLASS_CSV,
    PER_CLASS_MD,
    TEST_METRICS_FILE,
)

if TYPE_CHECKING:  # the report writer is also used by torch-free ops commands (figures): no lightning_modules import
    from lightning_modules.test_report import SplitRows, TestReport

PER_CLASS_COLUMNS = ["label", "precision", "recall", "f1", "support", "predicted"]


def per_class_rows(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class (every class, also those absent from this split), with support and predicted count."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    predicted = np.bincount(y_pred, minlength=len(labels))
    return [
        {
            "label": name,
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i, name in enumerate(label_names)
    ]


def rows_to_csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def rows_to_markdown(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def confusion_matrix_png(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]) -> bytes:
    """Row-normalised confusion matrix (recall on the diagonal) as PNG bytes; scales with the class count."""
    from fenlei.plotting import pyplot

    plt = pyplot()
    from sklearn.metrics import confusion_matrix

    n = len(label_names)
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(n))).astype(float)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    size = min(max(6.0, 0.28 * n + 3), 30.0)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=label_names, rotation=90, fontsize=max(4, 10 - n // 15))
    ax.set_yticks(range(n), labels=label_names, fontsize=max(4, 10 - n // 15))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (row-normalised), n={int(matrix.sum())}")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return figure_png(fig, dpi=110)


def figure_png(fig: Any, dpi: int) -> bytes:
    """The PNG bytes of a matplotlib figure, which is then closed (callers write the bytes atomically)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def split_prediction_lines(split_rows: SplitRows, records: Optional[Sequence[Any]] = None) -> str:
    """``predictions.jsonl`` of an evaluated split: one JSON line per row, in the split's order::

        {"row": 3, "line": 5, "text": "...", "gold": "billing", "predicted_label": "login", "confidence": 0.61,
         "logits": [1.2, 2.01, -0.3, 0.1]}

    ``row`` indexes the split's records, ``line`` is the row's line in its data file; both and ``text`` are left out
    without ``records`` (a DataModule that cannot list them). ``logits`` are the class scores in class-id order
    (``labels.json``), kept so that a reader can apply any temperature; ``confidence`` is ``softmax(logits)``'s
    maximum."""
    names = list(split_rows.label_names)
    order = np.argsort(split_rows.rows, kind="stable")
    logits = np.asarray(split_rows.logits, dtype=np.float64)[order]
    probs = softmax(logits)
    lines = []
    for k, i in enumerate(order):
        row = int(split_rows.rows[i])
        record: dict[str, Any] = {"row": row}
        if records is not None:
            record.update(line=int(records[row].line), text=records[row].text)
        pred = int(probs[k].argmax())
        record.update(gold=names[int(split_rows.targets[i])], predicted_label=names[pred],
                      confidence=round(float(probs[k, pred]), 6), logits=[round(float(z), 4) for z in logits[k]])
        lines.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(lines) + "\n" if lines else ""


def write_split_predictions(out_dir: Path, split_rows: SplitRows, records: Optional[Sequence[Any]] = None) -> Path:
    return atomic_write_text(out_dir / EVAL_PREDICTIONS_FILE, split_prediction_lines(split_rows, records))


def write_test_report(out_dir: Path, report: TestReport, loggers: Sequence[Any] = (),
                      records: Optional[Sequence[Any]] = None) -> dict[str, Path]:
    """Write the report's files into ``out_dir``: ``decoding_metrics.json`` when given, with targets
    ``per_class.csv``, ``per_class.md``, ``confusion_matrix.png`` and ``metrics.json``, and with per-row scores
    ``predictions.jsonl`` (``records``: the test split's, for each row's text and line)."""
    paths: dict[str, Path] = {}
    if report.split_rows is not None:
        paths["predictions"] = write_split_predictions(out_dir, report.split_rows, records)
    if report.decoding_metrics is not None:
        paths["decoding_metrics"] = atomic_write_text(
            out_dir / DECODING_METRICS_FILE, json.dumps(report.decoding_metrics, indent=1, ensure_ascii=False) + "\n")
    if report.targets is None or report.predictions is None:
        return paths
    y_true, y_pred = np.asarray(report.targets), np.asarray(report.predictions)
    names = list(report.label_names) if report.label_names is not None else [str(i) for i in range(int(y_true.max()) + 1)]
    rows = per_class_rows(y_true, y_pred, names)
    paths.update({
        "per_class_csv": atomic_write_text(out_dir / PER_CLASS_CSV, rows_to_csv(rows, PER_CLASS_COLUMNS)),
        "per_class_md": atomic_write_text(out_dir / PER_CLASS_MD, rows_to_markdown(rows, PER_CLASS_COLUMNS)),
        "confusion_matrix": atomic_write_bytes(out_dir / CONFUSION_MATRIX_PNG, confusion_matrix_png(y_true, y_pred, names)),
        "metrics": atomic_write_json(out_dir / TEST_METRICS_FILE, {**report.metrics, "n_examples": int(len(y_true))}),
    })
    _log_to_wandb(loggers, rows, paths["confusion_matrix"])
    return paths


def _log_to_wandb(loggers: Sequence[Any], rows: list[dict[str, Any]], image_path: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key="test/per_class", columns=PER_CLASS_COLUMNS, data=[[r[c] for c in PER_CLASS_COLUMNS] for r in rows])
            logger.log_image(key="test/confusion_matrix", images=[str(image_path)])
