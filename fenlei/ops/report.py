"""Run reports: ``fenlei report RUN_DIR [RUN_DIR ...]`` writes one static HTML page per run, and for several runs a
comparison page.

A run's page (``RUN_DIR/report.html``) shows the run's summary and test metrics, the learning curves of
``metrics.csv``, the reliability diagram of the test rows before and after temperature scaling, the confusion
matrix, the per-class table, the most confused label pairs with example texts, and the misclassified test rows.
The per-row sections read ``test/predictions.jsonl`` (written by ``fenlei test``); the temperature is fitted on
``validate/predictions.jsonl`` (written by ``fenlei validate``) or taken from an exported bundle (``--bundle``).
The comparison page (``--output``) has the runs' figures side by side and their curves overlaid, with links to
each run's page. Pages are self-contained (images embedded, no JavaScript) and written atomically; what a run lacks
is said on its page.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from fenlei import __version__
from fenlei.errors import exit_status_of
from fenlei.io import atomic_write_text
from fenlei.ops import report_html as h
from fenlei.ops.report_analysis import confused_pairs, misclassified, reliability_bins
from fenlei.ops.report_data import RunData, read_run
from fenlei.ops.report_figures import (
    comparison_curves_png,
    confusion_png,
    learning_curves_png,
    reliability_png,
)
from fenlei.ops.runs import OpsError

DEFAULT_COMPARISON = "reports/comparison.html"
SUMMARY_KEYS = ("epochs", "global_step", "fit_seconds", "train_seconds", "train_samples_per_s", "precision",
                "best_score")


def _short_class(value: Any) -> str:
    return str(value).rsplit(".", 1)[-1] if value else ""


def describe_config(config: dict[str, Any]) -> list[tuple[str, Any]]:
    """The config values a reader looks for first: model and data classes, encoder, loss, learning rate, epochs."""
    model = config.get("model") or {}
    init = model.get("init_args") or {}
    loss = init.get("loss") if isinstance(init.get("loss"), dict) else {}
    data = config.get("data") or {}
    data_init = data.get("init_args") or {}
    trainer = config.get("trainer") or {}
    rows = [("model", model.get("class_path")), ("pretrained", init.get("pretrained")),
            ("loss", _short_class(loss.get("class_path")) if loss else None), ("lr", init.get("lr")),
            ("data", data.get("class_path")), ("data_dir", data_init.get("data_dir")),
            ("max_epochs", trainer.get("max_epochs")), ("precision (config)", trainer.get("precision")),
            ("seed", config.get("seed_everything"))]
    return [(k, v) for k, v in rows if v is not None]


# ----------------------------------------------------------------------------------------------- one run


def calibration_figures(data: RunData) -> dict[str, Any]:
    """ECE and NLL of the test rows at T = 1 and at the run's temperature (None entries where there is none)."""
    from fenlei.calibration import nll

    assert data.test is not None
    before = data.test.probs(1.0)
    out: dict[str, Any] = {"before": reliability_bins(before, data.test.gold),
                           "nll_before": nll(data.test.logits, data.test.gold, 1.0), "after": None, "nll_after": None}
    if data.temperature is not None:
        t = data.temperature.value
        out["after"] = reliability_bins(data.test.probs(t), data.test.gold)
        out["nll_after"] = nll(data.test.logits, data.test.gold, t)
    return out


def summary_section(data: RunData) -> str:
    status = "finished" if data.summary else "not finished (no run_summary.json)"
    rows: list[tuple[str, Any]] = [("status", status), *describe_config(data.config)]
    if data.summary:
        rows += [(k, data.summary.get(k)) for k in SUMMARY_KEYS if data.summary.get(k) is not None]
        best = data.summary.get("best_checkpoint")
        if best:
            rows.append(("best checkpoint", Path(best).name))
    parts = [h.table(["", "value"], rows)]
    if data.test_metrics:
        parts.append("<h3>Test metrics</h3>")
        parts.append(h.table(["metric", "value"], sorted(data.test_metrics.items()), numeric=[False, True]))
    else:
        parts.append(h.note(f"No test metrics: {data.run.test_metrics} is missing."))
    return h.section("summary", "Summary", "".join(parts))


def curves_section(data: RunData) -> str:
    png = learning_curves_png(data.curves, data.name) if data.curves else None
    content = h.image(png, "learning curves") if png else h.note(
        data.notes.get("curves", "No learning curves: metrics.csv holds no loss, metric or learning-rate column."))
    return h.section("curves", "Learning curves", content)


