"""Run a W&B sweep file locally, without a W&B server: ``fenlei sweep FILE --count N [-- EXTRA ARGS]``.

Grid (cartesian, in file order) and random search (seeded: the same ``--seed`` gives the same trials) are plans
fixed in advance. ``bayes`` (TPE), and random search with ``early_terminate`` (hyperband), search through an Optuna
study instead (:mod:`fenlei.ops.study`). Every trial is ``fit`` with the command's base arguments, the arguments
after ``--`` (e.g. a debug preset), the trial's ``--key=value`` parameters and its own run directory::

    runs/sweeps/<sweep name>/trial-003-<hash of the parameters>/   (run directory + trial.json)
    runs/sweeps/<sweep name>/results.{csv,md}                       (sorted by the metric, rewritten after each trial)
    runs/sweeps/<sweep name>/optuna.db                              (the study of a search)

Before the first trial, every parameter name is looked up in the ``fit`` parser (:mod:`fenlei.ops.param_check`).
Resumable: a planned trial whose run directory holds ``run_summary.json`` is skipped, so rerunning the same command
after an interruption only runs what is missing (same parameters -> same directory); a search resumes its study.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Literal, Optional

from fenlei.errors import exit_status_of
from fenlei.ops.runs import OpsError, override_args, read_metric, run_trial, sort_by_metric, write_tables
from fenlei.ops.sweep_config import SweepSpec, load_sweep, plan_trials, trial_cap, trial_dir

__all__ = ["main", "run_sweep", "sweep", "trial_args", "trial_dir"]


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


def check_names(spec: SweepSpec, extra_args: Optional[list[str]], wandb_mode: Optional[str]) -> None:
    """Every parameter name must be an argument of ``fit`` under the trials' configs (one parse, nothing built)."""
    from fenlei.ops.param_check import check_parameter_names

    base = trial_args(spec, {}, Path("runs/unused"), extra_args, wandb_mode)
    check_parameter_names(str(spec.path), list(spec.parameters), [a for a in base if "default_root_dir" not in a])


def run_sweep(spec: SweepSpec, count: Optional[int], out: Optional[Path] = None, seed: int = 0,
              extra_args: Optional[list[str]] = None, subprocess_mode: bool = False,
              wandb_mode: Optional[str] = "offline", check: bool = True) -> list[dict[str, Any]]:
    """Run (or resume) the trials; returns the result rows, best first. A search runs every trial as a child
    process (its metric is watched while it trains), whatever ``subprocess_mode`` says."""
    root = out or Path("runs") / "sweeps" / spec.name
    if spec.searches:
        from fenlei.ops.study import run_study

        if trial_cap(spec, count) is None:
            raise OpsError(f"{spec.path}: method {spec.method} needs --count (or run_cap in the file)")
        if check:
            check_names(spec, extra_args, wandb_mode)
        return run_study(spec, count, root, seed,
                         lambda params, run_dir: trial_args(spec, params, run_dir, extra_args, wandb_mode))
    trials = plan_trials(spec, count, seed)
    if spec.early_terminate is not None:
        print(f"sweep {spec.name}: early_terminate is ignored by grid search (every grid point runs to the end)",
              file=sys.stderr)
    if check:
        check_names(spec, extra_args, wandb_mode)
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


def print_commands(spec: SweepSpec, count: Optional[int], root: Path, seed: int, extra_args: list[str],
                   wandb_mode: Optional[str]) -> None:
    """The trials' command lines, one a line, without running them (a search: the command every trial extends)."""
    if spec.searches:
        print(f"sweep {spec.name}: method {spec.method} picks each trial's parameters from the results so far; every "
              f"trial runs this command plus its {', '.join(f'--{p}=...' for p in spec.parameters)}", file=sys.stderr)
        print(shlex.join(["python", "cli.py", *trial_args(spec, {}, root / "trial-NNN-HASH", extra_args, wandb_mode)]))
        return
    for index, params in enumerate(plan_trials(spec, count, seed)):
        run_dir = trial_dir(root, index, params)
        print(shlex.join(["python", "cli.py", *trial_args(spec, params, run_dir, extra_args, wandb_mode)]))


def sweep(file: str, *, count: Optional[int] = None, out: Optional[str] = None, seed: int = 0,
          method: Optional[Literal["grid", "random", "bayes"]] = None, subprocess: bool = False,
          wandb_mode: Literal["offline", "online", "disabled"] = "offline", dry_run: bool = False,
          extra_args: Optional[list[str]] = None) -> int:
    """Run a W&B sweep file locally; returns 0, or 1 when some trial failed.

    Args:
        file: sweep YAML (W&B format), e.g. configs/sweeps/quickstart_lr.yaml
        count: number of trials (random, bayes: required unless run_cap is set; grid: first N grid points, default
            all). A search counts finished, pruned and failed trials, of all its runners
        out: sweep folder (default runs/sweeps/<sweep name>)
        seed: seed of the random search, or of the Optuna samplers (trial n: a seed from this and n)
        method: override the file's method
        subprocess: run each trial in its own Python process (slower start, fully isolated); the trials of a
            search (bayes, or random with early_terminate) always are
        wandb_mode: W&B mode of the trials (offline: the sweep files' commands ask for online logging, which
            `wandb agent` needs; extra arguments still override this)
        dry_run: print the trials' commands and exit
        extra_args: arguments for every trial, also everything after -- (e.g. -- --config
            configs/debug/limit_batches.yaml)
    """
    if count is not None and count < 1:
        raise OpsError("--count must be at least 1")
    spec = load_sweep(file, method_override=method)
    extra = list(extra_args or [])
    if dry_run:
        print_commands(spec, count, Path(out) if out else Path("runs") / "sweeps" / spec.name, seed, extra, wandb_mode)
        return 0
    rows = run_sweep(spec, count, Path(out) if out else None, seed, extra, subprocess, wandb_mode)
    return 1 if any(r["status"] == "failed" for r in rows) else 0


DESCRIPTION = ("Run a W&B sweep file locally (no W&B server): grid or seeded random search, or an Optuna search for "
               "method bayes (TPE) and for early_terminate (hyperband pruning); one run directory per trial, "
               "resumable, results table sorted by the sweep metric. Arguments after -- go to every trial "
               "(fenlei sweep FILE --count N -- --config configs/debug/limit_batches.yaml).")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei sweep``; returns 0 or 1 (some trial failed), raises OpsError on a bad sweep file."""
    from fenlei.typed_cli import run_typed

    return run_typed(sweep, sys.argv[1:] if argv is None else argv, prog="fenlei sweep", positional=True,
                     rest="extra_args", description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
