"""``fenlei cascade``: a saved probe answers what it is sure of, a generative classifier reviews the rest.

    fenlei cascade --probe_dir runs/probe/endava --reviewer runs/gen/endava --input tickets.jsonl \\
        --output cascade.jsonl --reviewer_threshold 0.6

The routing is :mod:`fenlei.probe.cascade`. One output line per input row, in input order, written atomically:
``{"row", "route", "label", "fields": {NAME: {"label", "predicted_label", "score", "route", "uncertain"}}}`` (``route``
and ``label``: the probe's field; ``true_label`` per field when the input holds it), plus the ``keep_fields`` of the
row. The summary (default ``OUTPUT`` with ``.summary.json``) holds per field the coverage, the answered and
``uncertain`` counts, the accuracy on answered texts where gold labels exist (every row must then hold the field),
per route the same; the share of texts routed to the reviewer, the texts that went through the LM, and end-to-end
texts/s (probe features, head and label scoring; model loading is ``load_seconds``). A bad input row stops the
command before anything is written, with one line naming the file, line and field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Optional

from fenlei.errors import OptionError, exit_status_of


def read_input(path: Path, cascade: Any, keep_fields: Sequence[str]) -> tuple[list[str], list[str], dict[str, list[str]],
                                                                              list[dict[str, Any]]]:
    """``(probe texts, reviewer texts, gold labels per field name, kept fields)`` of every row of ``path``; each
    model's text joined from its own text fields. Raises DataError naming the file and line."""
    from datamodules.readers import DataError, read_records, read_rows

    features = cascade.predictor.probe.features
    probe_texts = [r.text for r in read_records(path, features["text_fields"], None,
                                                features.get("text_separator", " "))]
    reviewer = cascade.reviewer
    reviewer_texts = [r.text for r in read_records(path, reviewer.text_fields, None, reviewer.text_separator)]
    rows = read_rows(path)
    gold: dict[str, list[str]] = {}
    maps = reviewer.label_maps()
    for k, name in enumerate(cascade.field_names):
        column = reviewer.label_fields[k]
        missing = [line for line, row in rows if row.get(column) in (None, "")]
        if len(missing) == len(rows):
            continue
        if missing:
            raise DataError(f"{path}:{missing[0]}: missing field {column!r} (gold labels of field {name!r}: other rows "
                            "hold it, every row must)")
        for line, row in rows:
            if isinstance(row[column], (dict, list)):
                raise DataError(f"{path}:{line}: field {column!r} must be a string or number, got "
                                f"{type(row[column]).__name__}")
        gold[name] = [maps[k].get(str(row[column]).strip(), str(row[column]).strip()) for _, row in rows]
    kept = [{f: row[f] for f in keep_fields if f in row} for _, row in rows]
    return probe_texts, reviewer_texts, gold, kept


