"""Validate a bundle folder before any of it is used: what :class:`~fenlei.serving.predictor.BundlePredictor` loads.

A bundle is data from elsewhere (copied between machines, edited by hand, possibly tampered with), so nothing in
it is trusted: the format marker, the parity verdict, the temperature and thresholds, the labels, ``max_length``,
where the files really are, and the sha256 of the files that decide the logits (recorded by the export in
``metadata.json``). Every failure is one :class:`BundleError` naming the file and the field, which ``fenlei infer``
and ``fenlei serve`` report in one line with exit status 2. Old bundles (no sha256 recorded) still load, with a
warning; a recorded sha256 that does not match never does.

The export's own temporary folder (``.NAME.tmp-*``, see :func:`fenlei.io.atomic_dir`) holds an unfinished bundle
whose metadata says so (:data:`UNFINISHED_FORMAT`); only the export itself loads it (``building=True``, for its
parity gate), and a folder of a killed export is never accepted as a bundle.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fenlei.errors import FenleiError
from fenlei.io import file_sha256

FORMAT = "fenlei-bundle"
FORMAT_VERSIONS = (1,)
UNFINISHED_FORMAT = "fenlei-bundle-unfinished"  # the export's stub metadata.json, before the parity gate has run
BUNDLE_FILES = ("model_fp32.onnx", "model_int8.onnx", "tokenizer.json", "labels.json", "calibration.json", "config.json",
                "metadata.json")
# Hugging Face-style label metadata (id2label, label2id, num_labels, the backbone's model_type) for tools that read a
# model folder's config.json. Not a model file (no sha256; the logits do not depend on it); bundles exported before
# it existed have none and still load; one that is there must agree with labels.json.
LABEL_CONFIG = "config.json"
PRECISIONS = ("int8", "fp32")
UNCERTAIN = "uncertain"
# The files whose bytes decide the logits; their sha256 are in metadata.json["sha256"].
HASHED_FILES = ("model_fp32.onnx", "model_int8.onnx", "tokenizer.json")
# fenlei.io.atomic_dir builds every bundle in a hidden sibling named like this.
TEMPORARY_FOLDER = re.compile(r"^\..+\.tmp-[^/]*$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class BundleError(FenleiError, ValueError):
    """A bundle folder that is missing files or holds inconsistent, out-of-range or tampered ones."""


@dataclass(frozen=True)
class Bundle:
    """What a validated bundle folder holds for one precision; every value checked."""

    folder: Path
    precision: str
    metadata: dict[str, Any]
    label_names: list[str]
    uncertain_label: str
    temperature: float
    thresholds: np.ndarray  # one per class; a global threshold broadcast, mode none all zeros
    max_length: int
    pad_token_id: int
    disabled_optimizers: list[str]
    tokenizer_file: Path
    model_file: Path
    warnings: list[str] = field(default_factory=list)


def is_temporary_folder(folder: Path) -> bool:
    return bool(TEMPORARY_FOLDER.match(Path(folder).name))


def inside(folder: Path, name: str) -> Path:
    """``folder/name`` as a regular file that really lies inside ``folder`` (a symlink may point within the bundle,
    never out of it: the bundle would silently serve another file)."""
    path = folder / name
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{path}: missing (not a complete fenlei bundle)")
    resolved = path.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise BundleError(f"{path}: points outside the bundle (to {resolved}); a bundle's files must lie inside it")
    if not resolved.is_file():
        raise BundleError(f"{path}: not a regular file")
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (not a complete fenlei bundle)") from None
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def _json_object(folder: Path, name: str) -> dict[str, Any]:
    value = read_json(inside(folder, name))
    if not isinstance(value, dict):
        raise BundleError(f"{folder / name}: must be a JSON object, got {type(value).__name__}")
    return value


def _is_real(value: Any) -> bool:
    # bool is an int subclass: true/false are no temperatures or thresholds.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def disabled_optimizers(metadata: dict[str, Any], where: str = "metadata.json") -> list[str]:
    """The onnxruntime fusions a bundle's sessions must skip (none for bundles written before the CPU rewrites).

    onnxruntime accepts any names here silently, so a malformed entry is refused rather than quietly ignored."""
    optimization = metadata.get("optimization") or {}
    names = optimization.get("ort_disabled_optimizers", []) if isinstance(optimization, dict) else None
    if not isinstance(names, list) or not all(isinstance(x, str) and x for x in names):
        raise BundleError(f"{where}: optimization.ort_disabled_optimizers must be a list of onnxruntime "
                          f"optimizer names, got {names!r}")
    return names


def check_format(metadata: dict[str, Any], where: Path, building: bool) -> bool:
    """The format marker; returns whether the bundle is the export's unfinished one (only accepted while building)."""
    marker = metadata.get("format")
    if marker == UNFINISHED_FORMAT:
        if not building:
            raise BundleError(f"{where}: format: {marker!r}, an export that has not finished (or was killed), "
                              "not a bundle")
        return True
    if marker != FORMAT:
        raise BundleError(f"{where}: format: expected {FORMAT!r}, got {marker!r} (not a fenlei bundle)")
    version = metadata.get("format_version")
    if version not in FORMAT_VERSIONS or not _is_int(version):
        raise BundleError(f"{where}: format_version: {version!r} is not one this fenlei reads "
                          f"({', '.join(map(str, FORMAT_VERSIONS))}); a newer fenlei wrote it?")
    return False


