"""Run a W&B sweep file locally, without a W&B server: ``python cli.py sweep FILE --count N [-- EXTRA ARGS]``.

Grid (cartesian, in file order) and random search (seeded: the same ``--seed`` gives the same trials); ``bayes``
falls back to random with a warning. Every trial is ``cli.py fit`` with the command's base arguments, the
arguments after ``--`` (e.g. a debug preset), the trial's ``--key=value`` parameters and its own run directory::

    runs/sweeps/<sweep name>/trial-003-<hash of the parameters>/   (run directory + trial.json)
    runs/sweeps/<sweep name>/results.{csv,md}                       (sorted by the metric, rewritten after each trial)

Resumable: a trial whose run directory holds ``run_summary.json`` is skipped, so rerunning the same command after
an interruption only runs what is missing (same parameters -> same directory).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

from fenlei.ops.runs import OpsError, override_args, params_hash, read_metric, run_trial, sort_by_metric, write_tables
from fenlei.ops.sweep_config import SweepSpec, load_sweep, plan_trials


def trial_dir(root: Path, index: int, params: dict[str, Any]) -> Path:
    return root / f"trial-{index:03d}-{params_hash(params)}"


def trial_args(spec: SweepSpec, params: dict[str, Any], run_dir: Path, extra_args: Optional[list[str]],
               wandb_mode: Optional[str]) -> list[str]:
    """Base arguments, W&B mode, pass-through arguments, the trial's parameters, its run directory (later wins)."""
    mode = [f"--wandb.mode={wandb_mode}"] if wandb_mode else []
    return [*spec.base_args, *mode, *(extra_args or []), *override_args(params), f"--trainer.default_root_dir={run_dir}"]


def results_rows(spec: SweepSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        run_dir = Path(record["run_dir"])
        value = read_metric(run_dir, spec.metric) if record.get("status") in ("finished", "skipped") else None
        rows.append({"trial": run_dir.name, "status": record.get("status"), spec.metric: value,
                     **record["params"], "seconds": record.get("seconds"), "run_dir": str(run_dir)})
    return sort_by_metric(rows, spec.metric, spec.goal)


def run_sweep(spec: SweepSpec, count: Optional[int], out: Optional[Path] = None, seed: int = 0,
              extra_args: Optional[list[str]] = None, subprocess_mode: bool = False,
              wandb_mode: Optional[str] = "offline") -> list[dict[str, Any]]:
    """Run (or resume) the planned trials; returns the result rows, best first."""
    root = out or Path("runs") / "sweeps" / spec.name
    trials = plan_trials(spec, count, seed)
    records: list[dict[str, Any]] = []
    columns = ["trial", "status", spec.metric, *spec.parameters, "seconds", "run_dir"]
    for index, params in enumerate(trials):
        run_dir = trial_dir(root, index, params)
        args = trial_args(spec, params, run_dir, extra_args, wandb_mode)
        record = {"sweep": spec.name, "index": index, "params": params, "run_dir": str(run_dir)}
        print(f"sweep {spec.name}: trial {index + 1}/{len(trials)} {params}", file=sys.stderr)
        records.append(run_trial(run_dir, record, [args], with_test=False, subprocess_mode=subprocess_mode))
        # After every trial, so an interrupted sweep still leaves a current table.
        write_tables(root, "results", results_rows(spec, records), columns,
                     title=f"Sweep {spec.name}: {spec.metric} ({spec.goal}), method {spec.method}")
    rows = results_rows(spec, records)
    done = sum(r["status"] == "finished" for r in rows)
    skipped = sum(r["status"] == "skipped" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    print(f"sweep {spec.name}: {done} run, {skipped} already finished (skipped), {failed} failed -> "
          f"{root / 'results.md'}", file=sys.stderr)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cli.py sweep",
        description="Run a W&B sweep file locally (no W&B server): grid or seeded random search, one run directory "
                    "per trial, resumable, results table sorted by the sweep metric. Arguments after -- go to every "
                    "trial (e.g. -- --config configs/debug/limit_batches.yaml).",
    )
    parser.add_argument("file", help="sweep YAML (W&B format), e.g. configs/sweeps/quickstart_lr.yaml")
    parser.add_argument("--count", type=int, help="number of trials (random: required unless run_cap is set; "
                                                  "grid: first N grid points, default all)")
    parser.add_argument("--out", type=Path, help="sweep folder (default runs/sweeps/<sweep name>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search (default 0)")
    parser.add_argument("--method", choices=["grid", "random", "bayes"], help="override the file's method")
    parser.add_argument("--subprocess", action="store_true",
                        help="run each trial in its own Python process (slower start, fully isolated)")
    parser.add_argument("--wandb_mode", choices=["offline", "online", "disabled"], default="offline",
                        help="W&B mode of the trials (default offline: the sweep files' commands ask for online "
                             "logging, which `wandb agent` needs; arguments after -- still override this)")
    parser.add_argument("--dry_run", action="store_true", help="print the trials' commands and exit")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``cli.py sweep``; returns 0, 1 (some trial failed) or 2 (bad sweep file or arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.count is not None and args.count < 1:
        print("error: --count must be at least 1", file=sys.stderr)
        return 2
    try:
        spec = load_sweep(args.file, method_override=args.method)
        if args.dry_run:
            trials = plan_trials(spec, args.count, args.seed)
            root = args.out or Path("runs") / "sweeps" / spec.name
            for index, params in enumerate(trials):
                run_dir = trial_dir(root, index, params)
                print(shlex.join(["python", "cli.py", *trial_args(spec, params, run_dir, extra, args.wandb_mode)]))
            return 0
        rows = run_sweep(spec, args.count, args.out, args.seed, extra, args.subprocess, args.wandb_mode)
    except OpsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
