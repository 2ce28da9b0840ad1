"""Batch inference with an exported bundle: JSONL or CSV/TSV in, JSONL out. Torch-free.

    fenlei infer --bundle bundles/NAME --input texts.jsonl --output predictions.jsonl

The input is streamed (never loaded whole) and predicted in chunks; the output gets exactly one JSON line per
input row, in input order (blank lines are not rows)::

    {"line": 12, "label": "card_arrival", "predicted_label": "card_arrival", "confidence": 0.93,
     "uncertain": false, "top_k": [{"label": "card_arrival", "score": 0.93}, ...]}

Texts are cut to ``--max_chars`` characters before tokenizing (default: 32 per token of the bundle's
``max_length``, far more than the model reads; fenlei.text_limits) and each cut row is named on stderr. A text
with a lone surrogate or without a visible character (only whitespace, NULs, zero-width characters) is a
malformed row. ``label`` is ``"uncertain"`` when the calibrated confidence is under the bundle's threshold
(``predicted_label`` still holds the argmax). A malformed row (bad JSON, not an object, missing/empty/non-text field, bad CSV row)
gets ``{"line": N, "error": "..."}`` in the output and a ``FILE:N: ...`` line on stderr; the run goes on.
Exit status: 0 when every row was predicted, 1 when some rows were malformed (the output is still complete),
2 when nothing could be done (no bundle, unreadable input: a user error, reported by the ``fenlei`` command). The output is written to a temporary file beside it
and renamed at the end, so a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

from fenlei.errors import FenleiError, OptionError, exit_status_of
from fenlei.io import current_umask
from fenlei.serving.predictor import BundlePredictor
from fenlei.text_limits import cut_text, text_problem

Row = tuple[int, Optional[dict[str, Any]], Optional[str]]  # (line, mapping or None, error or None)


class TextPredictor(Protocol):
    """What the writer needs of a predictor: :class:`BundlePredictor`, or a saved probe's (``fenlei infer --probe``,
    ``fenlei.probe.predictor``, outside this torch-free package)."""

    metadata: dict[str, Any]
    max_chars: int

    def predict(self, texts: list[str], top_k: int = 5, batch_size: int = 32) -> list[dict[str, Any]]: ...


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


def write_record(out: io.TextIOBase, record: dict[str, Any]) -> None:
    try:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    except UnicodeEncodeError:  # a lone surrogate in a kept field: \uXXXX escapes are valid JSON and keep it exactly
        out.write(json.dumps(record) + "\n")


def run_infer(predictor: TextPredictor, input_path: Path, out: io.TextIOBase, fields: list[str], separator: str,
              batch_size: int, top_k: int, keep_fields: list[str], progress: Any, errors: list[str],
              max_chars: Optional[int] = None, cut_lines: Optional[list[int]] = None) -> int:
    """Predict every row of ``input_path`` into ``out``; malformed rows are appended to ``errors``, the lines of
    texts cut to ``max_chars`` (default: the predictor's) to ``cut_lines``. Returns #rows."""
    max_chars = max_chars or predictor.max_chars
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
            write_record(out, record)
        pending.clear()
        texts.clear()

    for line, row, error in iter_rows(input_path, progress):
        n += 1
        if row is not None and error is None:
            try:
                # Cut before anything walks the text (checks, tokenizer); a 10 MB line took 9.3 s and 2.1 GB.
                text, was_cut = cut_text(row_text(row, fields, separator), max_chars)
                if problem := text_problem(text):
                    raise ValueError(f"text in field(s) {', '.join(map(repr, fields))} {problem}")
                if was_cut and cut_lines is not None:
                    cut_lines.append(line)
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


def check_files(input_path: Path, output_path: Path) -> None:
    """The input must exist and the output must not be it."""
    if not input_path.is_file():
        raise InputError(f"{input_path}: no such file")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise InputError(f"{output_path}: output is the input file; refusing to overwrite it")


def write_predictions(predictor: TextPredictor, input_path: Path, output_path: Path, fields: list[str],
                      batch_size: int, top_k: int, keep_fields: list[str], progress_bar: bool,
                      errors: list[str], max_chars: Optional[int] = None,
                      cut_lines: Optional[list[int]] = None) -> int:
    """Predict every row into a temporary file beside ``output_path``, renamed over it at the end. Returns #rows."""
    separator = str(predictor.metadata.get("text_separator", " "))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output_path.parent, prefix=f".{output_path.name}.", suffix=".tmp")
    is_csv = input_path.suffix in (".csv", ".tsv")
    progress = _Progress(None if is_csv else input_path.stat().st_size, progress_bar, "line" if is_csv else "B")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            n = run_infer(predictor, input_path, out, fields, separator, batch_size, top_k, keep_fields, progress,
                          errors, max_chars, cut_lines)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes the file private; an output file should not be
        os.replace(tmp, output_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        progress.close()
    return n


def predict_file(predictor: TextPredictor, input_path: Path, output_path: Path, fields: list[str], batch_size: int,
                 top_k: int, keep_fields: Sequence[str], progress_bar: bool, max_chars: Optional[int]) -> int:
    """``infer``'s whole run for any predictor (a bundle's, a probe's): the predictions written, the summary on
    stderr; 0, or 1 when some rows were malformed (the output is still complete)."""
    errors: list[str] = []
    cut_lines: list[int] = []
    max_chars = max_chars or predictor.max_chars
    predictor.max_chars = max_chars  # the predictor's own cut (a safety net) must not undo a larger --max_chars
    n = write_predictions(predictor, input_path, output_path, fields, batch_size, top_k, list(keep_fields),
                          progress_bar, errors, max_chars, cut_lines)
    print_summary(n, errors, output_path, cut_lines, input_path, max_chars)
    return 1 if errors else 0


def print_summary(n: int, errors: list[str], output_path: Path, cut_lines: Sequence[int] = (),
                  input_path: Optional[Path] = None, max_chars: int = 0) -> None:
    for line in errors[:50]:
        print(line, file=sys.stderr)
    if len(errors) > 50:
        print(f"... and {len(errors) - 50} more malformed rows (see the error rows in {output_path})", file=sys.stderr)
    for line in cut_lines[:10]:
        print(f"{input_path}:{line}: warning: text cut to its first {max_chars} characters before tokenizing",
              file=sys.stderr)
    if len(cut_lines) > 10:
        print(f"... and {len(cut_lines) - 10} more texts cut", file=sys.stderr)
    cut = f"; {len(cut_lines)} texts cut to {max_chars} characters" if cut_lines else ""
    print(f"infer: {n} rows -> {output_path} ({n - len(errors)} predicted, {len(errors)} malformed{cut})",
          file=sys.stderr)


def infer(*, bundle: str, input: str, output: str, text_field: Optional[list[str]] = None,
          keep_fields: Sequence[str] = ("id",), batch_size: int = 32, precision: Literal["int8", "fp32"] = "int8",
          top_k: int = 5, threads: Optional[int] = None, no_progress: bool = False,
          max_chars: Optional[int] = None) -> int:
    """Batch inference with a bundle; returns 0, or 1 when some rows were malformed (the output is still complete).

    Args:
        bundle: bundle folder written by `fenlei export` (a probe saved by `fenlei probe --run_dir`: --probe DIR
            instead of --bundle; that route loads its model with torch, see `fenlei infer --probe DIR --help`)
        input: JSONL or CSV/TSV file
        output: JSONL file to write (one line per input row)
        text_field: field(s) holding the text, joined with a space (default: the bundle's training fields)
        keep_fields: input fields copied to the output
        batch_size: texts per onnxruntime call
        precision: bundle model to run
        top_k: labels listed per row
        threads: onnxruntime intra-op threads (default: one per core)
        no_progress: no progress bar
        max_chars: characters of each text kept before tokenizing (default: 32 per token of the bundle's
            max_length); each cut row is named on stderr
    """
    input_path, output_path = Path(input), Path(output)
    check_files(input_path, output_path)
    if batch_size < 1 or top_k < 1:
        raise OptionError("--batch_size and --top_k must be >= 1")
    if max_chars is not None and max_chars < 1:
        raise OptionError(f"--max_chars must be >= 1, got {max_chars}")
    predictor = BundlePredictor(bundle, precision=precision, intra_op_threads=threads)
    fields = list(text_field or predictor.metadata.get("text_fields") or ["text"])
    return predict_file(predictor, input_path, output_path, fields, batch_size, top_k, keep_fields, not no_progress,
                        max_chars)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei infer``; returns 0 or 1 (malformed rows), raises InputError/BundleError otherwise."""
    from fenlei.typed_cli import run_typed

    return run_typed(infer, sys.argv[1:] if argv is None else argv, prog="fenlei infer",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
