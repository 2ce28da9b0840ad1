"""Model comparison: ``fenlei compare RUN_OR_BUNDLE... --data test.jsonl --out reports/compare``.

For each run directory (best checkpoint, torch) or deployment bundle (ONNX through ``fenlei.serving.predictor``):
weighted and macro F1, top-1 and top-5 accuracy on the labelled file, batch-1 latency (p50 and P95 over a fixed,
seeded sample of texts, after a warm-up, with a fixed thread count) and the parameter count. Writes
``compare.md``, ``compare.csv`` and ``compare.png`` (grouped bars: quality, latency, size).

Macro F1 is scikit-learn's over the classes that occur in the gold labels or the predictions. Gold labels that a
model does not know count as errors for that model (reported in the ``unknown_gold`` column).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fenlei.errors import exit_status_of
from fenlei.io import atomic_write_bytes
from fenlei.ops.runs import OpsError, write_tables
from fenlei.ops.scorers import Scorer, load_scorer
from fenlei.training.reporting import figure_png

COLUMNS = ["model", "f1_weighted", "f1_macro", "top1_acc", "top5_acc", "latency_p50_ms", "latency_p95_ms",
           "n_params", "n_params_m", "n_examples", "unknown_gold", "source"]


def load_labelled(path: Path, text_field: str, label_field: str) -> tuple[list[str], list[str]]:
    """Texts and gold labels of a JSONL/CSV file (errors name the file and line)."""
    from datamodules.readers import DataError, read_records

    if not path.is_file():
        raise OpsError(f"{path}: no such file")
    try:
        records = read_records(path, [text_field], label_field)
    except DataError as err:
        raise OpsError(str(err)) from None
    return [r.text for r in records], [str(r.label) for r in records]


def quality_metrics(probs: np.ndarray, gold: Sequence[str], label_names: Sequence[str]) -> dict[str, Any]:
    """Weighted/macro F1 and top-1/top-5 accuracy of probabilities ``(N, C)`` against gold label names."""
    from sklearn.metrics import f1_score

    from fenlei.metrics import macro_f1

    if probs.ndim != 2 or probs.shape != (len(gold), len(label_names)):
        raise OpsError(f"scorer returned probabilities of shape {probs.shape}, expected ({len(gold)}, "
                       f"{len(label_names)})")
    names = np.asarray(label_names, dtype=object)
    order = np.argsort(-probs, axis=1, kind="stable")
    predicted = names[order[:, 0]]
    gold_arr = np.asarray(gold, dtype=object)
    k = min(5, probs.shape[1])
    in_top5 = (names[order[:, :k]] == gold_arr[:, None]).any(axis=1)
    return {
        "f1_weighted": float(f1_score(gold_arr, predicted, average="weighted", zero_division=0)),
        "f1_macro": macro_f1(gold_arr, predicted),
        "top1_acc": float(np.mean(predicted == gold_arr)),
        "top5_acc": float(np.mean(in_top5)),
        "unknown_gold": int(sum(g not in set(label_names) for g in gold)),
    }


def latency_ms(scorer: Scorer, texts: Sequence[str], warmup: int) -> dict[str, float]:
    """Batch-1 wall time per text in milliseconds: p50 and P95 (after ``warmup`` untimed calls)."""
    for text in texts[:warmup]:
        scorer.predict_proba([text], batch_size=1)
    times = []
    for text in texts:
        started = time.perf_counter()
        scorer.predict_proba([text], batch_size=1)
        times.append((time.perf_counter() - started) * 1000.0)
    return {"latency_p50_ms": float(np.percentile(times, 50)), "latency_p95_ms": float(np.percentile(times, 95))}


def latency_sample(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """A fixed, seeded sample of ``n`` texts (all when there are fewer): every model is timed on the same texts."""
    indices = list(range(len(texts)))
    random.Random(seed).shuffle(indices)
    return [texts[i] for i in indices[:n]]


def evaluate(scorer: Scorer, texts: list[str], gold: list[str], timing_texts: list[str], warmup: int,
             batch_size: int, source: str) -> dict[str, Any]:
    probs = scorer.predict_proba(texts, batch_size=batch_size)
    row: dict[str, Any] = {"model": scorer.name, **quality_metrics(np.asarray(probs), gold, scorer.label_names)}
    row.update(latency_ms(scorer, timing_texts, warmup) if timing_texts else {})
    row["n_params"] = scorer.n_params
    row["n_params_m"] = round(scorer.n_params / 1e6, 3) if scorer.n_params is not None else None
    row["n_examples"] = len(texts)
    row["source"] = source
    return row


def comparison_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Three panels: grouped bars of the quality metrics per model, P95/p50 latency, and parameter count."""
    from fenlei.plotting import pyplot

    plt = pyplot()

    models = [r["model"] for r in rows]
    quality = ["f1_weighted", "f1_macro", "top1_acc", "top5_acc"]
    fig, axes = plt.subplots(1, 3, figsize=(max(10.0, 2.2 * len(rows) + 6), 4.2),
                             gridspec_kw={"width_ratios": [2, 1, 1]})
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        axes[0].bar(np.arange(len(quality)) + i * width, [row.get(m) or 0.0 for m in quality], width, label=row["model"])
    axes[0].set_xticks(np.arange(len(quality)) + width * (len(rows) - 1) / 2, quality)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title("quality")
    axes[0].legend(fontsize=8, loc="lower right")

    def nan0(value: Optional[float]) -> float:
        return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    x = np.arange(len(rows))
    axes[1].bar(x - 0.2, [nan0(r.get("latency_p50_ms")) for r in rows], 0.4, label="p50", color="#8C8C8C")
    axes[1].bar(x + 0.2, [nan0(r.get("latency_p95_ms")) for r in rows], 0.4, label="P95", color="#C44E52")
    axes[1].set_xticks(x, models, rotation=20, ha="right")
    axes[1].set_title("batch-1 latency (ms)")
    axes[1].legend(fontsize=8)
    axes[2].bar(x, [nan0(r.get("n_params_m")) for r in rows], 0.6, color="#55A868")
    axes[2].set_xticks(x, models, rotation=20, ha="right")
    axes[2].set_title("parameters (M)")
    fig.suptitle(title)
    fig.tight_layout()
    return figure_png(fig, dpi=110)


