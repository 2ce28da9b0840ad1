"""A saved probe: the probe's run directory (``fenlei probe --run_dir DIR``), what it holds and how it is checked.

=============================  ===========================================================================
``probe.json``                 written last: the manifest (model name and files sha256, feature settings: layer,
                               pooling, max_length, text fields; head kind and options; label field and map; the
                               data files and their sha256; the selection and its metrics; the sha256 of every
                               file below). Its presence means the probe finished
``head.npz``                   the head as plain arrays (standardisation mean/std; logistic regression
                               ``coef``/``intercept``/``classes`` or the MLP's ``w1``/``b1``/``w2``/``b2``), read
                               with ``allow_pickle=False``: loading a probe never unpickles anything
``labels.json``                label vocabulary in class-id order (as in a training run)
``calibration.json``           temperature fitted on validation, abstention threshold, uncertain label
``report.json``                the full report (every layer and head on validation and test, extraction speed)
``sweep.md``                   the layer x head table of that report
``test/predictions.jsonl``     the probe's own predictions on the test file (``fenlei predict``'s record format,
                               plus ``true_label``)
``predict/predictions.jsonl``  after ``fenlei predict --probe DIR``
``run.lock``                   held by the command writing into the directory (``probe``, ``predict --probe``)
``previous/<time>/``           an earlier probe's files, moved aside by the next ``fenlei probe --run_dir DIR``
=============================  ===========================================================================

Every file is written atomically (``fenlei.io``). :func:`load_probe` checks the file set, the sha256 of each file
against the manifest, the arrays' shapes against the labels and the feature size, and the calibration values, each
failure one line naming the file; the model's identity is checked when the predictor loads the model
(``fenlei.probe.identity``).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fenlei.errors import FenleiError
from fenlei.io import atomic_write_bytes, atomic_write_json, atomic_write_text, file_sha256
from fenlei.predictions import UNCERTAIN_LABEL
from fenlei.probe.heads import HeadArrays

PROBE_FORMAT = 1
PROBE_KIND = "fenlei-probe"
MANIFEST_FILE = "probe.json"
HEAD_FILE = "head.npz"
LABELS_FILE = "labels.json"
CALIBRATION_FILE = "calibration.json"
REPORT_FILE = "report.json"
SWEEP_FILE = "sweep.md"
TEST_PREDICTIONS = "test/predictions.jsonl"
# The files the manifest vouches for by sha256 (what a prediction reads).
CHECKED_FILES = (HEAD_FILE, LABELS_FILE, CALIBRATION_FILE)
# What the next probe into the same directory moves to previous/<time>/.
PROBE_OUTPUTS = (MANIFEST_FILE, HEAD_FILE, LABELS_FILE, CALIBRATION_FILE, REPORT_FILE, SWEEP_FILE, "test", "predict")
POOLINGS = ("mean", "last", "first")


class ProbeError(FenleiError, ValueError):
    """A saved probe that cannot be used (missing or changed files, values out of range, another model)."""


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def write_probe(folder: Path, manifest: dict[str, Any], head: HeadArrays, label_names: list[str],
                calibration: dict[str, Any], report: dict[str, Any], sweep_md: str,
                test_predictions: list[dict[str, Any]]) -> Path:
    """Write a probe into ``folder`` (already locked and cleared of an earlier probe by the caller), each file
    atomically and ``probe.json`` last, with the sha256 of the files it vouches for."""
    atomic_write_bytes(folder / HEAD_FILE, _npz_bytes(head.arrays))
    atomic_write_text(folder / LABELS_FILE, json.dumps(label_names, ensure_ascii=False, indent=1) + "\n")
    atomic_write_json(folder / CALIBRATION_FILE, calibration)
    atomic_write_json(folder / REPORT_FILE, report)
    atomic_write_text(folder / SWEEP_FILE, sweep_md)
    atomic_write_text(folder / TEST_PREDICTIONS,
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test_predictions))
    files = {name: {"sha256": file_sha256(folder / name)} for name in CHECKED_FILES}
    return atomic_write_json(folder / MANIFEST_FILE, {"format": PROBE_FORMAT, "kind": PROBE_KIND, **manifest,
                                                      "files": files})


@dataclass(frozen=True)
class SavedProbe:
    """A checked probe directory, ready for :class:`fenlei.probe.predictor.ProbePredictor`."""

    folder: Path
    manifest: dict[str, Any]
    head: HeadArrays
    label_names: list[str]
    temperature: float
    threshold: float
    uncertain_label: str

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.manifest["model"])

    @property
    def features(self) -> dict[str, Any]:
        return dict(self.manifest["features"])

    @property
    def test_file(self) -> Optional[str]:
        return (self.manifest.get("data", {}).get("test") or {}).get("path")

    @property
    def predictions(self) -> Path:
        return self.folder / "predict" / "predictions.jsonl"


def _read_json(folder: Path, name: str) -> Any:
    path = folder / name
    if not path.is_file():
        raise ProbeError(f"{path}: missing (a saved probe has {', '.join([MANIFEST_FILE, *CHECKED_FILES])})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProbeError(f"{path}: not valid JSON ({err})") from None


def _manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise ProbeError(f"--probe {folder}: no such directory")
    if not (folder / MANIFEST_FILE).is_file():
        raise ProbeError(f"{folder}: no {MANIFEST_FILE}: not a probe directory, or its `fenlei probe --run_dir` did "
                         "not finish")
    manifest = _read_json(folder, MANIFEST_FILE)
    where = folder / MANIFEST_FILE
    if not isinstance(manifest, dict) or manifest.get("kind") != PROBE_KIND:
        raise ProbeError(f"{where}: not a fenlei probe manifest (no \"kind\": \"{PROBE_KIND}\")")
    if manifest.get("format") != PROBE_FORMAT:
        raise ProbeError(f"{where}: format {manifest.get('format')!r}; this fenlei reads format {PROBE_FORMAT}")
    for key in ("model", "features", "head", "files"):
        if not isinstance(manifest.get(key), dict):
            raise ProbeError(f"{where}: no {key!r} object")
    _check_features(where, manifest["features"])
    if not isinstance(manifest["model"].get("name"), str) or not manifest["model"]["name"]:
        raise ProbeError(f"{where}: model.name must be the model's name")
    for name in CHECKED_FILES:
        path = folder / name
        if not path.is_file():
            raise ProbeError(f"{path}: missing (a saved probe has {', '.join([MANIFEST_FILE, *CHECKED_FILES])})")
        expected = (manifest["files"].get(name) or {}).get("sha256")
        if expected != file_sha256(path):
            raise ProbeError(f"{path}: its sha256 is not the one {MANIFEST_FILE} records (the file was changed or "
                             "comes from another probe)")
    return manifest


def _check_features(where: Path, features: dict[str, Any]) -> None:
    layer = features.get("layer")
    if isinstance(layer, bool) or not isinstance(layer, (int, float)):
        raise ProbeError(f"{where}: features.layer must be a number, got {layer!r}")
    if features.get("pooling") not in POOLINGS:
        raise ProbeError(f"{where}: features.pooling must be one of {', '.join(POOLINGS)}, got {features.get('pooling')!r}")
    max_length = features.get("max_length")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ProbeError(f"{where}: features.max_length must be a positive integer, got {max_length!r}")
    fields = features.get("text_fields")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f for f in fields):
        raise ProbeError(f"{where}: features.text_fields must be a non-empty list of field names, got {fields!r}")
    if not isinstance(features.get("text_separator", " "), str):
        raise ProbeError(f"{where}: features.text_separator must be a string")


def _labels(folder: Path) -> list[str]:
    labels = _read_json(folder, LABELS_FILE)
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(v, str) and v for v in labels):
        raise ProbeError(f"{folder / LABELS_FILE}: expected a list of two or more label names (strings)")
    if len(set(labels)) != len(labels):
        raise ProbeError(f"{folder / LABELS_FILE}: a label name occurs twice")
    return labels


def _head(folder: Path, manifest: dict[str, Any], num_classes: int) -> HeadArrays:
    path = folder / HEAD_FILE
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as err:  # not a zip, or an object array (which would need unpickling)
        raise ProbeError(f"{path}: not a readable .npz of plain arrays ({err})") from None
    try:
        head = HeadArrays(str(manifest["head"].get("kind")), num_classes, arrays)
    except ValueError as err:
        raise ProbeError(f"{path}: {err}") from None
    dim = manifest["features"].get("dim")
    if dim is not None and dim != head.dim:
        raise ProbeError(f"{path}: the head takes {head.dim} features but {MANIFEST_FILE} says the model gives {dim}")
    return head


def _calibration(folder: Path, labels: list[str]) -> tuple[float, float, str]:
    where = folder / CALIBRATION_FILE
    calibration = _read_json(folder, CALIBRATION_FILE)
    if not isinstance(calibration, dict):
        raise ProbeError(f"{where}: expected a JSON object")
    temperature, threshold = calibration.get("temperature"), calibration.get("threshold")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ProbeError(f"{where}: temperature must be a finite positive number, got {temperature!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ProbeError(f"{where}: threshold must be a number in [0, 1], got {threshold!r}")
    uncertain = calibration.get("uncertain_label", UNCERTAIN_LABEL)
    if not isinstance(uncertain, str) or not uncertain or uncertain in labels:
        raise ProbeError(f"{where}: uncertain_label must be a non-empty string that is no label, got {uncertain!r}")
    return float(temperature), float(threshold), uncertain


def load_probe(folder: str | Path) -> SavedProbe:
    """The probe in ``folder``, every file checked (one-line :class:`ProbeError` otherwise)."""
    folder = Path(folder)
    manifest = _manifest(folder)
    labels = _labels(folder)
    if manifest["head"].get("num_classes") != len(labels):
        raise ProbeError(f"{folder / LABELS_FILE}: {len(labels)} labels, but the head in {MANIFEST_FILE} has "
                         f"{manifest['head'].get('num_classes')!r} classes")
    head = _head(folder, manifest, len(labels))
    temperature, threshold, uncertain = _calibration(folder, labels)
    return SavedProbe(folder=folder, manifest=manifest, head=head, label_names=labels, temperature=temperature,
                      threshold=threshold, uncertain_label=uncertain)
