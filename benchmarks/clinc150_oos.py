"""Benchmark: out-of-scope rejection on CLINC150 with max-softmax confidence, with and without temperature scaling.

1. Fit MiniLM on the 150 in-scope intents (``python cli.py fit --config configs/bench/clinc150_minilm.yaml``;
   skipped when the run directory already holds a finished fit, unless ``--refit``).
2. Export the bundle (``python cli.py export``; dynamic INT8, parity gate on the in-scope validation file; the
   temperature is fitted there by NLL).
3. Score validation + oos_validation and test + oos_test with the bundle's INT8 model. The OOS score of a text is
   its max-softmax probability: uncalibrated (T = 1) and calibrated (the bundle's T).
4. Threshold, chosen on validation only: the confidence value ``t`` that maximises the mean of in-scope accuracy
   (a text counts as correct when its argmax is right *and* its confidence >= t) and OOS recall (oos texts with
   confidence < t), over all distinct validation confidences; i.e. balanced accuracy of accept/reject with
   in-scope correctness, on 3000 in-scope + 100 oos validation texts. Applied unchanged to test + oos_test.
   The bundle's own default threshold (95% coverage of in-scope validation) is reported too.

Metrics on test (4500 in-scope) + oos_test (1000): in-scope accuracy without rejection, in-scope accuracy with the
threshold (right and accepted), OOS recall, OOS AUROC (in-scope = positive class, score = max-softmax), ECE on
in-scope test. Writes ``benchmarks/results/clinc150_oos.json``::

    flock /tmp/fenlei_cpu.lock python benchmarks/clinc150_oos.py
    python benchmarks/clinc150_oos.py --smoke     # plumbing check: tiny test model, 3 texts per intent, 1 epoch

``--smoke`` fits the tiny random BERT of the tests on 3 train, 1 validation and 1 test text per intent and 20 OOS
texts per OOS split (one epoch, max_length 32), exports it with ``--force`` (a barely trained model fails the
parity gate) and writes ``benchmarks/results/smoke/<name>.json``; run and bundle under ``benchmarks/work/smoke/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import SMOKE_WORK, machine, results_dir, run_logged, smoke_data, smoke_encoder  # noqa: E402
from fenlei.calibration import expected_calibration_error, softmax  # noqa: E402
from fenlei.io import atomic_write_json  # noqa: E402
from fenlei.serving.predictor import BundlePredictor  # noqa: E402
from fenlei.training.run_dir import RunDir  # noqa: E402

PYTHON = sys.executable
PUBLISHED = "BERT (Larson et al. 2019, CLINC150 Full): in-scope accuracy 96-97%, OOS recall 40-59%; max-softmax AUROC about 0.94"


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random in-scope text > score of a random oos text), ties counted half (Mann-Whitney U)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def choose_threshold(conf_in: np.ndarray, correct_in: np.ndarray, conf_oos: np.ndarray) -> tuple[float, float]:
    """Threshold maximising (in-scope accuracy-with-rejection + OOS recall) / 2 over all distinct confidences."""
    candidates = np.unique(np.concatenate([conf_in, conf_oos, [np.nextafter(1.0, 2.0)]]))
    best_t, best = 0.0, -1.0
    for t in candidates:
        score = (np.mean(correct_in & (conf_in >= t)) + np.mean(conf_oos < t)) / 2
        if score > best:
            best_t, best = float(t), float(score)
    return best_t, best


def evaluate(probs_in: np.ndarray, y_in: np.ndarray, probs_oos: np.ndarray, threshold: float) -> dict[str, float]:
    conf_in, conf_oos = probs_in.max(1), probs_oos.max(1)
    correct = probs_in.argmax(1) == y_in
    return {
        "in_scope_accuracy": float(correct.mean()),
        "in_scope_accuracy_with_rejection": float(np.mean(correct & (conf_in >= threshold))),
        "in_scope_rejected": float(np.mean(conf_in < threshold)),
        "oos_recall": float(np.mean(conf_oos < threshold)),
        "oos_auroc": auroc(conf_in, conf_oos),
        "in_scope_ece": expected_calibration_error(probs_in, y_in),
        "threshold": threshold,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/bench/clinc150_minilm.yaml")
    p.add_argument("--run_dir", default="runs/clinc150_minilm")
    p.add_argument("--data_dir", default="../shared/data/clinc150")
    p.add_argument("--refit", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="clinc150_oos")
    p.add_argument("--seed", type=int, default=None, help="seed_everything of the fit (default: the config's)")
    p.add_argument("--work_dir", type=Path, default=None, help="logs and bundle (default: benchmarks/work/clinc150)")
    p.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/NAME.json)")
    p.add_argument("--smoke", action="store_true", help="plumbing check with the tiny test model (see above)")
    args = p.parse_args()
    work = REPO / "benchmarks" / "work" / "clinc150"
    fit_extra: list[str] = [] if args.seed is None else [f"--seed_everything={args.seed}"]
    export_extra: list[str] = []
    if args.smoke:
        work = SMOKE_WORK / "clinc150"
        if args.run_dir == p.get_default("run_dir"):
            args.run_dir = str(SMOKE_WORK / "runs" / "clinc150_minilm")
        args.data_dir = str(smoke_data("clinc150"))
        model = smoke_encoder()
        fit_extra += [f"--model.init_args.pretrained={model}", f"--data.init_args.data_dir={args.data_dir}",
                      "--trainer.max_epochs=1", "--data.init_args.max_length=32"]
        export_extra = ["--force"]
    if args.work_dir is not None:
        work = args.work_dir
    run_dir, data = Path(args.run_dir), Path(args.data_dir)
    timings: dict[str, float] = {}
    summary = RunDir(run_dir).read_summary() or {}
    if args.refit or not summary.get("finished"):
        timings["fit_s"] = run_logged([PYTHON, "cli.py", "fit", "--config", args.config, f"--trainer.default_root_dir={run_dir}",
                               "--wandb.mode=disabled", *fit_extra], work / "fit.log")
    bundle = work / "bundle"
    timings["export_s"] = run_logged([PYTHON, "cli.py", "export", "--ckpt_path", str(run_dir), "--out", str(bundle), "--overwrite",
                              "--threads", str(args.threads), *export_extra], work / "export.log")

    predictor = BundlePredictor(bundle, "int8", args.threads)
    names = predictor.label_names
    index = {n: i for i, n in enumerate(names)}
    splits = {s: read(data / f"{s}.jsonl") for s in ("validation", "oos_validation", "test", "oos_test")}
    logits = {s: predictor.predict_logits([r["text"] for r in rows], 32) for s, rows in splits.items()}
    y = {s: np.asarray([index[r["label"]] for r in splits[s]]) for s in ("validation", "test")}
    temperature = predictor.temperature
    calibration = json.loads((bundle / "calibration.json").read_text())["by_precision"]["int8"]

    results: dict[str, Any] = {}
    for variant, t in (("uncalibrated", 1.0), ("calibrated", temperature)):
        val_in, val_oos = softmax(logits["validation"], t), softmax(logits["oos_validation"], t)
        threshold, val_score = choose_threshold(val_in.max(1), val_in.argmax(1) == y["validation"], val_oos.max(1))
        test_in, test_oos = softmax(logits["test"], t), softmax(logits["oos_test"], t)
        results[variant] = {"temperature": t, "validation_balanced_score": val_score,
                            **evaluate(test_in, y["test"], test_oos, threshold)}
        print(f"{variant}: {results[variant]}", file=sys.stderr)
    bundle_t = float(calibration["threshold"]["value"])
    results["bundle_default_threshold"] = {
        "temperature": temperature, "chosen_by": calibration["threshold"].get("chosen_by"),
        **evaluate(softmax(logits["test"], temperature), y["test"], softmax(logits["oos_test"], temperature), bundle_t)}

    meta = json.loads((bundle / "metadata.json").read_text())
    out = {
        "benchmark": args.name,
        "command": "python benchmarks/clinc150_oos.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "machine": machine(), "smoke": args.smoke,
        "config": args.config, "seed": args.seed,
        "model": "tiny random BERT (smoke), dynamic INT8 bundle" if args.smoke else "packaged all-MiniLM-L6-v2, dynamic INT8 bundle",
        "n": {s: len(rows) for s, rows in splits.items()},
        "threshold_rule": "maximise (in-scope accuracy with rejection + OOS recall) / 2 on validation + oos_validation",
        "results": results, "published": PUBLISHED, "parity": meta["parity"]["engines"],
        "calibration_report": calibration["report"], "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    path = args.out or results_dir(args.smoke) / f"{args.name}.json"
    atomic_write_json(path, out)
    print(json.dumps(results, indent=1))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
