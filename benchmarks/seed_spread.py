"""Benchmark: the spread over seeds of the fine-tuning accuracy claims (Banking77 MiniLM and MPNet, CLINC150 OOS).

Each suite fits its benchmark config once per seed (``--seed_everything N``; everything else as the config sets it)
and reads the test figures back:

- ``banking77_minilm``, ``banking77_mpnet``: ``fenlei fit`` then ``fenlei test --ckpt_path best`` with
  ``configs/bench/banking77_{minilm,mpnet}.yaml``: test accuracy and macro-F1.
- ``clinc150_oos``: ``benchmarks/clinc150_oos.py --seed N`` (MiniLM fitted on the in-scope intents, the dynamic INT8
  bundle, max-softmax rejection): in-scope accuracy, OOS recall and in-scope accuracy with rejection at the
  calibrated threshold tuned on validation, the OOS AUROC, and the same at the bundle's own threshold.

Per figure: mean, sample standard deviation, min and max over the seeds. A target counts as met only when the mean
meets it (Banking77 MiniLM: test accuracy >= 93.5%, the target of ``benchmarks/banking77.py``). Two suites' means
are called different only when the gap exceeds the larger of their two seed ranges (max - min), the test every
"A beats B" of BENCHMARKS.md uses.

Resumable: a seed whose folder holds its test figures is read back, not refitted; a killed fit resumes from its
``last.ckpt``. ``benchmarks/results/seed_spread.json`` is rewritten after every seed (the CPU of each seed is kept
with it), then BENCHMARKS.md is re-rendered::

    flock /tmp/fenlei_cpu.lock python benchmarks/seed_spread.py                     # every suite, seeds 1 2 3
    flock /tmp/fenlei_cpu.lock python benchmarks/seed_spread.py --suites banking77_minilm --seeds 1 2 3
    python benchmarks/seed_spread.py --smoke                                        # plumbing check, about a minute

``--smoke``: the tiny random BERT of the tests on the smoke data subsets, one epoch, seeds 1 and 2; results in
``benchmarks/results/smoke/seed_spread.json``, work under ``benchmarks/work/smoke/seed_spread``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    SMOKE_WORK,
    beyond_seed_range,
    fit_then_test,
    machine,
    over_seeds_stats,
    results_dir,
    run_logged,
    smoke_data,
    smoke_encoder,
)
from fenlei.io import atomic_write_json  # noqa: E402

PYTHON = sys.executable
WORK = REPO / "benchmarks" / "work" / "seed_spread"


@dataclass(frozen=True)
class Suite:
    config: str
    kind: str  # "fit_test" or "clinc150_oos"
    title: str
    smoke_data: str  # name in benchmarks.common.SMOKE_SUBSETS
    minutes_per_seed: float  # full budget, measured on the AMX Xeon of 2026-12-03 (bf16 where the config asks)
    target: tuple[str, float] | None = None  # (figure, lower bound on its mean)


SUITES: dict[str, Suite] = {
    "banking77_minilm": Suite("configs/bench/banking77_minilm.yaml", "fit_test", "Banking77, MiniLM", "banking77", 3.6,
                              ("accuracy", 0.935)),
    "banking77_mpnet": Suite("configs/bench/banking77_mpnet.yaml", "fit_test", "Banking77, MPNet-base", "banking77", 8.6),
    "clinc150_oos": Suite("configs/bench/clinc150_minilm.yaml", "clinc150_oos", "CLINC150 OOS, MiniLM INT8 bundle",
                          "clinc150", 4),
}


def smoke_overrides(suite: Suite) -> list[str]:
    model = smoke_encoder()
    return [f"--model.init_args.pretrained={model}", f"--data.init_args.tokenizer={model}",
            f"--data.init_args.data_dir={smoke_data(suite.smoke_data)}", "--trainer.max_epochs=1",
            "--data.init_args.max_length=32", "--trainer.precision=32-true"]


def fit_test_seed(suite: Suite, folder: Path, seed: int, smoke: bool) -> dict[str, Any]:
    """``fenlei fit`` (resumed from last.ckpt after a kill) and ``fenlei test`` of the best checkpoint."""
    from fenlei.training.run_dir import RunDir

    run = folder / "run"
    fit_then_test(run, ["--config", suite.config, f"--seed_everything={seed}", f"--trainer.default_root_dir={run}",
                        "--trainer.enable_progress_bar=false", "--wandb.mode=disabled",
                        *(smoke_overrides(suite) if smoke else [])])
    rd = RunDir(run)
    metrics = json.loads(rd.test_metrics.read_text())
    summary = rd.read_summary() or {}
    return {"accuracy": metrics["test/acc"], "f1_macro": metrics["test/f1_macro"], "test_examples": metrics.get("n_examples"),
            "train_samples_per_s": summary.get("train_samples_per_s"), "fit_seconds": summary.get("fit_seconds"),
            "precision": summary.get("precision")}


def clinc150_seed(suite: Suite, folder: Path, seed: int, smoke: bool) -> dict[str, Any]:
    """One ``benchmarks/clinc150_oos.py`` run at ``seed``, its results file kept in the seed's folder."""
    from fenlei.training.run_dir import RunDir

    out = folder / "clinc150_oos.json"
    if not out.is_file():
        cmd = [PYTHON, "benchmarks/clinc150_oos.py", "--config", suite.config, "--run_dir", str(folder / "run"),
               "--seed", str(seed), "--work_dir", str(folder), "--out", str(out), "--name", f"clinc150_oos_seed{seed}"]
        run_logged(cmd + (["--smoke"] if smoke else []), folder / "clinc150_oos.log")
    res = json.loads(out.read_text())
    tuned, own = res["results"]["calibrated"], res["results"]["bundle_default_threshold"]
    return {"in_scope_accuracy": tuned["in_scope_accuracy"], "oos_auroc": tuned["oos_auroc"],
            "oos_recall": tuned["oos_recall"], "in_scope_accuracy_with_rejection": tuned["in_scope_accuracy_with_rejection"],
            "bundle_threshold_oos_recall": own["oos_recall"],
            "bundle_threshold_in_scope_accuracy_with_rejection": own["in_scope_accuracy_with_rejection"],
            "temperature": tuned["temperature"], "precision": (RunDir(folder / "run").read_summary() or {}).get("precision")}


