"""Active learning: pick the pool rows the model is least sure about for labeling, and merge labels back.

    fenlei al select --bundle DIR | --run DIR --pool pool.jsonl --n 200 --strategy margin \\
        [--train train.jsonl] --out queue.jsonl
    fenlei al merge --train train.jsonl --labeled queue_labeled.jsonl --out train_v2.jsonl

Uncertainty scores (higher = more uncertain), from class probabilities ``p`` sorted descending:

- ``least_confidence``: ``1 - p1``
- ``margin``: ``1 - (p1 - p2)`` (a small gap between the two best classes)
- ``entropy``: ``-sum p log p`` (natural log)

Rows are taken by descending score, ties by pool order. Pool rows whose normalized text (NFKC, lower case, no
punctuation; see ``fenlei.data.tools.normalize_text``) is already in the train file, or repeats an earlier pool
row, are skipped. Each queue row is the original pool row plus an ``al`` field (score, rank, strategy, pool line,
the model's prediction, confidence and top-k), which ``merge`` removes again.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, get_args

import numpy as np

from datamodules.readers import DataError, _field_text
from fenlei.data.tools import check_not_input, load, normalize_text, write_jsonl
from fenlei.errors import exit_status_of
from fenlei.ops.runs import OpsError
from fenlei.predictions import prediction_record

Strategy = Literal["least_confidence", "margin", "entropy"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
QUEUE_FIELD = "al"


# --------------------------------------------------------------------------------------------------- scores


def uncertainty_scores(probs: np.ndarray, strategy: str) -> np.ndarray:
    """One uncertainty score per row of ``probs`` (N, C); higher means the model is less sure."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 1:
        raise ValueError(f"probabilities must have shape (N, C), got {probs.shape}")
    if strategy == "least_confidence":
        return 1.0 - probs.max(axis=1)
    if strategy == "margin":
        if probs.shape[1] < 2:
            return np.ones(len(probs))
        top2 = -np.sort(-probs, axis=1)[:, :2]
        return 1.0 - (top2[:, 0] - top2[:, 1])
    if strategy == "entropy":
        safe = np.clip(probs, 1e-12, 1.0)
        return -(probs * np.log(safe)).sum(axis=1)
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def select_indices(scores: np.ndarray, n: int, eligible: Optional[np.ndarray] = None) -> list[int]:
    """Indices of the ``n`` highest scores among ``eligible`` rows, highest first, ties by lower index."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")  # stable: equal scores keep index order
    if eligible is not None:
        order = order[np.asarray(eligible, dtype=bool)[order]]
    return [int(i) for i in order[:n]]


def duplicate_mask(keys: Sequence[str], known: set[str]) -> np.ndarray:
    """True for rows whose key is in ``known`` or repeats an earlier row's key."""
    seen = set(known)
    mask = np.zeros(len(keys), dtype=bool)
    for i, key in enumerate(keys):
        mask[i] = key in seen
        seen.add(key)
    return mask


def queue_rows(rows: Sequence[dict[str, Any]], lines: Sequence[int], probs: np.ndarray, scores: np.ndarray,
               chosen: Sequence[int], label_names: Sequence[str], strategy: str, top_k: int) -> list[dict[str, Any]]:
    out = []
    for rank, index in enumerate(chosen):
        row = dict(rows[index])
        row[QUEUE_FIELD] = {"rank": rank, "score": round(float(scores[index]), 6), "strategy": strategy,
                            "pool_line": lines[index],
                            "prediction": prediction_record(probs[index], label_names, top_k, digits=6)}
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------------- commands


def _texts(path: Path, rows: list[tuple[int, dict[str, Any]]], field: str) -> list[str]:
    return [_field_text(path, line, row, field) for line, row in rows]


def select_queue(*, pool: str, n: int, out: str, load_scorer: Callable[[], Any], strategy: str = "margin",
                 train: Optional[str] = None, text_field: str = "text", top_k: int = 3,
                 batch_size: int = 32) -> dict[str, Any]:
    """Score the pool, skip known and repeated texts, write the ``n`` most uncertain rows to ``out``.

    ``load_scorer`` is called once the files are read, so a bad file is reported before a model is loaded.
    """
    if n < 1:
        raise OpsError("--n must be at least 1")
    pool_path = Path(pool)
    check_not_input(pool_path, out)
    if train:
        check_not_input(train, out)
    rows = load(pool_path)
    texts = _texts(pool_path, rows, text_field)
    keys = [normalize_text(t) for t in texts]
    known: set[str] = set()
    if train:
        train_path = Path(train)
        known = {normalize_text(t) for t in _texts(train_path, load(train_path), text_field)}
    skip = duplicate_mask(keys, known)
    in_train = sum(1 for k in keys if k in known)
    scorer = load_scorer()
    eligible = np.flatnonzero(~skip)
    probs = np.zeros((len(texts), len(scorer.label_names)))
    if len(eligible):
        probs[eligible] = scorer.predict_proba([texts[i] for i in eligible], batch_size=batch_size)
    scores = uncertainty_scores(probs, strategy)
    chosen = select_indices(scores, n, eligible=~skip)
    queued = queue_rows([r for _, r in rows], [line for line, _ in rows], probs, scores, chosen, scorer.label_names,
                        strategy, top_k)
    write_jsonl(out, queued)
    report = {"pool": len(rows), "skipped_in_train": in_train, "skipped_repeated": int(skip.sum()) - in_train,
              "scored": len(eligible), "selected": len(queued), "strategy": strategy}
    print(f"al select ({strategy}): pool {report['pool']} rows, skipped {in_train} already in train and "
          f"{report['skipped_repeated']} repeated; scored {report['scored']}, queued {report['selected']} -> "
          f"{out}")
    return report