def compare(sources: list[str], data: Path, out: Path, text_field: str = "text", label_field: str = "label",
            latency_samples: int = 100, warmup: int = 10, threads: int = 1, seed: int = 0, batch_size: int = 32,
            precision: str = "int8", names: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Score every source on ``data``; write compare.{md,csv,png} into ``out``; rows sorted by weighted F1."""
    if names is not None and len(names) != len(sources):
        raise OpsError(f"--names: {len(names)} names for {len(sources)} models")
    texts, gold = load_labelled(data, text_field, label_field)
    timing_texts = latency_sample(texts, latency_samples, seed)
    import torch

    # A fixed thread count: latencies of different models compare only at the same parallelism. Torch scorers
    # follow this setting; bundles get it when BundlePredictor takes a thread argument (else its own default).
    torch.set_num_threads(threads)
    rows = []
    for index, source in enumerate(sources):
        scorer = load_scorer(source, name=names[index] if names else None, precision=precision, threads=threads)
        print(f"compare: scoring {scorer.name} on {len(texts)} texts", file=sys.stderr)
        rows.append(evaluate(scorer, texts, gold, timing_texts, warmup, batch_size, str(source)))
        del scorer
    rows.sort(key=lambda r: -r["f1_weighted"])
    title = f"{data.name}: {len(texts)} examples; latency batch 1, {threads} thread(s), {len(timing_texts)} texts"
    write_tables(out, "compare", rows, COLUMNS, title=title)
    atomic_write_bytes(out / "compare.png", comparison_png(rows, title))
    print(f"compare: {len(rows)} models -> {out / 'compare.md'}", file=sys.stderr)
    return rows


def compare_command(models: list[str], *, data: str, out: str = "reports/compare", names: Optional[list[str]] = None,
                    text_field: str = "text", label_field: str = "label", latency_samples: int = 100,
                    warmup: int = 10, threads: int = 1, batch_size: int = 32, precision: str = "int8",
                    seed: int = 0) -> None:
    """Compare run directories and deployment bundles on one labelled file.

    Args:
        models: run directories (best checkpoint) or bundle directories
        data: labelled JSONL/CSV file, e.g. a test split
        out: output folder
        names: display names, one per model (default: folder names)
        text_field: field holding the text
        label_field: field holding the gold label
        latency_samples: texts timed at batch 1
        warmup: untimed batch-1 calls first
        threads: torch threads while scoring
        batch_size: batch size for the quality metrics
        precision: bundle precision to load
        seed: seed of the latency sample
    """
    compare(models, Path(data), Path(out), text_field, label_field, latency_samples, warmup, threads, seed,
            batch_size, precision, names)


DESCRIPTION = ("Compare run directories and deployment bundles on one labelled file: weighted/macro F1, top-1/top-5 "
               "accuracy, batch-1 p50/P95 latency, parameter count (markdown, CSV, PNG).")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei compare``; returns 0, raises OpsError on bad input."""
    from fenlei.typed_cli import run_typed

    return run_typed(compare_command, sys.argv[1:] if argv is None else argv, prog="fenlei compare",
                     positional=True, description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
