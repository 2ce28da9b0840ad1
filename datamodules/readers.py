"""Read labelled text records from JSONL or CSV, with errors that name the file and line.

Every problem in an input file is reported as a :class:`DataError` of the form ``path:line: what is wrong``
before any training starts, so a bad file never produces a run directory that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from datamodules.labels import as_label, label_kind
from fenlei.errors import FenleiError

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


class DataError(FenleiError, ValueError):
    """A problem in an input data file; the message starts with ``path:line:`` where a line is known."""


def require_tokenizer(tokenizer: Optional[str]) -> str:
    """The tokenizer name; None only reaches here outside fenlei's CLI or with a model that has no ``pretrained``
    (the CLI fills it from ``model.init_args.pretrained``)."""
    if not tokenizer:
        raise DataError("tokenizer: not set; name one (data.init_args.tokenizer) or give the model a pretrained "
                        "name to take it from (model.init_args.pretrained)")
    return tokenizer


@dataclass(frozen=True)
class Record:
    """One labelled (or unlabelled) example: the joined text, its class name, where it came from, and the JSON kind
    of the raw label (``datamodules.labels.label_kind``: ``1`` and ``"1"`` are both class ``"1"``)."""

    text: str
    label: Optional[str]
    line: int
    label_kind: Optional[str] = None


def resolve_data_file(name: str, data_dir: Optional[str]) -> Optional[Path]:
    """Find a split file: an existing path, or ``data_dir/name`` with any supported suffix; None if absent."""
    candidates = [Path(name)]
    if data_dir is not None:
        base = Path(data_dir) / name
        candidates = [base] + [base.with_name(base.name + suffix) for suffix in SUPPORTED_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})") from None


def _iter_jsonl(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append((lineno, obj))
    return rows


def _iter_json_array(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """A ``.json`` file holding one array of objects; positions are reported as record numbers."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    rows = []
    for number, obj in enumerate(items, start=1):
        if not isinstance(obj, dict):
            raise DataError(f"{path}: record {number}: expected a JSON object, got {type(obj).__name__}")
        rows.append((number, obj))
    return rows


def _iter_csv(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            if None in row:  # more cells than header columns
                raise DataError(f"{path}:{reader.line_num}: more cells than the {len(reader.fieldnames or [])} header columns")
            if all(v in (None, "") for v in row.values()):
                continue
            rows.append((reader.line_num, dict(row)))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    return rows


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """All non-blank rows of a JSONL or CSV/TSV file as ``(line_number, mapping)``; raises DataError."""
    path = Path(path)
    if path.suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    text = _decode(path)
    if path.suffix in (".csv", ".tsv"):
        rows = _iter_csv(path, text)
    elif path.suffix == ".json" and text.lstrip().startswith("["):
        rows = _iter_json_array(path, text)
    else:
        rows = _iter_jsonl(path, text)
    if not rows:
        raise DataError(f"{path}: file is empty (no records)")
    return rows


def _field_value(path: Path, lineno: int, row: dict[str, Any], field: str) -> Any:
    if field not in row:
        present = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(f"{path}:{lineno}: missing field {field!r} (fields present: {present})")
    value = row[field]
    if value is None:
        raise DataError(f"{path}:{lineno}: field {field!r} is null")
    if isinstance(value, (dict, list)):
        raise DataError(f"{path}:{lineno}: field {field!r} must be a string or number, got {type(value).__name__}")
    if isinstance(value, str):
        check_encodable(value, f"{path}:{lineno}: field {field!r}")
    return value


def _field_text(path: Path, lineno: int, row: dict[str, Any], field: str) -> str:
    return str(_field_value(path, lineno, row, field))


def check_encodable(text: str, where: str) -> None:
    """Refuse text that no file or tokenizer can take: JSON's ``\\ud800`` escapes decode to lone surrogates, which
    are not Unicode characters (UTF-8 cannot encode them; fast tokenizers raise a TypeError without a line).
    Checked while reading, so the error names the line before a run directory is touched."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        raise DataError(f"{where} holds a lone surrogate (U+{ord(bad):04X} at character {err.start}), which is "
                        "not valid Unicode text; remove it or re-encode the file") from None


def read_records(
    path: Path,
    text_fields: Sequence[str],
    label_field: Optional[str],
    text_separator: str = " ",
    label_required: bool = True,
    label_type: Optional[str] = None,
) -> list[Record]:
    """Read records, joining ``text_fields`` with ``text_separator``; ``label_field=None`` reads unlabelled text.

    With ``label_required=False`` a record without the label field gets ``label=None`` (prediction files).
    ``label_type`` (``datamodules.labels``): None or ``str`` keeps a label as written (stripped), ``int`` reads it
    as an integer. Raises DataError for a missing field, an empty text (after joining and stripping), an empty
    label, an ``int`` label that is no integer, or a lone surrogate in a text or label.
    """
    records = []
    for lineno, row in read_rows(path):
        parts = [_field_text(path, lineno, row, field).strip() for field in text_fields]
        text = text_separator.join(p for p in parts if p)
        if not text:
            raise DataError(f"{path}:{lineno}: empty text in field(s) {', '.join(map(repr, text_fields))}")
        label = kind = None
        if label_field is not None and (label_required or label_field in row):
            raw = _field_value(path, lineno, row, label_field)
            if not str(raw).strip():
                raise DataError(f"{path}:{lineno}: empty label in field {label_field!r}")
            try:
                label = as_label(raw, label_type)
            except ValueError as err:
                raise DataError(f"{path}:{lineno}: {err}") from None
            kind = label_kind(raw)
        records.append(Record(text=text, label=label, line=lineno, label_kind=kind))
    return records
