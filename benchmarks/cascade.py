"""The probe-first cascade (issue 15, item 3) against each of its routes alone: a saved probe, then LoRA generative
label scoring for the texts under the probe's threshold, ``uncertain`` under the reviewer's, on Endava tickets or
online_shopping_10_cats (``fenlei.probe.cascade``).

    flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/cascade.py --dataset endava \\
        --probe_dir runs/probe/endava --reviewer runs/gen/endava --test_file benchmarks/work/decoder_endava/data/test.jsonl
    flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/cascade.py --dataset online_shopping        # trains both
    .venv/bin/python benchmarks/cascade.py --smoke                                      # plumbing check only

Without ``--probe_dir`` / ``--reviewer`` the script makes them on the subset ``benchmarks/decoder_classifiers.py``
draws (``--train_size``/``--test_size``, seeded, stratified): ``fenlei probe --run_dir`` on the first label field,
and a LoRA generative classifier over every field, fitted for ``--epochs`` and saved as a run directory
(``config.yaml`` + ``checkpoints/best.ckpt``), both under ``benchmarks/work/cascade_<dataset>/``.

Measured on the test file, all on one loaded pair (the LM shared when the probe is the reviewer's base model):

- ``probe_alone``: the probe on every text, ``uncertain`` under ``--probe_threshold``; accuracy on answered texts,
  coverage, and accuracy at full coverage (no abstention); texts/s;
- ``reviewer_alone``: label scoring on every text, ``uncertain`` under ``--reviewer_threshold``; the same per field;
- ``cascade``: ``Cascade.answer`` end to end (probe features, head, label scoring of what is routed) with the
  command's summary: per field coverage, accuracy on answered texts and per route, the share routed, the texts that
  went through the LM, texts/s. Once with ``fields=all`` (every field: a multi-field reviewer then runs on every
  text) and once with ``fields=first`` (the probe's field: only routed texts reach the LM);
- ``sweep``: the first field's cascade accuracy, coverage and share routed at each ``--sweep`` probe threshold,
  computed from the two routes' outputs above (no timing);
- ``shared_features_max_abs_diff``: where the LM is shared, the probe's features on 8 texts from the reviewer's base
  model (LoRA off) against the probe's own load of its model (0 up to float rounding, else sharing is not exact).

``--smoke``: the tiny random decoder of the tests, at most 40 train and 16 test texts cut to 16 tokens, 2 epochs;
results in ``benchmarks/results/smoke/cascade.json``. Otherwise ``benchmarks/results/cascade.json`` (or ``--out``:
``benchmarks/run_all.py`` writes ``cascade_endava.json`` and ``cascade_online_shopping.json``); each dataset is its
own entry (``datasets.<name>``), the file written atomically. Every route's figures carry ``top_prediction_share``
(the most frequent answer's share: above 0.9 the route is collapsed and BENCHMARKS.md says so).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import SMOKE_WORK, machine, positive_int, results_dir, smoke_decoder  # noqa: E402
from benchmarks.decoder_classifiers import DATASETS, write_subset  # noqa: E402
from fenlei.predictions import top_answer_share  # noqa: E402

WORK = ROOT / "benchmarks" / "work"
GENERATIVE = "lightning_modules.generative_classifier.GenerativeClassifier"
PROMPT_DATA = "datamodules.prompt_classification.PromptClassificationDataModule"


def threshold(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return number


def make_probe(model: str, data_dir: Path, out: Path, args: argparse.Namespace) -> Path:
    import contextlib
    import io

    from fenlei.probe.run import probe

    with contextlib.redirect_stdout(io.StringIO()):
        probe(model=model, data_dir=str(data_dir), val_file=None, label_field="label", layer=args.probe_layer,
              pooling="mean", max_length=args.max_length, head=["logreg"], class_weight="balanced", batch_size=8,
              run_dir=str(out), quiet=True)
    return out


def make_reviewer(model: str, data_dir: Path, run_dir: Path, args: argparse.Namespace) -> Path:
    """A LoRA generative classifier over every field, saved as a run directory ``load_run`` reads."""
    import lightning.pytorch as pl
    import yaml

    from datamodules.prompt_classification import PromptClassificationDataModule
    from fenlei.io import atomic_write_text
    from lightning_modules.generative_classifier import GenerativeClassifier

    preset = DATASETS[args.dataset]
    data_args = {"tokenizer": model, "data_dir": str(data_dir), "val_file": None, "label_fields": preset["fields"],
                 "field_names": preset["names"], "max_length": args.max_length, "batch_size": args.batch_size}
    dm = PromptClassificationDataModule(**data_args)
    module = GenerativeClassifier(pretrained=model, num_classes=dm.num_classes, label_names=dm.label_names,
                                  lr=args.lr, warmup=0.1, val_decoding=["score"])
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=None)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, default_root_dir=str(run_dir),
                         callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    config = {"model": {"class_path": GENERATIVE, "init_args": {"pretrained": model}},
              "data": {"class_path": PROMPT_DATA, "init_args": data_args}}
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, allow_unicode=True))
    return run_dir


def route_figures(labels: list[str], scores: list[float], truth: list[str] | None, limit: float) -> dict[str, Any]:
    """Accuracy on answered texts, coverage and accuracy at full coverage of one route on one field."""
    n = len(labels)
    answered = [i for i in range(n) if scores[i] >= limit]
    out: dict[str, Any] = {"threshold": limit, "coverage": round(len(answered) / n, 6) if n else None,
                           "top_prediction_share": top_answer_share(labels)}
    if truth is not None:
        out["accuracy"] = round(sum(labels[i] == truth[i] for i in answered) / len(answered), 6) if answered else None
        out["accuracy_full_coverage"] = round(sum(a == b for a, b in zip(labels, truth, strict=True)) / n, 6) if n else None
    return out


def measure(probe_dir: Path, reviewer: Path, test_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from fenlei.probe.cascade import Timer, load_cascade, summarise
    from fenlei.probe.cascade_command import read_input

    with Timer() as load:
        cascade, shared = load_cascade(probe_dir, str(reviewer), args.probe_threshold, args.reviewer_threshold, "all",
                                       args.eval_batch_size, "cpu", args.threads)
    probe_texts, reviewer_texts, gold, _ = read_input(test_file, cascade, ())
    names = cascade.reviewer.field_names
    out: dict[str, Any] = {"test_file": str(test_file), "texts": len(probe_texts), "shared_model": shared,
                           "load_seconds": round(load.seconds, 2), "probe_threshold": cascade.probe_threshold,
                           "reviewer_threshold": cascade.reviewer_threshold, "fields": names}
    if shared:  # exactness of the shared LM on this model: the probe's features from its own load, on a few texts
        from fenlei.probe.predictor import ProbePredictor

        alone = ProbePredictor(probe_dir, device="cpu").features(probe_texts[:8])
        out["shared_features_max_abs_diff"] = float(abs(cascade.predictor.features(probe_texts[:8]) - alone).max())
        del alone
    # Warm-up: the first call pays one-off costs (allocations, the shared prompt prefix) that either route would.
    cascade.answer(probe_texts[:2], reviewer_texts[:2])
    with Timer() as t:
        probs = cascade.predictor.predict_proba(probe_texts)
    probe_labels = [cascade.predictor.label_names[i] for i in probs.argmax(1)]
    probe_conf = probs.max(1).tolist()
    out["probe_alone"] = {names[0]: route_figures(probe_labels, probe_conf, gold.get(names[0]), cascade.probe_threshold),
                          "texts_per_s": round(len(probe_texts) / t.seconds, 3)}
    with Timer() as t:
        choice, field_probs = cascade.reviewer.score(reviewer_texts, args.eval_batch_size)
    reviewer_labels = [[cascade.reviewer.field_labels[k][c] for c in choice[:, k]] for k in range(len(names))]
    reviewer_conf = [field_probs[k][np.arange(len(choice)), choice[:, k]].tolist() for k in range(len(names))]
    out["reviewer_alone"] = {**{name: route_figures(reviewer_labels[k], reviewer_conf[k], gold.get(name),
                                                    cascade.reviewer_threshold) for k, name in enumerate(names)},
                             "texts_per_s": round(len(reviewer_texts) / t.seconds, 3)}
    for mode in ("all", "first"):
        cascade.fields = mode
        before = cascade.reviewer.texts_scored
        with Timer() as t:
            records = cascade.answer(probe_texts, reviewer_texts)
        summary = summarise(records, gold, t.seconds, cascade.reviewer.texts_scored - before, {"fields_mode": mode})
        for name, entry in summary["fields"].items():  # the collapse check of the routes, on the answered texts
            entry["top_prediction_share"] = top_answer_share([r.fields[name]["label"] for r in records
                                                              if not r.fields[name]["uncertain"]])
        out[f"cascade_{mode}"] = summary
    truth = gold.get(names[0])
    sweep = []
    for limit in args.sweep:
        routed = [c < limit for c in probe_conf]
        labels = [reviewer_labels[0][i] if r else probe_labels[i] for i, r in enumerate(routed)]
        scores = [reviewer_conf[0][i] if r else 1.0 for i, r in enumerate(routed)]
        row = {"probe_threshold": limit, "share_routed": round(sum(routed) / len(routed), 6) if routed else None,
               **route_figures(labels, scores, truth, cascade.reviewer_threshold)}
        row["reviewer_threshold"] = row.pop("threshold")
        sweep.append(row)
    out["sweep"] = sweep
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="endava")
    p.add_argument("--probe_dir", default=None, help="a saved probe (fenlei probe --run_dir); default: fit one")
    p.add_argument("--reviewer", default=None, help="a generative classifier run directory; default: fit one")
    p.add_argument("--test_file", default=None, help="default: the subset's test file")
    p.add_argument("--model", default=None, help="for the probe and reviewer made here (default packaged:gemma3-270m; "
                   "--smoke: the tiny test decoder)")
    p.add_argument("--probe_threshold", type=threshold, default=0.8)
    p.add_argument("--reviewer_threshold", type=threshold, default=0.5)
    p.add_argument("--sweep", type=threshold, nargs="+", default=[0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0])
    p.add_argument("--train_size", type=int, default=600)
    p.add_argument("--test_size", type=int, default=300)
    p.add_argument("--max_length", type=int, default=64, help="text tokens kept per text")
    p.add_argument("--probe_layer", type=float, default=0.5)
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--eval_batch_size", type=positive_int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=None, help="results file (default benchmarks/results/cascade.json)")
    p.add_argument("--smoke", action="store_true", help="plumbing check: tiny decoder and subset, results in "
                   "benchmarks/results/smoke/")
    args = p.parse_args()
    if args.smoke:
        args.model = args.model or str(smoke_decoder())
        args.train_size, args.test_size = min(args.train_size, 40), min(args.test_size, 16)
        args.max_length, args.epochs, args.lr = min(args.max_length, 16), 2, 1e-2
    args.model = args.model or "packaged:gemma3-270m"
    out = Path(args.out or results_dir(args.smoke) / "cascade.json")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lightning.pytorch as pl
    import torch

    from fenlei.io import atomic_write_text

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed)
    work = (SMOKE_WORK if args.smoke else WORK) / f"cascade_{args.dataset}"
    data_dir = work / "data"
    subset = write_subset(DATASETS[args.dataset]["data"], data_dir, args.train_size, args.test_size, args.seed)
    made: dict[str, Any] = {}
    start = time.perf_counter()
    probe_dir = Path(args.probe_dir) if args.probe_dir else make_probe(args.model, data_dir, work / "probe", args)
    reviewer = Path(args.reviewer) if args.reviewer else make_reviewer(args.model, data_dir, work / "reviewer", args)
    if not (args.probe_dir and args.reviewer):
        made = {"model": args.model, "subset": subset, "seconds": round(time.perf_counter() - start, 1)}
    figures = measure(probe_dir, reviewer, Path(args.test_file) if args.test_file else data_dir / "test.jsonl", args)
    result = json.loads(out.read_text()) if out.is_file() else {}
    result.setdefault("datasets", {})[args.dataset] = {
        "command": "flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/cascade.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "smoke": args.smoke,
        "probe_dir": str(probe_dir), "reviewer": str(reviewer), "made_here": made or None, **figures}
    result["benchmark"] = out.stem  # the file's own name: run_all gives each dataset its own file
    atomic_write_text(out, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    entry = result["datasets"][args.dataset]
    print(json.dumps({k: entry[k] for k in ("probe_alone", "reviewer_alone", "cascade_all", "cascade_first")},
                     indent=1, ensure_ascii=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