def select(*, pool: str, n: int, out: str, bundle: Optional[str] = None, run: Optional[str] = None,
           strategy: Strategy = "margin", train: Optional[str] = None, text_field: str = "text", top_k: int = 3,
           batch_size: int = 32) -> dict[str, Any]:
    """Score an unlabeled pool with a bundle or run and queue the N most uncertain rows.

    Args:
        pool: unlabeled JSONL/CSV pool
        n: rows to queue
        out: queue JSONL to write (never the pool or train file)
        bundle: deployment bundle folder (metadata.json + model_int8.onnx); give this or --run
        run: run directory (best checkpoint); give this or --bundle
        strategy: uncertainty measure
        train: train file: pool rows whose normalized text is in it are skipped
        text_field: field holding the text
        top_k: model's top-k labels kept per queued row
        batch_size: texts scored per batch
    """
    if (bundle is None) == (run is None):
        raise OpsError("al select: give exactly one of --bundle and --run")

    def load_source() -> Any:
        from fenlei.ops.scorers import load_scorer

        return load_scorer(bundle or run)

    return select_queue(pool=pool, n=n, out=out, load_scorer=load_source, strategy=strategy, train=train,
                        text_field=text_field, top_k=top_k, batch_size=batch_size)


def merge(*, train: str, labeled: str, out: str, text_field: str = "text", label_field: str = "label",
          report: Optional[str] = None) -> dict[str, Any]:
    """Append labeled rows to train (new file), skipping normalized-text duplicates.

    Args:
        train: current train file
        labeled: labeled rows (e.g. the queue after labeling)
        out: new train JSONL (never one of the inputs)
        text_field: field holding the text
        label_field: field holding the label
        report: also write the counts as JSON here
    """
    train_path, labeled_path = Path(train), Path(labeled)
    check_not_input(train_path, out)
    check_not_input(labeled_path, out)
    train_rows = load(train_path)
    labeled_rows = load(labeled_path)
    missing = []
    for line, row in labeled_rows:
        value = row.get(label_field)
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(line)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise DataError(f"{labeled_path}: {len(missing)} row(s) without a label in field {label_field!r} "
                        f"(lines {shown}); label them or remove them, nothing was written")
    train_keys = {normalize_text(t) for t in _texts(train_path, train_rows, text_field)}
    train_labels = {str(row.get(label_field)).strip() for _, row in train_rows if row.get(label_field) is not None}
    seen = set(train_keys)
    added, in_train, repeated = [], 0, 0
    new_labels: set[str] = set()
    for line, row in labeled_rows:
        key = normalize_text(_field_text(labeled_path, line, row, text_field))
        if key in seen:
            in_train += key in train_keys
            repeated += key not in train_keys
            continue
        seen.add(key)
        clean = {k: v for k, v in row.items() if k != QUEUE_FIELD}
        if isinstance(clean[label_field], str):
            clean[label_field] = clean[label_field].strip()
        if str(clean[label_field]) not in train_labels:
            new_labels.add(str(clean[label_field]))
        added.append(clean)
    write_jsonl(out, [row for _, row in train_rows] + added)
    counts = {"train": len(train_rows), "labeled": len(labeled_rows), "added": len(added),
              "skipped_in_train": in_train, "skipped_repeated": repeated, "output": len(train_rows) + len(added),
              "new_labels": sorted(new_labels)}
    print(f"al merge: train {counts['train']} + labeled {counts['labeled']}: added {counts['added']}, skipped "
          f"{in_train} already in train and {repeated} repeated -> {out} ({counts['output']} rows)")
    if new_labels:
        print(f"al merge: note: label(s) not in the train file: {', '.join(sorted(new_labels))}", file=sys.stderr)
    if report:
        from fenlei.io import atomic_write_json

        atomic_write_json(report, counts)
    return counts


OPERATIONS = {"select": select, "merge": merge}
DESCRIPTION = ("Active learning: build a labeling queue from the most uncertain pool rows, and merge labeled rows "
               "back into train.")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei al``; returns 0, raises DataError or OpsError on bad input."""
    from fenlei.typed_cli import run_typed

    return run_typed(OPERATIONS, sys.argv[1:] if argv is None else argv, prog="fenlei al", description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