RUNNERS: dict[str, Callable[[Suite, Path, int, bool], dict[str, Any]]] = {"fit_test": fit_test_seed,
                                                                          "clinc150_oos": clinc150_seed}
NOT_FIGURES = {"precision", "test_examples", "machine", "seed"}


def summarise(per_seed: list[dict[str, Any]], suite: Suite) -> dict[str, Any]:
    """Mean, std, min, max of every numeric figure over the seeds; the target judged on the mean."""
    figures = [k for k, v in per_seed[0].items() if k not in NOT_FIGURES and isinstance(v, (int, float))]
    out: dict[str, Any] = {"seeds": [r["seed"] for r in per_seed], "per_seed": per_seed,
                           "stats": {k: over_seeds_stats([float(r[k]) for r in per_seed if r.get(k) is not None]) for k in figures}}
    if suite.target:
        figure, bound = suite.target
        mean = out["stats"][figure]["mean"]
        out["target"] = {"figure": figure, "mean_ge": bound, "mean": mean, "met": mean >= bound,
                         "seeds_meeting": sum(r[figure] >= bound for r in per_seed)}
    return out


def differs(a: dict[str, Any], b: dict[str, Any], figure: str) -> dict[str, Any] | None:
    """Whether two suites' means of ``figure`` differ by more than the larger of their seed ranges."""
    sa, sb = a["stats"].get(figure), b["stats"].get(figure)
    if not sa or not sb:
        return None
    gap = sb["mean"] - sa["mean"]
    return {"figure": figure, "gap": gap, "larger_seed_range": max(sa["spread"], sb["spread"]),
            "beyond_spread": beyond_seed_range(gap, [sa["spread"], sb["spread"]], [sa["n"], sb["n"]])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suites", nargs="+", choices=sorted(SUITES), default=list(SUITES))
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 1 2 3 (smoke: 1 2)")
    p.add_argument("--smoke", action="store_true", help="plumbing check with the tiny test model (see above)")
    args = p.parse_args()
    seeds = args.seeds or ([1, 2] if args.smoke else [1, 2, 3])
    work = SMOKE_WORK / "seed_spread" if args.smoke else WORK
    path = results_dir(args.smoke) / "seed_spread.json"
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as err:
        raise SystemExit(f"seed_spread: {path}: not valid JSON ({err}); move it aside to start the seeds over") from None
    suites: dict[str, Any] = dict(old.get("suites", {}))
    for name in args.suites:
        suite = SUITES[name]
        kept = {r["seed"]: r for r in suites.get(name, {}).get("per_seed", [])}
        for seed in seeds:
            folder = work / name / f"seed{seed}"
            if seed not in kept:  # a recorded seed is kept as it is, with the CPU it ran on
                print(f"seed_spread: {name} seed {seed}", file=sys.stderr)
                kept[seed] = {"seed": seed, **RUNNERS[suite.kind](suite, folder, seed, args.smoke), "machine": machine()}
            suites[name] = {"title": suite.title, "config": suite.config, **summarise(sorted(kept.values(), key=lambda r: r["seed"]), suite)}
            comparisons = {}
            if "banking77_minilm" in suites and "banking77_mpnet" in suites:
                comparisons["banking77_mpnet_vs_minilm_accuracy"] = differs(suites["banking77_minilm"], suites["banking77_mpnet"], "accuracy")
            atomic_write_json(path, {
                "benchmark": "seed_spread", "date": dt.date.today().isoformat(), "machine": machine(), "smoke": args.smoke,
                "command": "python benchmarks/seed_spread.py" + (" --smoke" if args.smoke else ""),
                "difference_test": "a gap between two means counts only when it exceeds the larger of the two seed ranges (max - min)",
                "suites": suites, "comparisons": comparisons})
    if not args.smoke:
        rerender()


def rerender() -> None:
    subprocess.run([PYTHON, "benchmarks/render.py"], cwd=REPO, check=False)


if __name__ == "__main__":
    main()
