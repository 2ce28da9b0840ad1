"""Active learning: pick the pool rows the model is least sure about for labeling, and merge labels back.

    python cli.py al select --bundle DIR | --run DIR --pool pool.jsonl --n 200 --strategy margin \\
        [--train train.jsonl] --out queue.jsonl
    python cli.py al merge --train train.jsonl --labeled queue_labeled.jsonl --out train_v2.jsonl

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

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from datamodules.readers import DataError, _field_text
from fenlei.data.tools import check_not_input, load, normalize_text, write_jsonl
from fenlei.ops.runs import OpsError
from fenlei.predictions import prediction_record

STRATEGIES = ("least_confidence", "margin", "entropy")
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


def cmd_select(args: argparse.Namespace, scorer: Any = None) -> dict[str, Any]:
    """Score the pool, skip known and repeated texts, write the ``n`` most uncertain rows to ``--out``."""
    if args.n < 1:
        raise OpsError("--n must be at least 1")
    pool_path = Path(args.pool)
    check_not_input(pool_path, args.out)
    if args.train:
        check_not_input(args.train, args.out)
    pool = load(pool_path)
    texts = _texts(pool_path, pool, args.text_field)
    keys = [normalize_text(t) for t in texts]
    known: set[str] = set()
    if args.train:
        train_path = Path(args.train)
        known = {normalize_text(t) for t in _texts(train_path, load(train_path), args.text_field)}
    skip = duplicate_mask(keys, known)
    in_train = sum(1 for k in keys if k in known)
    if scorer is None:
        from fenlei.ops.scorers import load_scorer

        scorer = load_scorer(args.bundle or args.run)
    eligible = np.flatnonzero(~skip)
    probs = np.zeros((len(texts), len(scorer.label_names)))
    if len(eligible):
        probs[eligible] = scorer.predict_proba([texts[i] for i in eligible], batch_size=args.batch_size)
    scores = uncertainty_scores(probs, args.strategy)
    chosen = select_indices(scores, args.n, eligible=~skip)
    rows = queue_rows([r for _, r in pool], [line for line, _ in pool], probs, scores, chosen, scorer.label_names,
                      args.strategy, args.top_k)
    write_jsonl(args.out, rows)
    report = {"pool": len(pool), "skipped_in_train": in_train, "skipped_repeated": int(skip.sum()) - in_train,
              "scored": len(eligible), "selected": len(rows), "strategy": args.strategy}
    print(f"al select ({args.strategy}): pool {report['pool']} rows, skipped {in_train} already in train and "
          f"{report['skipped_repeated']} repeated; scored {report['scored']}, queued {report['selected']} -> "
          f"{args.out}")
    return report


def cmd_merge(args: argparse.Namespace) -> dict[str, Any]:
    """Append labeled rows to the train rows, skipping texts already in train or repeated in the labeled file."""
    train_path, labeled_path = Path(args.train), Path(args.labeled)
    check_not_input(train_path, args.out)
    check_not_input(labeled_path, args.out)
    train = load(train_path)
    labeled = load(labeled_path)
    missing = []
    for line, row in labeled:
        value = row.get(args.label_field)
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(line)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise DataError(f"{labeled_path}: {len(missing)} row(s) without a label in field {args.label_field!r} "
                        f"(lines {shown}); label them or remove them, nothing was written")
    train_keys = {normalize_text(t) for t in _texts(train_path, train, args.text_field)}
    train_labels = {str(row.get(args.label_field)).strip() for _, row in train if row.get(args.label_field) is not None}
    seen = set(train_keys)
    added, in_train, repeated = [], 0, 0
    new_labels: set[str] = set()
    for line, row in labeled:
        key = normalize_text(_field_text(labeled_path, line, row, args.text_field))
        if key in seen:
            in_train += key in train_keys
            repeated += key not in train_keys
            continue
        seen.add(key)
        clean = {k: v for k, v in row.items() if k != QUEUE_FIELD}
        if isinstance(clean[args.label_field], str):
            clean[args.label_field] = clean[args.label_field].strip()
        if str(clean[args.label_field]) not in train_labels:
            new_labels.add(str(clean[args.label_field]))
        added.append(clean)
    write_jsonl(args.out, [row for _, row in train] + added)
    report = {"train": len(train), "labeled": len(labeled), "added": len(added), "skipped_in_train": in_train,
              "skipped_repeated": repeated, "output": len(train) + len(added), "new_labels": sorted(new_labels)}
    print(f"al merge: train {report['train']} + labeled {report['labeled']}: added {report['added']}, skipped "
          f"{in_train} already in train and {repeated} repeated -> {args.out} ({report['output']} rows)")
    if new_labels:
        print(f"al merge: note: label(s) not in the train file: {', '.join(sorted(new_labels))}", file=sys.stderr)
    if args.report:
        from fenlei.io import atomic_write_json

        atomic_write_json(args.report, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli.py al", description="Active learning: build a labeling queue from "
                                     "the most uncertain pool rows, and merge labeled rows back into train.")
    sub = parser.add_subparsers(dest="operation", metavar="OPERATION", required=True)
    p = sub.add_parser("select", help="write the N most uncertain pool rows to a labeling queue (JSONL)",
                       description="Score an unlabeled pool with a bundle or run and queue the N most uncertain rows.")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--bundle", help="deployment bundle folder (metadata.json + model_int8.onnx)")
    model.add_argument("--run", help="run directory (best checkpoint)")
    p.add_argument("--pool", required=True, help="unlabeled JSONL/CSV pool")
    p.add_argument("--n", type=int, required=True, help="rows to queue")
    p.add_argument("--strategy", choices=STRATEGIES, default="margin", help="uncertainty measure (default margin)")
    p.add_argument("--train", help="train file: pool rows whose normalized text is in it are skipped")
    p.add_argument("--out", required=True, help="queue JSONL to write (never the pool or train file)")
    p.add_argument("--text_field", default="text")
    p.add_argument("--top_k", type=int, default=3, help="model's top-k labels kept per queued row (default 3)")
    p.add_argument("--batch_size", type=int, default=32)
    p.set_defaults(func=cmd_select)
    p = sub.add_parser("merge", help="add labeled queue rows to a train file without duplicates",
                       description="Append labeled rows to train (new file), skipping normalized-text duplicates.")
    p.add_argument("--train", required=True, help="current train file")
    p.add_argument("--labeled", required=True, help="labeled rows (e.g. the queue after labeling)")
    p.add_argument("--out", required=True, help="new train JSONL (never one of the inputs)")
    p.add_argument("--text_field", default="text")
    p.add_argument("--label_field", default="label")
    p.add_argument("--report", help="also write the counts as JSON here")
    p.set_defaults(func=cmd_merge)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``cli.py al``; returns 0 or 2 (bad input)."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DataError, OpsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
