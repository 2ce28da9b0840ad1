"""What ``fenlei report`` reads from a run directory: learning curves, test and validation rows, the temperature.

Only the run directory's documented files are read (``fenlei.training.run_dir`` names them), never a checkpoint:
the report needs neither torch nor the data files. What a run lacks (an unfinished fit, no ``test`` yet, no
validation rows to fit a temperature on) becomes a note on the page, not an error; a file that is there but
malformed is a one-line error naming the file and line.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fenlei.ops.runs import OpsError
from fenlei.training.run_dir import CONFUSION_MATRIX_PNG, PER_CLASS_CSV, RunDir

# One series of metrics.csv: (step, epoch, value) per row where the metric was logged.
Series = list[tuple[int, Optional[int], float]]


@dataclass
class EvalRows:
    """The rows of one evaluated split (``test/`` or ``validate/predictions.jsonl``)."""

    path: Path
    records: list[dict[str, Any]]
    logits: np.ndarray  # (N, C) in class-id order
    gold: np.ndarray  # (N,) class ids

    def __len__(self) -> int:
        return len(self.records)

    def probs(self, temperature: float = 1.0) -> np.ndarray:
        from fenlei.numerics import softmax

        return softmax(self.logits, temperature)


@dataclass(frozen=True)
class Temperature:
    value: float
    source: str  # where it comes from, in words, for the page


@dataclass
class RunData:
    """Everything the page of one run shows; ``notes`` says what is missing and how to get it."""

    run: RunDir
    name: str
    config: dict[str, Any]
    summary: Optional[dict[str, Any]]
    test_metrics: Optional[dict[str, Any]]
    per_class: Optional[list[dict[str, str]]]
    curves: dict[str, Series]
    labels: Optional[list[str]]
    test: Optional[EvalRows]
    validation: Optional[EvalRows]
    temperature: Optional[Temperature]
    stored_confusion_png: Optional[bytes]
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it is empty


def is_run_dir(path: Path) -> bool:
    """A fenlei run: its ``config.yaml`` and at least one file of a fit (a run in progress counts)."""
    run = RunDir(path)
    return run.config.is_file() and (run.looks_like_run() or run.metrics_csv.is_file())


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OpsError(f"{path}: not readable JSON ({err})") from None


def read_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise OpsError(f"{path}: not readable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise OpsError(f"{path}: expected a mapping (the config.yaml of a fenlei run)")
    return config


def read_curves(path: Path) -> dict[str, Series]:
    """Every numeric column of ``metrics.csv`` as a series over the steps (empty cells skipped)."""
    curves: dict[str, Series] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                step = int(float(row.get("step") or 0))
                epoch = int(float(row["epoch"])) if row.get("epoch") else None
            except ValueError:
                raise OpsError(f"{path}:{line}: step/epoch is not a number") from None
            for key, cell in row.items():
                if key in ("step", "epoch") or key is None or cell in (None, ""):
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    raise OpsError(f"{path}:{line}: {key}: not a number: {cell!r}") from None
                if math.isfinite(value):
                    curves.setdefault(key, []).append((step, epoch, value))
    return curves


def read_eval_rows(path: Path, labels: list[str]) -> EvalRows:
    """``predictions.jsonl`` of ``test`` or ``validate``: each line's gold label and logits, checked against the
    run's labels (errors name the file and line)."""
    index = {name: i for i, name in enumerate(labels)}
    records, logits, gold = [], [], []
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise OpsError(f"{path}:{line}: not JSON ({err.msg})") from None
            scores = record.get("logits") if isinstance(record, dict) else None
            if not isinstance(scores, list) or len(scores) != len(labels):
                raise OpsError(f"{path}:{line}: logits: expected a list of {len(labels)} numbers (one per label in "
                               f"labels.json)")
            if str(record.get("gold")) not in index:
                raise OpsError(f"{path}:{line}: gold: {record.get('gold')!r} is not a label of labels.json")
            try:
                row_logits = [float(z) for z in scores]
            except (TypeError, ValueError):
                raise OpsError(f"{path}:{line}: logits: not all numbers") from None
            if not all(math.isfinite(z) for z in row_logits):
                raise OpsError(f"{path}:{line}: logits: NaN or infinite")
            records.append(record)
            logits.append(row_logits)
            gold.append(index[str(record["gold"])])
    if not records:
        raise OpsError(f"{path}: no rows")
    return EvalRows(path, records, np.asarray(logits, dtype=np.float64), np.asarray(gold, dtype=np.int64))