def check_parity(metadata: dict[str, Any], where: Path) -> list[str]:
    """The export's parity verdict: passed, or failed and forced (a warning); anything else is refused."""
    parity = metadata.get("parity")
    if not isinstance(parity, dict) or not isinstance(parity.get("passed"), bool):
        raise BundleError(f"{where}: parity.passed: missing or not true/false (the export's parity verdict)")
    if parity["passed"]:
        return []
    if parity.get("forced") is not True:
        raise BundleError(f"{where}: parity.passed is false and parity.forced is not true: the export's parity gate "
                          "failed and this bundle was not written with --force")
    failures = parity.get("failures")
    detail = "; ".join(str(f) for f in failures) if isinstance(failures, list) and failures else "no details"
    return [f"the parity gate failed at export and was overridden with --force ({detail}): its INT8/ONNX outputs "
            "may disagree with the trained model"]


def check_labels(folder: Path, metadata: dict[str, Any]) -> list[str]:
    path = folder / "labels.json"
    labels = read_json(inside(folder, "labels.json"))
    if not isinstance(labels, list) or not labels:
        raise BundleError(f"{path}: must be a non-empty JSON list of label names, got {type(labels).__name__}"
                          f"{'' if labels else ' (empty)'}")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label:
            raise BundleError(f"{path}: [{i}]: label names must be non-empty strings, got {label!r}")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in seen:
            raise BundleError(f"{path}: [{i}]: duplicate label {label!r} (also at [{seen[label]}])")
        seen[label] = i
    count = metadata.get("labels")
    if count is not None and (not _is_int(count) or count != len(labels)):
        raise BundleError(f"{folder / 'metadata.json'}: labels: {count!r}, but labels.json has {len(labels)} labels")
    return labels


def label_config(labels: list[str], model_type: Any) -> dict[str, Any]:
    """``config.json`` of a bundle: the labels as Hugging Face configs spell them (JSON object keys are strings)."""
    return {"model_type": model_type, "num_labels": len(labels),
            "id2label": {str(i): name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)}}


def check_label_config(folder: Path, labels: list[str]) -> None:
    """``config.json``, when the bundle has one, says what ``labels.json`` says (same names, same order)."""
    path = folder / LABEL_CONFIG
    if not path.exists() and not path.is_symlink():
        return  # exported before bundles carried it
    config = _json_object(folder, LABEL_CONFIG)
    expected = label_config(labels, None)
    for key in ("id2label", "label2id"):
        value = config.get(key)
        if value != expected[key]:
            raise BundleError(f"{path}: {key}: does not match labels.json ({len(labels)} labels in class-id order), "
                              f"got {_short(value)}")
    count = config.get("num_labels", len(labels))
    if not _is_int(count) or count != len(labels):
        raise BundleError(f"{path}: num_labels: {count!r}, but labels.json has {len(labels)} labels")
    model_type = config.get("model_type")
    if model_type is not None and (not isinstance(model_type, str) or not model_type):
        raise BundleError(f"{path}: model_type: must be a non-empty string or null, got {model_type!r}")


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_threshold(spec: Any, n: int, where: str) -> np.ndarray:
    """Per-class threshold array (a global threshold is broadcast; mode ``none`` accepts everything)."""
    if spec is None:
        return np.zeros(n)
    if not isinstance(spec, dict):
        raise BundleError(f"{where}: must be an object with a mode, got {spec!r}")
    mode = spec.get("mode", "none")
    if mode == "none":
        return np.zeros(n)
    if mode == "global":
        value = spec.get("value")
        if not _is_real(value) or not 0.0 <= value <= 1.0:
            raise BundleError(f"{where}.value: must be a number in [0, 1], got {value!r}")
        return np.full(n, float(value))
    if mode == "per_class":
        values = spec.get("values")
        if not isinstance(values, list) or len(values) != n:
            size = len(values) if isinstance(values, list) else type(values).__name__
            raise BundleError(f"{where}.values: must be a list of {n} thresholds (one per label), got {size}")
        for i, value in enumerate(values):
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise BundleError(f"{where}.values[{i}]: must be a number in [0, 1], got {value!r}")
        return np.asarray(values, dtype=np.float64)
    raise BundleError(f"{where}.mode: unknown threshold mode {mode!r} (none, global or per_class)")


