"""Bayesian search with hyperband pruning against random search, same trial count and seed, on the quickstart.

    flock /tmp/fenlei_cpu.lock python benchmarks/sweep_search.py --count 8 --seed 0

Two sweeps of ``--count`` trials each through ``fenlei sweep``, both with every trial a child process and W&B off:

- ``bayes+hyperband``: ``configs/sweeps/quickstart_bayes.yaml`` as shipped (Optuna's TPE; hyperband with
  min_iter 2, eta 3, max_iter 6 as Optuna's HyperbandPruner, fed the validation macro-F1 after every epoch);
- ``random``: the same file with ``method: random`` and no ``early_terminate`` (fenlei's planned random search,
  ``--subprocess``): every trial runs the quickstart's 6 epochs.

Recorded: the best ``val/f1_macro_best`` of each sweep, each sweep's wall time, the epochs each trial ran, and what
pruning saved: the epochs not run, and those epochs times the mean epoch time measured in the random sweep's
finished fits (``fit_seconds / epochs`` of their run_summary.json, start-up excluded). Writes
``benchmarks/results/sweep_search.json`` and ``.md`` (``--smoke``: the tiny random encoder and the debug preset that cuts every
epoch to a few batches, results in ``benchmarks/results/smoke/``; ``benchmarks/run_all.py`` runs it as step ``sweep_search``). Not
resumable by design: each run starts both sweeps afresh in ``benchmarks/work/[smoke/]sweep_search/`` so the wall
times are whole sweeps.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import SMOKE_WORK, positive_int, results_dir, run_logged, smoke_encoder  # noqa: E402
from fenlei.cpu import cpu_record  # noqa: E402
from fenlei.io import atomic_write_json, atomic_write_text  # noqa: E402

SWEEP = REPO / "configs" / "sweeps" / "quickstart_bayes.yaml"
METRIC = "val/f1_macro_best"


def random_twin(sweep: Path, out: Path) -> Path:
    """The same search space as plain random search: method random, no early termination."""
    raw = yaml.safe_load(sweep.read_text())
    raw.pop("early_terminate", None)
    raw["method"], raw["name"] = "random", f"{raw['name']}_random"
    path = out / "random_sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_arm(name: str, sweep: Path, out: Path, args: argparse.Namespace, subprocess_flag: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "fenlei", "sweep", str(sweep), "--count", str(args.count), "--seed", str(args.seed),
           "--out", str(out / name), "--wandb_mode", "disabled", *(["--subprocess"] if subprocess_flag else [])]
    if args.smoke:  # the tiny random encoder of the tests, a few batches per epoch
        cmd += ["--", "--config", "configs/debug/limit_batches.yaml", f"--model.init_args.pretrained={smoke_encoder()}"]
    wall = run_logged(cmd, out / f"{name}.log")
    rows = list(csv.DictReader((out / name / "results.csv").open()))
    trials = []
    for row in rows:
        run_dir = Path(row["run_dir"])
        record = json.loads((run_dir / "trial.json").read_text())
        summary_path = run_dir / "run_summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        epochs = record.get("epochs")
        if epochs is None and summary is not None:
            epochs = summary["epochs"]
        trials.append({
            "trial": row["trial"], "status": row["status"],
            "value": float(row[METRIC]) if row.get(METRIC) else None,
            "value_at_stop": (record.get("values") or [None])[-1] if row["status"] == "pruned" else None,
            "epochs": int(epochs) if epochs is not None else None,
            "params": record["params"], "trial_seconds": record.get("seconds"),
            "fit_seconds": summary.get("fit_seconds") if summary else None,
        })
    values = [t["value"] for t in trials if t["value"] is not None]
    return {"sweep": str(sweep.relative_to(REPO)) if sweep.is_relative_to(REPO) else str(sweep), "command": cmd,
            "wall_seconds": round(wall, 1), "best": max(values) if values else None,
            "statuses": {s: sum(t["status"] == s for t in trials) for s in sorted({t["status"] for t in trials})},
            "epochs_run": sum(t["epochs"] or 0 for t in trials), "trials": trials}


def summarise(bayes: dict[str, Any], rand: dict[str, Any], max_epochs: int, count: int) -> dict[str, Any]:
    per_epoch = [t["fit_seconds"] / t["epochs"] for t in rand["trials"] if t["fit_seconds"] and t["epochs"]]
    epoch_seconds = statistics.mean(per_epoch) if per_epoch else None
    not_run = count * max_epochs - bayes["epochs_run"]
    delta = None if bayes["best"] is None or rand["best"] is None else bayes["best"] - rand["best"]
    return {
        "best_bayes_hyperband": bayes["best"], "best_random": rand["best"],
        "best_delta_points": None if delta is None else round(100 * delta, 2),
        "bayes_beats_random": None if delta is None else delta > 0,
        "epochs_planned": count * max_epochs, "epochs_run_bayes": bayes["epochs_run"], "epochs_not_run": not_run,
        "mean_epoch_seconds": None if epoch_seconds is None else round(epoch_seconds, 2),
        "pruning_saved_seconds_estimate": None if epoch_seconds is None else round(not_run * epoch_seconds, 1),
        "wall_bayes_seconds": bayes["wall_seconds"], "wall_random_seconds": rand["wall_seconds"],
        "wall_saved_seconds": round(rand["wall_seconds"] - bayes["wall_seconds"], 1),
        "wall_ratio_bayes_over_random": round(bayes["wall_seconds"] / rand["wall_seconds"], 3),
    }


def markdown(result: dict[str, Any]) -> str:
    """The note beside the figures in BENCHMARKS.md (benchmarks/render.py renders the tables from the JSON)."""
    return (
        f"**Method.** Two sweeps of {result['count']} trials each over the same space (lr, head_lr, label_smoothing) "
        f"with seed {result['seed']}, through `fenlei sweep`, every trial a child process, W&B off: "
        "`configs/sweeps/quickstart_bayes.yaml` as shipped (Optuna's TPE, hyperband pruning with min_iter 2, eta 3, "
        "max_iter 6, fed the validation macro-F1 after every epoch) against the same file with `method: random` and "
        f"no `early_terminate`, where every trial runs the quickstart's {result['max_epochs']} epochs. What pruning "
        "saved is counted twice: epochs not run times the mean epoch time of the random sweep's finished fits "
        "(start-up excluded), and the two sweeps' wall times (start-up of every trial included). Command: "
        f"`{result['command']}` ({result['date']}, under the CPU lock).\n\n"
        "**Caveats.** One seed and a handful of trials: the best-F1 difference between the sweeps is of the size of "
        "the spread between the trials of one sweep (trials table), so it says nothing about which search finds the "
        "better model; the epochs and wall time pruning saves are the measured part.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=positive_int, default=8, help="trials per sweep (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both sweeps (default 0)")
    parser.add_argument("--sweep", type=Path, default=SWEEP, help="the bayes sweep file (default: the quickstart's)")
    parser.add_argument("--smoke", action="store_true", help="a few batches per epoch; results in benchmarks/results/smoke")
    args = parser.parse_args()
    name = "sweep_search"
    out = (SMOKE_WORK if args.smoke else REPO / "benchmarks" / "work") / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.time()
    arms = {"bayes+hyperband": run_arm("bayes", args.sweep, out, args, subprocess_flag=False),
            "random": run_arm("random", random_twin(args.sweep, out), out, args, subprocess_flag=True)}
    # Every random trial runs to the end: its epoch count is the planned length of a trial.
    max_epochs = max(t["epochs"] or 0 for t in arms["random"]["trials"])
    result = {
        "benchmark": name, "smoke": args.smoke, "date": dt.date.today().isoformat(),
        "command": " ".join(["python", "benchmarks/sweep_search.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpu": cpu_record()},
        "count": args.count, "seed": args.seed, "max_epochs": max_epochs,
        "total_seconds": round(time.time() - started, 1), "arms": arms,
        "summary": summarise(arms["bayes+hyperband"], arms["random"], max_epochs, args.count),
    }
    results = results_dir(args.smoke)
    atomic_write_json(results / f"{name}.json", result)
    atomic_write_text(results / f"{name}.md", markdown(result))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