def calibration_section(data: RunData) -> str:
    if data.test is None:
        return h.section("calibration", "Reliability diagram", h.note(data.notes.get("test", "No test rows.")))
    figures = calibration_figures(data)
    panels = [("test rows, T = 1 (as trained)", figures["before"])]
    parts = []
    if data.temperature is not None:
        panels.append((f"test rows, T = {data.temperature.value:.3f}", figures["after"]))
        parts.append(f"<p>Temperature {data.temperature.value:.4f}: {h.esc(data.temperature.source)}. "
                     "Temperature scaling divides the logits by T; it never changes a prediction, only the "
                     "confidences.</p>")
    else:
        parts.append(h.note(data.notes.get("temperature", "No temperature.")))
    parts.append(h.image(reliability_png(panels), "reliability diagram"))
    rows = [("ECE (15 bins)", figures["before"].ece, figures["after"].ece if figures["after"] else None),
            ("NLL", figures["nll_before"], figures["nll_after"])]
    parts.append(h.table(["test rows", "T = 1", "after temperature scaling"], rows, numeric=[False, True, True]))
    return h.section("calibration", "Reliability diagram before and after temperature scaling", "".join(parts))


def confusion_section(data: RunData) -> str:
    if data.test is not None and data.labels is not None:
        png = confusion_png(data.test.gold, data.test.logits.argmax(axis=1), data.labels)
        content = h.image(png, "confusion matrix")
    elif data.stored_confusion_png is not None:
        content = (h.note("From test/confusion_matrix.png (no per-row test predictions to draw it from).")
                   + h.image(data.stored_confusion_png, "confusion matrix"))
    else:
        content = h.note(data.notes.get("test", "No confusion matrix: the run has not been tested."))
    return h.section("confusion", "Confusion matrix", content)


def per_class_section(data: RunData) -> str:
    if not data.per_class:
        return h.section("per-class", "Per class", h.note("No test/per_class.csv."))
    columns = list(data.per_class[0])
    rows = [[row.get(c, "") for c in columns] for row in data.per_class]
    return h.section("per-class", "Per class", h.table(columns, rows, numeric=[c != "label" for c in columns]))


def examples_html(records: list[dict[str, Any]]) -> str:
    items = "".join(f"<li>{h.esc(r.get('text', ''))} <span class=\"meta\">(line {h.esc(r.get('line', '?'))}, "
                    f"confidence {h.fmt(float(r.get('confidence', float('nan'))), 3)})</span></li>"
                    for r in records)
    return f'<ul class="examples">{items}</ul>'


def pairs_section(data: RunData, top: int, examples: int) -> str:
    title = "Most confused label pairs"
    if data.test is None or data.labels is None:
        return h.section("pairs", title, h.note(data.notes.get("test", "No test rows.")))
    probs = data.test.probs()
    pairs = confused_pairs(data.test.gold, probs.argmax(axis=1), probs.max(axis=1), data.test.records, data.labels,
                           top, examples)
    if not pairs:
        return h.section("pairs", title, "<p>No test row is misclassified.</p>")
    rows = [(p.gold, p.predicted, p.count, p.share_of_gold, examples_html(p.examples)) for p in pairs]
    return h.section("pairs", title, h.table(["gold", "predicted as", "rows", "share of gold", "examples"], rows,
                                             numeric=[False, False, True, True, False],
                                             raw=[False, False, False, False, True]))


def errors_section(data: RunData, max_rows: int) -> str:
    title = "Misclassified test rows"
    if data.test is None or data.labels is None:
        return h.section("errors", title, h.note(data.notes.get("test", "No test rows.")))
    wrong = misclassified(data.test.gold, data.test.probs(), data.test.records, data.labels)
    head = (f"<p>{len(wrong)} of {len(data.test)} test rows, most confident mistakes first "
            f"(probabilities at T = 1; line: the row's line in its data file).</p>")
    shown = wrong[:max_rows]
    rest = h.note(f"{len(wrong) - len(shown)} more rows not shown (--max_rows {max_rows}); all rows are in "
                  f"{data.test.path}.") if len(wrong) > len(shown) else ""
    columns = ["line", "text", "gold", "predicted", "confidence", "p(gold)"]
    rows = [[r[c] for c in ("line", "text", "gold", "predicted", "confidence", "p_gold")] for r in shown]
    numeric = [True, False, False, False, True, True]
    return h.section("errors", title, head + (h.table(columns, rows, numeric=numeric) if shown else "") + rest)


NAV = [("summary", "summary"), ("curves", "learning curves"), ("calibration", "reliability"),
       ("confusion", "confusion matrix"), ("per-class", "per class"), ("pairs", "confused pairs"),
       ("errors", "misclassified rows")]


def run_page(data: RunData, max_rows: int = 500, pairs: int = 10, examples: int = 3) -> str:
    body = "\n".join([summary_section(data), curves_section(data), calibration_section(data),
                      confusion_section(data), per_class_section(data), pairs_section(data, pairs, examples),
                      errors_section(data, max_rows)])
    return h.page(f"Run report: {data.name}", body, meta=generated(data.run.path), nav=NAV)


def generated(path: Path) -> str:
    return f"{path.resolve()} · written {time.strftime('%Y-%m-%d %H:%M:%S')} by fenlei {__version__} report"


# ----------------------------------------------------------------------------------------------- comparison