def cascade(*, probe_dir: str, reviewer: str, input: str, output: str, summary: Optional[str] = None,
            probe_threshold: Optional[float] = None, reviewer_threshold: float = 0.5,
            fields: Literal["all", "first"] = "all", keep_fields: Sequence[str] = ("id",),
            batch_size: Optional[int] = None, reviewer_batch_size: int = 8, device: str = "auto",
            num_threads: Optional[int] = None, share_model: bool = True, quiet: bool = False) -> int:
    """Probe first, generative label scoring for the texts under the probe's threshold, ``uncertain`` under the
    reviewer's.

    Args:
        probe_dir: the probe's run directory (``fenlei probe --run_dir``)
        reviewer: the generative classifier: its run directory (best checkpoint) or a checkpoint in one
        input: JSONL or CSV/TSV file with the text fields of both (and, for accuracy, the label fields)
        output: JSONL file to write (one line per input row)
        summary: summary JSON to write (default: OUTPUT with .summary.json)
        probe_threshold: the probe answers when its calibrated top probability is at least this (default: the
            threshold saved with the probe)
        reviewer_threshold: a reviewer's field whose label-scoring probability is under this is uncertain
        fields: all (every field of the reviewer: then every text goes through the LM when it has several) or
            first (the probe's field only: only routed texts reach the LM)
        keep_fields: input fields copied to the output
        batch_size: texts per probe extraction batch (default: the probe's)
        reviewer_batch_size: texts per label-scoring batch
        device: auto (GPU if torch sees one), cpu, cuda
        num_threads: torch threads
        share_model: run the probe on the reviewer's frozen base model when that is exactly the probe's model
            (LoRA switched off while extracting); otherwise both are loaded
        quiet: no progress bar and no summary line
    """
    from fenlei.io import atomic_write_json, atomic_write_text
    from fenlei.probe.cascade import Timer, check_threshold, collapsed_routes, load_cascade, summarise
    from fenlei.probe.run import check_device

    input_path, output_path = Path(input), Path(output)
    if not input_path.is_file():
        raise OptionError(f"--input {input}: no such file")
    if output_path.resolve() == input_path.resolve():
        raise OptionError(f"--output {output}: is the input file")
    summary_path = Path(summary) if summary else output_path.with_suffix(".summary.json")
    check_device(device)
    if probe_threshold is not None:
        check_threshold("probe_threshold", probe_threshold)
    check_threshold("reviewer_threshold", reviewer_threshold)
    if batch_size is not None and batch_size < 1:
        raise OptionError("--batch_size must be >= 1")
    with Timer() as load:
        model, shared = load_cascade(probe_dir, reviewer, probe_threshold, reviewer_threshold, fields,
                                     reviewer_batch_size, device, num_threads, share_model, progress=not quiet)
    probe_texts, reviewer_texts, gold, kept = read_input(input_path, model, keep_fields)
    if model.probe_threshold == 0.0 and not quiet:  # a probe fitted without --threshold/--target_precision saves 0
        print("cascade: the probe threshold is 0: the probe answers every text and none is routed (give "
              "--probe_threshold, or fit the probe with --target_precision)", file=sys.stderr)
    before = model.reviewer.texts_scored
    with Timer() as run:
        records = model.answer(probe_texts, reviewer_texts, batch_size)
    lines = []
    for i, (record, extra) in enumerate(zip(records, kept, strict=True)):
        first = record.fields[model.field_names[0]]
        out_fields = {name: {**value, "score": round(value["score"], 6),
                             **({"true_label": gold[name][i]} if name in gold else {})}
                      for name, value in record.fields.items()}
        lines.append(json.dumps({**extra, "row": i, "route": record.route, "label": first["label"],
                                 "fields": out_fields}, ensure_ascii=False) + "\n")
    settings = {"probe_threshold": model.probe_threshold, "reviewer_threshold": model.reviewer_threshold,
                "fields_mode": fields, "shared_model": shared, "load_seconds": round(load.seconds, 3),
                "probe": str(probe_dir), "reviewer": str(reviewer), "input": str(input_path)}
    report = summarise(records, gold, run.seconds, model.reviewer.texts_scored - before, settings)
    atomic_write_text(output_path, "".join(lines))
    atomic_write_json(summary_path, report)
    if not quiet:
        first = report["fields"][model.field_names[0]]
        print(f"cascade: {len(records)} rows of {input_path} -> {output_path}; {report['routed']} routed to the "
              f"reviewer ({report['share_routed']:.1%}), coverage {first['coverage']:.1%} of "
              f"{model.field_names[0]!r}, {report['texts_per_s']} texts/s; summary {summary_path}", file=sys.stderr)
    collapsed = collapsed_routes(report)
    if collapsed:  # said even with --quiet: the answers written are likely the majority label, not a decision
        print(f"cascade: warning: collapsed route(s), likely answering the majority label for everything: "
              f"{'; '.join(collapsed)}", file=sys.stderr)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    from fenlei.typed_cli import run_typed

    return run_typed(cascade, sys.argv[1:] if argv is None else argv, prog="fenlei cascade",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