def check_calibration(folder: Path, precision: str, labels: list[str]) -> tuple[str, float, np.ndarray]:
    """Uncertain label, temperature and thresholds of ``precision``; every precision's entry is checked."""
    path = folder / "calibration.json"
    calibration = _json_object(folder, "calibration.json")
    by_precision = calibration.get("by_precision")
    if not isinstance(by_precision, dict):
        raise BundleError(f"{path}: by_precision: must be an object with one entry per precision")
    if precision not in by_precision:
        raise BundleError(f"{path}: no entry for precision {precision!r}")
    uncertain = calibration.get("uncertain_label", UNCERTAIN)
    if not isinstance(uncertain, str) or not uncertain:
        raise BundleError(f"{path}: uncertain_label: must be a non-empty string, got {uncertain!r}")
    if uncertain in labels:
        raise BundleError(f"{path}: uncertain_label: {uncertain!r} is also a class in labels.json")
    checked: dict[str, tuple[float, np.ndarray]] = {}
    for name, entry in by_precision.items():
        where = f"{path}: by_precision.{name}"
        if not isinstance(entry, dict):
            raise BundleError(f"{where}: must be an object")
        temperature = entry.get("temperature")
        if not _is_real(temperature) or temperature <= 0:
            raise BundleError(f"{where}.temperature: must be a finite number > 0, got {temperature!r}")
        checked[name] = float(temperature), check_threshold(entry.get("threshold"), len(labels), f"{where}.threshold")
    return uncertain, *checked[precision]


def check_lengths(metadata: dict[str, Any], where: Path) -> tuple[int, int]:
    max_length = metadata.get("max_length")
    if not _is_int(max_length) or max_length < 1:
        raise BundleError(f"{where}: max_length: must be an integer >= 1, got {max_length!r}")
    pad = metadata.get("pad_token_id", 0)
    if not _is_int(pad) or pad < 0:
        raise BundleError(f"{where}: pad_token_id: must be an integer >= 0, got {pad!r}")
    fields = metadata.get("text_fields")
    if fields is not None and (not isinstance(fields, list) or not fields
                               or not all(isinstance(f, str) and f for f in fields)):
        raise BundleError(f"{where}: text_fields: must be a non-empty list of field names, got {fields!r}")
    return max_length, pad


def file_hashes(folder: Path, names: tuple[str, ...] = HASHED_FILES) -> dict[str, str]:
    """``metadata.json["sha256"]``: the sha256 of the files that decide the logits (written by the export)."""
    return {name: file_sha256(folder / name) for name in names if (folder / name).is_file()}


def check_hashes(folder: Path, metadata: dict[str, Any], files: tuple[Path, ...]) -> list[str]:
    """Each file's sha256 against ``metadata.json``; a bundle without the table (written before fenlei recorded it)
    loads with a warning, an entry that is missing or does not match is refused."""
    where = folder / "metadata.json"
    recorded = metadata.get("sha256")
    if recorded is None:
        return [f"metadata.json: no sha256 recorded for {', '.join(f.name for f in files)} (a bundle exported before fenlei "
                "recorded them): their integrity is not checked; export again to add them"]
    if not isinstance(recorded, dict):
        raise BundleError(f"{where}: sha256: must be an object of file name -> hex digest, got {recorded!r}")
    for path in files:
        expected = recorded.get(path.name)
        if not isinstance(expected, str) or not SHA256_HEX.match(expected):
            raise BundleError(f"{where}: sha256.{path.name}: missing or not a hex sha256 digest, got {expected!r}")
        actual = file_sha256(path)
        if actual != expected:
            raise BundleError(f"{path}: sha256 {actual[:16]}... does not match metadata.json sha256.{path.name} "
                              f"{expected[:16]}... (the file changed after the export)")
    return []


def load_bundle(folder: str | Path, precision: str = "int8", *, building: bool = False) -> Bundle:
    """Check the bundle in ``folder`` for ``precision``; raise :class:`BundleError` on the first problem.

    ``building``: the export's own parity gate loading its temporary folder (the unfinished marker and the hidden
    folder name are accepted; parity and sha256, which do not exist yet, are checked once they do)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    if precision not in PRECISIONS:
        raise BundleError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if is_temporary_folder(folder) and not building:
        raise BundleError(f"{folder}: a temporary folder of an export that did not finish (exports build bundles in "
                          "hidden .NAME.tmp-* folders and rename them when done), not a bundle")
    where = folder / "metadata.json"
    metadata = _json_object(folder, "metadata.json")
    unfinished = check_format(metadata, where, building)
    notes = [] if unfinished else check_parity(metadata, where)
    labels = check_labels(folder, metadata)
    check_label_config(folder, labels)
    uncertain, temperature, thresholds = check_calibration(folder, precision, labels)
    max_length, pad = check_lengths(metadata, where)
    optimizers = disabled_optimizers(metadata, str(where))
    tokenizer = inside(folder, "tokenizer.json")
    model = inside(folder, f"model_{precision}.onnx")
    if not unfinished:
        notes += check_hashes(folder, metadata, (tokenizer, model))
    return Bundle(folder=folder, precision=precision, metadata=metadata, label_names=labels,
                  uncertain_label=uncertain, temperature=temperature, thresholds=thresholds, max_length=max_length,
                  pad_token_id=pad, disabled_optimizers=optimizers, tokenizer_file=tokenizer, model_file=model,
                  warnings=notes)
