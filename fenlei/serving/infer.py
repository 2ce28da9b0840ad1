"""Batch inference with an exported bundle: JSONL or CSV/TSV in, JSONL out. Torch-free.

    python cli.py infer --bundle bundles/NAME --input texts.jsonl --output predictions.jsonl

The input is streamed (never loaded whole) and predicted in chunks; the output gets exactly one JSON line per
input row, in input order (blank lines are not rows)::

    {"line": 12, "label": "card_arrival", "predicted_label": "card_arrival", "confidence": 0.93,
     "uncertain": false, "top_k": [{"label": "card_arrival", "score": 0.93}, ...]}

``label`` is ``"uncertain"`` when the calibrated confidence is under the bundle's threshold (``predicted_label``
still holds the argmax). A malformed row (bad JSON, not an object, missing/empty/non-text field, bad CSV row)
gets ``{"line": N, "error": "..."}`` in the output and a ``FILE:N: ...`` line on stderr; the run goes on.
Exit status: 0 when every row was predicted, 1 when some rows were malformed (the output is still complete),
2 when nothing could be done (no bundle, unreadable input). The output is written to a temporary file beside it
and renamed at the end, so a reader never sees a half-written file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from fenlei.errors import FenleiError
from fenlei.serving.predictor import BundleError, BundlePredictor

Row = tuple[int, Optional[dict[str, Any]], Optional[str]]  # (line, mapping or None, error or None)


class InputError(FenleiError, ValueError):
    """The input file as a whole cannot be read."""


def _jsonl_rows(path: Path, progress: Any) -> Iterator[Row]:
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            progress.update(len(raw))
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield lineno, None, f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield lineno, None, f"malformed JSON ({err.msg} at column {err.colno})"
                continue
            if not isinstance(obj, dict):
                yield lineno, None, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield lineno, obj, None


def _csv_rows(path: Path, progress: Any) -> Iterator[Row]:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        previous = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield reader.line_num, None, f"malformed CSV ({err})"
                continue
            except UnicodeDecodeError as err:
                raise InputError(f"{path}:{reader.line_num + 1}: not valid UTF-8 ({err.reason})") from None
            progress.update(reader.line_num - previous)
            previous = reader.line_num
            if None in row:
                yield reader.line_num, None, f"more cells than the {len(reader.fieldnames or [])} header columns"
                continue
            if all(v in (None, "") for v in row.values()):
                continue
            yield reader.line_num, dict(row), None


def iter_rows(path: Path, progress: Any) -> Iterator[Row]:
    """Stream ``(line, row, error)`` from a JSONL (``.jsonl``/``.json``) or CSV/TSV file."""
    if path.suffix in (".csv", ".tsv"):
        return _csv_rows(path, progress)
    if path.suffix in (".jsonl", ".json", ".ndjson", ".txt"):
        return _jsonl_rows(path, progress)
    raise InputError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .csv/.tsv")


def row_text(row: dict[str, Any], fields: list[str], separator: str) -> str:
    """Join the text fields of a row; raise ValueError naming the field when one is missing, null or empty."""
    parts = []
    for name in fields:
        if name not in row:
            present = ", ".join(sorted(map(str, row))) or "none"
            raise ValueError(f"missing field {name!r} (fields present: {present})")
        value = row[name]
        if value is None or isinstance(value, (dict, list, bool)):
            raise ValueError(f"field {name!r} must be a string or number, got {type(value).__name__ if value is not None else 'null'}")
        text = str(value).strip()
        if text:
            parts.append(text)
    if not parts:
        raise ValueError(f"empty text in field(s) {', '.join(map(repr, fields))}")
    return separator.join(parts)


class _Progress:
    """tqdm when it is installed and stderr is a terminal; otherwise a no-op (a final summary is printed anyway)."""

    def __init__(self, total: Optional[int], enabled: bool, unit: str) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=unit, unit_scale=True, desc="infer", file=sys.stderr)
            except ImportError:
                self.bar = None

    def update(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_infer(predictor: BundlePredictor, input_path: Path, out: io.TextIOBase, fields: list[str], separator: str,
              batch_size: int, top_k: int, keep_fields: list[str], progress: Any, errors: list[str]) -> int:
    """Predict every row of ``input_path`` into ``out``; malformed rows are appended to ``errors``. Returns #rows."""
    pending: list[tuple[int, dict[str, Any], Optional[str]]] = []  # (line, passthrough, text or None if error)
    texts: list[str] = []
    # Predict in chunks of several batches: the predictor sorts each chunk by length, so batches pad less.
    chunk = max(batch_size * 8, 256)
    n = 0

    def flush() -> None:
        predictions = iter(predictor.predict(texts, top_k=top_k, batch_size=batch_size)) if texts else iter(())
        for line, extra, text in pending:
            record = {"line": line, **extra}
            record.update(next(predictions) if text is not None else {})
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        pending.clear()
        texts.clear()

    for line, row, error in iter_rows(input_path, progress):
        n += 1
        if row is not None and error is None:
            try:
                text = row_text(row, fields, separator)
            except ValueError as err:
                error = str(err)
        if error is not None:
            errors.append(f"{input_path}:{line}: {error}")
            pending.append((line, {"error": error}, None))
        else:
            pending.append((line, {k: row[k] for k in keep_fields if k in row}, text))
            texts.append(text)
            if len(texts) >= chunk:
                flush()
    flush()
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cli.py infer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="bundle folder written by `cli.py export`")
    p.add_argument("--input", required=True, help="JSONL or CSV/TSV file")
    p.add_argument("--output", required=True, help="JSONL file to write (one line per input row)")
    p.add_argument("--text_field", nargs="+", dest="text_fields",
                   help="field(s) holding the text, joined with a space (default: the bundle's training fields)")
    p.add_argument("--keep_fields", nargs="*", default=["id"], help="input fields copied to the output (default: id)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    p.add_argument("--top_k", type=int, default=5)
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: one per core)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    input_path, output_path = Path(args.input), Path(args.output)
    if not input_path.is_file():
        print(f"infer: error: {input_path}: no such file", file=sys.stderr)
        return 2
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        print(f"infer: error: {output_path}: output is the input file; refusing to overwrite it", file=sys.stderr)
        return 2
    if args.batch_size < 1 or args.top_k < 1:
        print("infer: error: --batch_size and --top_k must be >= 1", file=sys.stderr)
        return 2
    try:
        predictor = BundlePredictor(args.bundle, precision=args.precision, intra_op_threads=args.threads)
    except BundleError as err:
        print(f"infer: error: {err}", file=sys.stderr)
        return 2
    fields = args.text_fields or list(predictor.metadata.get("text_fields") or ["text"])
    separator = str(predictor.metadata.get("text_separator", " "))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output_path.parent, prefix=f".{output_path.name}.", suffix=".tmp")
    errors: list[str] = []
    is_csv = input_path.suffix in (".csv", ".tsv")
    progress = _Progress(None if is_csv else input_path.stat().st_size, not args.no_progress, "line" if is_csv else "B")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            n = run_infer(predictor, input_path, out, fields, separator, args.batch_size, args.top_k,
                          args.keep_fields, progress, errors)
            out.flush()
            os.fsync(out.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; an output file should not be
        os.replace(tmp, output_path)
    except InputError as err:
        Path(tmp).unlink(missing_ok=True)
        print(f"infer: error: {err}", file=sys.stderr)
        return 2
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        progress.close()
    for line in errors[:50]:
        print(line, file=sys.stderr)
    if len(errors) > 50:
        print(f"... and {len(errors) - 50} more malformed rows (see the error rows in {output_path})", file=sys.stderr)
    print(f"infer: {n} rows -> {output_path} ({n - len(errors)} predicted, {len(errors)} malformed)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
