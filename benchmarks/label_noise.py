"""Benchmark: how well ``fenlei data noise`` finds wrong training labels, and what dropping or relabelling them buys.

    flock /tmp/fenlei_cpu.lock python benchmarks/label_noise.py                 # detection (about 15 min, CPU)
    flock /tmp/fenlei_cpu.lock python benchmarks/label_noise.py --retrain       # + the e5 retrain cells (hours)
    python benchmarks/label_noise.py --smoke                                    # plumbing check, seconds

Two measurements (issue 17, "Suspect labels"):

(a) **Injected noise, known truth.** Banking77's train file with ``--rate`` (10%) of its rows given another label,
    drawn uniformly from the other 76 (seeded; one file per ``--noise_seeds`` seed, under
    ``benchmarks/work/label_noise/banking77/seed<N>/``). ``fenlei data noise`` runs on each; precision and recall of
    the flagged rows against the flipped ones, the precision of the first |flipped| rows of the ranking, and how
    often a correctly flagged row's suggested label is its original one. The clean file is run too: what it flags
    there is the detector's false-positive floor plus the source's own label errors (they cannot be told apart).
(b) **DataCLUE TNEWS** (10,000 train titles with noisy labels by design, a clean 2,000-title test): flagged rows and
    out-of-fold accuracy, and the two derived training sets for a retrain, each in a data folder that ``fenlei fit``
    reads (``--data.init_args.data_dir``): ``benchmarks/work/label_noise/tnews/{dropped,relabelled}/train.jsonl``
    beside links to the shared validation and test files (validation is left noisy, as in the baseline).
    As a cheap proxy, the same TF-IDF + logistic regression trained on each train set is scored on the clean test.

``--retrain`` (with ``--skip_detection``: reuse the detection figures and derived files of an earlier run): the
encoder question proper, e5-small with ``configs/zh/e5_<recipe>.yaml`` (``--recipe``, default ``ce``: a
chinese_encoders recipe, 4 epochs) on each derived set for each ``--seeds`` seed, through
``benchmarks/chinese_encoders.py``'s own fit-and-test; the noisy-as-given baseline is that benchmark's ``tnews``
``e5/<recipe>/seed<N>`` cells (the same config, seeds and clean test), read from
``benchmarks/results/chinese_encoders.json``. Each recipe has its own table. Cells are kept in the results file
and never rerun; a detection rerun that changes a derived file drops the cells trained on the old one.

Writes ``benchmarks/results/label_noise.json`` atomically (``--smoke``: the smoke subsets, 3 folds,
``benchmarks/results/smoke/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import chinese_encoders  # noqa: E402
from benchmarks.common import SHARED_DATA, SMOKE_WORK, machine, positive_int, results_dir, smoke_data  # noqa: E402
from fenlei.io import atomic_write_json, atomic_write_text, file_sha256  # noqa: E402

WORK = REPO / "benchmarks" / "work" / "label_noise"
VARIANTS = ("dropped", "relabelled")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def flip_labels(rows: list[dict[str, Any]], rate: float, seed: int) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """A copy of ``rows`` with ``round(rate * N)`` of them (seeded) given another label, uniform over the others;
    returns the rows and {1-based line: original label} of the flipped ones."""
    rng = random.Random(seed)
    names = sorted({str(r["label"]) for r in rows})
    chosen = rng.sample(range(len(rows)), round(rate * len(rows)))
    out = [dict(r) for r in rows]
    truth = {}
    for i in sorted(chosen):
        original = str(out[i]["label"])
        out[i]["label"] = rng.choice([n for n in names if n != original])
        truth[i + 1] = original
    return out, truth


def run_noise(train: Path, out: Path, folds: int, write_clean: Path | None = None) -> dict[str, Any]:
    """``fenlei data noise`` in this process (the command's own entry point and argument parsing)."""
    from fenlei.data import tools

    argv = ["noise", "--train", str(train), "--out", str(out), "--folds", str(folds)]
    if write_clean is not None:
        argv += ["--write_clean", str(write_clean)]
    assert tools.main(argv) == 0
    return json.loads((out / "summary.json").read_text())


def detection_scores(review: list[dict[str, Any]], truth: dict[int, str]) -> dict[str, Any]:
    """Precision and recall of the flagged rows against the flipped ones (by line), and more."""
    flagged = [row["al"]["train_line"] for row in review]
    hits = [line for line in flagged if line in truth]
    top = flagged[: len(truth)]
    suggestion_right = sum(row["al"]["suggested_label"] == truth[row["al"]["train_line"]] for row in review
                           if row["al"]["train_line"] in truth)
    precision = len(hits) / len(flagged) if flagged else None
    recall = len(hits) / len(truth) if truth else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {"flipped": len(truth), "flagged": len(flagged), "true_positives": len(hits),
            "precision": round(precision, 4) if precision is not None else None,
            "recall": round(recall, 4) if recall is not None else None, "f1": round(f1, 4),
            "precision_at_flipped": round(sum(line in truth for line in top) / len(truth), 4) if truth else None,
            "suggested_is_original": round(suggestion_right / len(hits), 4) if hits else None}


def injected(train: Path, rate: float, seeds: list[int], folds: int, work: Path) -> dict[str, Any]:
    rows = read_jsonl(train)
    clean_dir = work / "clean"
    clean = run_noise(train, clean_dir, folds)
    runs = []
    for seed in seeds:
        folder = work / f"seed{seed}"
        noisy, truth = flip_labels(rows, rate, seed)
        write_jsonl(folder / "train_noisy.jsonl", noisy)
        atomic_write_json(folder / "flipped.json", {str(k): v for k, v in truth.items()})
        summary = run_noise(folder / "train_noisy.jsonl", folder / "noise", folds)
        scores = detection_scores(read_jsonl(folder / "noise" / "review.jsonl"), truth)
        runs.append({"seed": seed, **scores, "oof_accuracy": summary["oof_accuracy"], "seconds": summary["seconds"]})
        print(f"label_noise: banking77 seed {seed}: precision {scores['precision']}, recall "
              f"{scores['recall']}", file=sys.stderr)
    keys = ("precision", "recall", "f1", "precision_at_flipped", "suggested_is_original", "oof_accuracy")
    return {"train": str(train), "rows": len(rows), "classes": clean["classes"], "rate": rate, "folds": folds,
            "clean": {"flagged": clean["flagged"], "flagged_share": clean["flagged_share"],
                      "oof_accuracy": clean["oof_accuracy"], "seconds": clean["seconds"]},
            "runs": runs,
            "mean": {k: round(statistics.fmean(r[k] for r in runs), 4) for k in keys
                     if all(r[k] is not None for r in runs)},
            "range": {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in keys
                      if all(r[k] is not None for r in runs)}}


def proxy_f1(train_rows: list[dict[str, Any]], test_rows: list[dict[str, Any]]) -> dict[str, float]:
    """The detector's own model (TF-IDF character 1-5-grams + logistic regression) trained on ``train_rows``, scored
    on ``test_rows``: a seconds-cheap hint of what the cleaning does, not the encoder result."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from fenlei.data import noise as label_noise

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=label_noise.NGRAM_RANGE, min_df=label_noise.MIN_DF,
                                 sublinear_tf=True)
    x = vectorizer.fit_transform([r["text"] for r in train_rows])
    model = LogisticRegression(C=label_noise.C, max_iter=label_noise.MAX_ITER).fit(
        x, [str(r["label"]) for r in train_rows])
    truth = [str(r["label"]) for r in test_rows]
    pred = model.predict(vectorizer.transform([r["text"] for r in test_rows]))
    return {"accuracy": round(float(accuracy_score(truth, pred)), 4),
            "f1_macro": round(float(f1_score(truth, pred, average="macro", labels=sorted(set(truth)))), 4)}


def data_folder(folder: Path, train: Path, source: Path) -> None:
    """``folder/train.jsonl`` (a copy of ``train``) and links to ``source``'s validation and test files."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "train.jsonl", train.read_text(encoding="utf-8"))
    for name in ("validation.jsonl", "test.jsonl"):
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((source / name).resolve())


def tnews(source: Path, folds: int, work: Path) -> dict[str, Any]:
    summary = run_noise(source / "train.jsonl", work, folds, write_clean=work)
    for variant in VARIANTS:
        data_folder(work / variant, work / f"train_{variant}.jsonl", source)
    test = read_jsonl(source / "test.jsonl")
    proxies = {"noisy": proxy_f1(read_jsonl(source / "train.jsonl"), test)}
    for variant in VARIANTS:
        proxies[variant] = proxy_f1(read_jsonl(work / variant / "train.jsonl"), test)
    hashes = {variant: file_sha256(work / variant / "train.jsonl") for variant in VARIANTS}
    per_class = summary["per_class"]
    return {"train": str(source / "train.jsonl"), "rows": summary["rows"], "classes": summary["classes"],
            "folds": folds, "flagged": summary["flagged"], "flagged_share": summary["flagged_share"],
            "oof_accuracy": summary["oof_accuracy"], "seconds": summary["seconds"], "per_class": per_class,
            "fields_following_label": summary.get("fields_following_label"),
            "derived": {variant: {"data_dir": str((work / variant).relative_to(REPO)),
                                  "train_rows": len(read_jsonl(work / variant / "train.jsonl")),
                                  "sha256": hashes[variant]} for variant in VARIANTS},
            "review": str((work / "review.jsonl").relative_to(REPO)),
            "proxy_tfidf_logreg_test": proxies}


# ---------------------------------------------------------------------------------------------------- retrain


def retrain_cells(result: dict[str, Any], old: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Finished cells of the old results file whose derived file is unchanged, plus (``--retrain``) new ones."""
    derived = result["tnews"]["derived"]
    cells = {}
    for key, cell in (old.get("retrain") or {}).get("cells", {}).items():
        variant = key.split("/")[0]
        if variant in derived and cell.get("train_sha256") == derived[variant]["sha256"]:
            cells[key] = cell
        else:
            print(f"label_noise: dropped retrain cell {key}: its train file has changed", file=sys.stderr)
    if args.retrain:
        options = argparse.Namespace(extra=list(args.extra), threads=2, latency_texts=20 if args.smoke else 200)
        configs = [f"configs/zh/e5_{args.recipe}.yaml"]
        for variant in VARIANTS:
            for seed in args.seeds:
                key = f"{variant}/e5/{args.recipe}/seed{seed}"
                if key in cells:
                    continue
                overrides = [f"--seed_everything={seed}"] + (
                    [f"--model.init_args.pretrained={chinese_encoders.smoke_encoder()}"] if args.smoke else [])
                cell_dir = args.work / "tnews" / "retrain" / variant / args.recipe / f"seed{seed}"
                started = time.perf_counter()
                cell = chinese_encoders.fit_and_test(cell_dir, REPO / derived[variant]["data_dir"], configs, overrides,
                                                     options)
                cells[key] = {**cell, "train_sha256": derived[variant]["sha256"], "date": dt.date.today().isoformat(),
                              "wall_seconds": round(time.perf_counter() - started, 1)}
                result["retrain"] = retrain_summary(cells, args.smoke)
                atomic_write_json(args.out, result)  # after every cell: a killed run keeps what finished
    return retrain_summary(cells, args.smoke)


def baseline_cells(smoke: bool, recipes: set[str]) -> dict[str, Any]:
    """The noisy-as-given e5/<recipe> cells of benchmarks/chinese_encoders.py (same config, seeds and test)."""
    path = results_dir(smoke) / "chinese_encoders.json"
    try:
        cells = json.loads(path.read_text())["cells"]["tnews"]
    except (OSError, ValueError, KeyError):
        return {}
    return {f"noisy/{k}": v for k, v in cells.items() if k.startswith("e5/") and k.split("/")[1] in recipes}


def retrain_summary(cells: dict[str, Any], smoke: bool = False) -> dict[str, Any]:
    """Per recipe retrained (keys ``<variant>/e5/<recipe>/seed<N>``), the macro-F1 of each train set over seeds,
    the noisy one read from chinese_encoders.json."""
    recipes = {key.split("/")[2] for key in cells}
    everything = {**baseline_cells(smoke, recipes), **cells}
    tables: dict[str, dict[str, Any]] = {}
    for recipe in sorted(recipes):
        table = tables.setdefault(recipe, {})
        for variant in ("noisy", *VARIANTS):
            runs = {k.rsplit("/", 1)[-1]: v for k, v in everything.items() if k.startswith(f"{variant}/e5/{recipe}/")}
            if runs:
                f1 = [runs[seed]["f1_macro"] for seed in sorted(runs)]
                table[variant] = {"seeds": sorted(runs), "f1_macro": [round(x, 4) for x in f1],
                                  "f1_macro_mean": round(statistics.fmean(f1), 4),
                                  "f1_macro_range": [round(min(f1), 4), round(max(f1), 4)],
                                  "accuracy_mean": round(statistics.fmean(v["accuracy"] for v in runs.values()), 4)}
    return {"configs": {r: f"configs/zh/e5_{r}.yaml" for r in sorted(recipes)},
            "baseline": "benchmarks/results/chinese_encoders.json tnews e5/<recipe>/seed<N>", "cells": cells,
            "tables": tables}


def reusable_detection(old: dict[str, Any]) -> dict[str, Any]:
    """The detection part of the results file, for ``--skip_detection``: only while the derived TNEWS train files
    it names are still there, unchanged (a retrain must train on the files the figures describe)."""
    if "tnews" not in old:
        raise SystemExit("label_noise: --skip_detection needs a results file with the detection in it; run without it")
    for derived in old["tnews"]["derived"].values():
        train = REPO / derived["data_dir"] / "train.jsonl"
        if not train.is_file() or file_sha256(train) != derived["sha256"]:
            raise SystemExit(f"label_noise: --skip_detection: {train} is missing or changed since the detection; "
                             "run without --skip_detection")
    return {k: v for k, v in old.items() if k != "retrain"}


def smoke_subset(path: Path, per_class: int = 10) -> Path:
    """The first ``per_class`` rows of each banking77 class (the shared smoke subset has 4, too few for 3 folds once
    10% of the labels are flipped)."""
    kept: dict[str, int] = {}
    rows = []
    for row in read_jsonl(SHARED_DATA / "banking77" / "train.jsonl"):
        if kept.setdefault(str(row["label"]), 0) < per_class:
            kept[str(row["label"])] += 1
            rows.append(row)
    write_jsonl(path, rows)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=0.1, help="share of banking77 train labels flipped")
    p.add_argument("--noise_seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--folds", type=positive_int, default=5)
    p.add_argument("--retrain", action="store_true", help="also fit e5 on the derived TNEWS sets (hours)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds of the retrain cells")
    p.add_argument("--recipe", default="ce", choices=chinese_encoders.RECIPES, help="configs/zh/e5_<recipe>.yaml of the retrain cells (a chinese_encoders "
                   "recipe, whose noisy cells are the baseline)")
    p.add_argument("--skip_detection", action="store_true",
                   help="keep the detection figures of the results file (its derived TNEWS files must be unchanged)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="passed to every retrain fit/test")
    p.add_argument("--smoke", action="store_true", help="plumbing check on the smoke subsets (see above)")
    args = p.parse_args(argv)
    if args.smoke:
        args.folds, args.noise_seeds = 3, args.noise_seeds[:1]
        args.work = SMOKE_WORK / "label_noise"
        banking77, tnews_source = smoke_subset(args.work / "banking77_train.jsonl"), smoke_data("tnews")
    else:
        banking77, tnews_source, args.work = SHARED_DATA / "banking77" / "train.jsonl", SHARED_DATA / "tnews_dataclue", WORK
    args.out = results_dir(args.smoke) / "label_noise.json"
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.skip_detection:
        result = reusable_detection(old)
    else:
        started = time.perf_counter()
        result = {
            "benchmark": "label_noise", "command": " ".join(["python benchmarks/label_noise.py", *(argv or sys.argv[1:])]),
            "date": dt.date.today().isoformat(), "machine": machine(), "smoke": args.smoke,
            "detector": "fenlei data noise: TF-IDF character 1-5-grams + logistic regression, out-of-fold, then "
                        "cleanlab.filter.find_label_issues (prune_by_noise_rate, ranked by self-confidence)",
            "banking77": injected(banking77, args.rate, args.noise_seeds, args.folds, args.work / "banking77"),
            "tnews": tnews(tnews_source, args.folds, args.work / "tnews"),
        }
        result["detection_wall_seconds"] = round(time.perf_counter() - started, 1)
    result["retrain"] = retrain_cells(result, old, args)
    result["retrain"] = retrain_summary(result["retrain"]["cells"], args.smoke)
    if args.retrain:
        result["retrain"]["last_command"] = " ".join(["python benchmarks/label_noise.py", *(argv or sys.argv[1:])])
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