def bundle_temperature(bundle: Path, labels: list[str]) -> Temperature:
    """The fp32 temperature of an exported bundle (the engine whose logits match the run's torch model)."""
    from fenlei.serving.bundle_check import check_calibration

    labels_file = bundle / "labels.json"
    if not labels_file.is_file():
        raise OpsError(f"--bundle {bundle}: no labels.json (not a fenlei bundle)")
    bundle_labels = read_json_file(labels_file)
    if [str(x) for x in bundle_labels] != labels:
        raise OpsError(f"--bundle {bundle}: its labels.json differs from the run's labels: not this run's bundle")
    _, temperature, _ = check_calibration(bundle, "fp32", labels)
    return Temperature(temperature, f"the fp32 temperature of the bundle {bundle} (its calibration.json)")


def fitted_temperature(validation: EvalRows) -> Temperature:
    from fenlei.calibration import fit_temperature

    value = fit_temperature(validation.logits, validation.gold)
    return Temperature(value, f"fitted on {len(validation)} validation rows ({validation.path}), minimising their "
                              f"negative log-likelihood, as `fenlei export` does")


def read_run(path: Path, bundle: Optional[Path] = None) -> RunData:
    """Read one run directory for its report (a directory that is no run is a one-line error)."""
    if not path.is_dir():
        raise OpsError(f"{path}: no such directory")
    if not is_run_dir(path):
        raise OpsError(f"{path}: not a fenlei run directory (no config.yaml with run_summary.json, checkpoints/ or "
                       f"metrics.csv)")
    run = RunDir(path)
    notes: dict[str, str] = {}
    summary = read_json_file(run.summary) if run.summary.is_file() else None
    if summary is None:
        notes["summary"] = "The fit has not finished: there is no run_summary.json yet."
    curves = read_curves(run.metrics_csv) if run.metrics_csv.is_file() else {}
    if not curves:
        notes["curves"] = "No learning curves: metrics.csv is missing or empty (nothing logged yet)."
    labels = [str(x) for x in read_json_file(run.labels)] if run.labels.is_file() else None
    test_metrics = read_json_file(run.test_metrics) if run.test_metrics.is_file() else None
    per_class_file = run.test / PER_CLASS_CSV
    per_class = list(csv.DictReader(per_class_file.open(encoding="utf-8"))) if per_class_file.is_file() else None
    cm_file = run.test / CONFUSION_MATRIX_PNG
    stored_cm = cm_file.read_bytes() if cm_file.is_file() else None
    command = f"fenlei test --config {run.config} --ckpt_path best"
    test = validation = None
    if labels is None:
        notes["test"] = "No labels.json in the run directory: the per-row sections need the label vocabulary."
    elif run.test_predictions.is_file():
        test = read_eval_rows(run.test_predictions, labels)
    elif test_metrics is not None:
        notes["test"] = (f"No per-row test predictions: {run.test_predictions} is missing (the run's module writes "
                         f"none, or its test ran before fenlei wrote them). Rerun `{command}`.")
    else:
        notes["test"] = f"The run has not been tested: run `{command}`."
    if labels is not None and run.validate_predictions.is_file():
        validation = read_eval_rows(run.validate_predictions, labels)
    temperature = None
    if bundle is not None:
        if labels is None:
            raise OpsError(f"--bundle {bundle}: the run {path} has no labels.json to check the bundle against")
        temperature = bundle_temperature(bundle, labels)
    elif validation is not None:
        temperature = fitted_temperature(validation)
    else:
        notes["temperature"] = (f"No temperature: fitting one needs the validation rows' logits, which "
                                f"`fenlei validate --config {run.config} --ckpt_path best` writes to "
                                f"{run.validate_predictions} (or pass --bundle with a bundle exported from this run).")
    return RunData(run=run, name=os.path.normpath(str(path)), config=read_config(run.config), summary=summary,
                   test_metrics=test_metrics, per_class=per_class, curves=curves, labels=labels, test=test,
                   validation=validation, temperature=temperature, stored_confusion_png=stored_cm, notes=notes)