def comparison_row(data: RunData, page_link: str) -> list[Any]:
    metrics = data.test_metrics or {}
    summary = data.summary or {}
    ece_before = ece_after = None
    if data.test is not None:
        figures = calibration_figures(data)
        ece_before = figures["before"].ece
        ece_after = figures["after"].ece if figures["after"] else None
    return [h.link(page_link, data.name), "yes" if data.summary else "no", summary.get("epochs"),
            summary.get("best_score"), metrics.get("test/acc"), metrics.get("test/f1_macro"),
            metrics.get("test/f1_weighted"), ece_before, data.temperature.value if data.temperature else None,
            ece_after, summary.get("train_samples_per_s"), summary.get("fit_seconds")]


COMPARISON_COLUMNS = ["run", "finished", "epochs", "best val/f1_macro", "test/acc", "test/f1_macro",
                      "test/f1_weighted", "test ECE (T = 1)", "temperature", "test ECE (scaled)", "train samples/s",
                      "fit seconds"]


def comparison_page(runs: list[RunData], output: Path) -> str:
    links = [os.path.relpath(data.run.report.resolve(), output.resolve().parent) for data in runs]
    rows = [comparison_row(data, link) for data, link in zip(runs, links, strict=True)]
    numeric = [False, False] + [True] * (len(COMPARISON_COLUMNS) - 2)
    raw = [True] + [False] * (len(COMPARISON_COLUMNS) - 1)
    parts = [h.section("metrics", "Metrics side by side", h.table(COMPARISON_COLUMNS, rows, numeric, raw))]
    png = comparison_curves_png([(data.name, data.curves) for data in runs])
    parts.append(h.section("curves", "Learning curves overlaid",
                           h.image(png, "learning curves of every run") if png else h.note("No run has metrics.csv.")))
    notes = [(data.name, text) for data in runs for key, text in data.notes.items()]
    if notes:
        parts.append(h.section("notes", "What the runs lack", h.table(["run", "note"], notes)))
    return h.page(f"Run comparison: {len(runs)} runs", "\n".join(parts), meta=generated(output.parent),
                  nav=[("metrics", "metrics"), ("curves", "curves")])


# ----------------------------------------------------------------------------------------------- command


def report(runs: list[str], output: Optional[str] = None, bundle: Optional[str] = None, max_rows: int = 500,
           pairs: int = 10, examples: int = 3) -> list[Path]:
    """Write every run's page (and the comparison page for several runs); returns the paths written."""
    if not runs:
        raise OpsError("no run directory given")
    if bundle is not None and len(runs) > 1:
        raise OpsError("--bundle: a bundle belongs to one run; give one run directory with it")
    if max_rows < 0 or pairs < 0 or examples < 0:
        raise OpsError("--max_rows, --pairs and --examples must be >= 0")
    if bundle is not None and not Path(bundle).is_dir():
        raise OpsError(f"--bundle {bundle}: no such directory")
    # Every run is read (and checked) before anything is written: a bad directory leaves no half set of pages.
    data = [read_run(Path(run), Path(bundle) if bundle else None) for run in runs]
    written = []
    single_output = Path(output) if output and len(data) == 1 else None
    for run in data:
        path = single_output or run.run.report
        atomic_write_text(path, run_page(run, max_rows, pairs, examples))
        written.append(path)
        print(f"report: {run.name} -> {path}", file=sys.stderr)
    if len(data) > 1:
        path = Path(output or DEFAULT_COMPARISON)
        atomic_write_text(path, comparison_page(data, path))
        written.append(path)
        print(f"report: comparison of {len(data)} runs -> {path}", file=sys.stderr)
    return written


def report_command(runs: list[str], *, output: Optional[str] = None, bundle: Optional[str] = None,
                   max_rows: int = 500, pairs: int = 10, examples: int = 3) -> None:
    """Write a static HTML report of each run directory (RUN_DIR/report.html), and for several runs a comparison.

    Args:
        runs: run directories
        output: the page of a single run (default RUN_DIR/report.html), or the comparison page of several runs
            (default reports/comparison.html; each run's page still goes to RUN_DIR/report.html)
        bundle: a bundle exported from the (single) run: use its fp32 temperature instead of fitting one on the
            run's validate/predictions.jsonl
        max_rows: misclassified test rows shown (most confident mistakes first)
        pairs: most confused label pairs shown
        examples: example texts per confused pair
    """
    report(runs, output, bundle, max_rows, pairs, examples)


DESCRIPTION = ("Write a static HTML report of run directories: learning curves, reliability diagram before and after "
               "temperature scaling, confusion matrix, most confused label pairs, misclassified test rows; for "
               "several runs also a comparison page.")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei report``; returns 0, raises OpsError on bad input."""
    from fenlei.typed_cli import run_typed

    return run_typed(report_command, sys.argv[1:] if argv is None else argv, prog="fenlei report",
                     positional=True, description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
