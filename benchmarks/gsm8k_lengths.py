"""Benchmark: every labelling scheme / module of issue 3 on gsm8k_lengths, judged by what it is for: the number.

For each ``configs/gsm8k/*.yaml`` (same encoder and budget): ``fit``, ``test`` on gsm8k's test split, and a transfer
``test`` of the same checkpoint on ``../shared/data/alpaca_eval_lengths/test.jsonl`` (the gsm8k-fitted bins
applied to alpaca targets). Runs one after another (each holds ``/tmp/fenlei_cpu.lock`` while it trains, so other
heavy jobs on the machine queue instead of sharing the two cores). Resumable: a config whose three steps are done
is skipped; ``--force`` reruns.

``--seeds`` (default: the configs' own 42) fits every config once per seed (``--seed_everything``), all configs of
the first seed before the second, so a cut-short benchmark holds whole seeds. Each run's figures are the mean over
its finished seeds, with ``"per_seed"`` (every seed's figures) and ``"spread"`` (max - min of each figure).

Writes ``benchmarks/results/gsm8k_lengths.json`` as ``{"runs": [{"name", "accuracy", "macro_f1", "min_bin_f1",
"mae_bins", "qwk", "target_mae", "constant_mae", "train_s", ..., "transfer_alpaca": {...}, "seeds", "per_seed",
"spread"}]}`` and re-renders BENCHMARKS.md::

    python benchmarks/gsm8k_lengths.py                      # all configs, about an hour on a quiet 2-core CPU
    python benchmarks/gsm8k_lengths.py --only quantile_ce regression_mse
    python benchmarks/gsm8k_lengths.py --seeds 1 2 3        # the study with its spread, about 3x as long
    python benchmarks/gsm8k_lengths.py --smoke              # plumbing check, two configs, a few minutes

``--smoke``: the tiny random BERT of the tests, ``quantile_ce`` and ``regression_mse`` only (unless ``--only``), 120
train / 40 test / 40 transfer rows, one epoch, max_length 32; results in ``benchmarks/results/smoke/`` and the
runs under ``benchmarks/work/smoke/gsm8k``, BENCHMARKS.md left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import LOCK_HELD_ENV, SMOKE_WORK, machine, results_dir, run_logged, smoke_encoder  # noqa: E402
from fenlei.io import atomic_write_json  # noqa: E402
from fenlei.training.run_dir import RunDir  # noqa: E402

CONFIGS = REPO / "configs" / "gsm8k"
WORK = REPO / "benchmarks" / "work" / "gsm8k"
RESULT = REPO / "benchmarks" / "results" / "gsm8k_lengths.json"
ALPACA = "../shared/data/alpaca_eval_lengths/test.jsonl"
LOCK = Path("/tmp/fenlei_cpu.lock")
PYTHON = sys.executable
# Run order (results are written after every config, so a cut-short benchmark keeps the most telling ones).
RUN_FIRST = ["quantile_ce", "regression_mse", "equal_width_ce", "kmeans_features_outliers", "manual_weighted_ce",
             "bin_index_regression", "coral_manual", "kmeans_features", "regression_huber_log", "markers_quantile",
             "corn_manual", "mlp_head_frozen", "two_stage_quantile"]


@contextlib.contextmanager
def cpu_lock():
    if os.environ.get(LOCK_HELD_ENV):  # run_all.py's caller holds the lock for the whole run
        yield
        return
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(cmd: list[str], log: Path) -> float:
    """:func:`run_logged` under the shared CPU lock (one heavy job at a time on this machine)."""
    with cpu_lock():
        return run_logged(cmd, log)


def test_metrics(directory: Path) -> dict[str, float]:
    raw = json.loads(RunDir(directory).test_metrics.read_text())
    return {k.removeprefix("test/"): v for k, v in raw.items() if k.startswith("test/")}


def subset(source: Path, target: Path, rows: int | None, seed: int) -> Path:
    """A seeded random subset of a JSONL file (all of it when ``rows`` is None), written under benchmarks/work."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if rows is not None and rows < len(lines):
        keep = sorted(random.Random(seed).sample(range(len(lines)), rows))
        lines = [lines[i] for i in keep]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def budget_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    overrides = [f"--data.init_args.data_dir={WORK / 'data'}", f"--trainer.max_epochs={args.epochs}",
                 f"--data.init_args.max_length={args.max_length}", f"--seed_everything={seed}"]
    if args.freeze_layers is not None:
        overrides.append(f"--model.init_args.freeze_layers={args.freeze_layers}")
    if args.smoke:
        model = smoke_encoder()
        overrides += [f"--model.init_args.pretrained={model}", f"--data.init_args.tokenizer={model}"]
    return overrides


def seed_dir(seed: int) -> Path:
    return WORK / f"seed{seed}"


def one_config(config: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    force = args.force
    name = config.stem
    run_dir = seed_dir(seed) / name
    transfer_dir = run_dir / "transfer_alpaca"
    base = [f"--trainer.default_root_dir={run_dir}", "--wandb.mode=disabled", *budget_overrides(args, seed)]
    if force or not RunDir(run_dir).is_finished():
        print(f"[{name}] fit", flush=True)
        run([PYTHON, "cli.py", "fit", "--config", str(config), *base], run_dir.parent / f"{name}.fit.log")
        atomic_write_json(run_dir.parent / f"{name}.machine.json", machine())  # seeds may be fitted on other days
    summary = json.loads(RunDir(run_dir).summary.read_text())
    if force or not RunDir(run_dir).test_metrics.is_file():
        print(f"[{name}] test", flush=True)
        run([PYTHON, "cli.py", "test", "--config", str(config), *base, "--ckpt_path=best"], run_dir.parent / f"{name}.test.log")
    if force or not RunDir(transfer_dir).test_metrics.is_file():
        print(f"[{name}] transfer test on alpaca_eval_lengths", flush=True)
        run([PYTHON, "cli.py", "test", "--config", str(config), f"--trainer.default_root_dir={transfer_dir}",
             "--wandb.mode=disabled", *budget_overrides(args, seed), f"--data.init_args.test_file={WORK / 'alpaca_test.jsonl'}",
             f"--data.init_args.binning_file={RunDir(run_dir).binning}",
             f"--ckpt_path={summary['best_checkpoint']}"], run_dir.parent / f"{name}.transfer.log")
    binning = json.loads(RunDir(run_dir).binning.read_text())
    report = binning["train_report"]
    metrics = test_metrics(run_dir)
    model = yaml.safe_load(config.read_text())["model"]
    resolved = yaml.safe_load(RunDir(run_dir).config.read_text())
    machine_file = run_dir.parent / f"{name}.machine.json"
    return {
        "name": name,
        "seed": seed,
        "machine": json.loads(machine_file.read_text()) if machine_file.is_file() else None,
        "description": config.read_text().splitlines()[1].lstrip("# ").strip(),
        "module": model["class_path"].rsplit(".", 1)[-1],
        "scheme": report["scheme"],
        "num_bins": report["num_bins"],
        "train_bin_sizes": report["bin_sizes"],
        "balance": report["balance"],
        "silhouette": report["silhouette"],
        "outliers_removed": binning.get("outliers_removed", 0),
        "accuracy": metrics["acc"],
        "macro_f1": metrics["f1_macro"],
        "min_bin_f1": metrics["min_bin_f1"],
        "mae_bins": metrics["mae_bins"],
        "qwk": metrics["qwk"],
        "target_mae": metrics["target_mae"],
        "constant_mae": metrics["constant_mae"],
        "target_mae_vs_constant": metrics["target_mae"] / metrics["constant_mae"],
        "target_spearman": metrics["target_spearman"],
        "train_s": summary["train_seconds"],
        "precision": resolved["trainer"]["precision"],
        "best_epoch_score": summary["best_score"],
        "transfer_alpaca": test_metrics(transfer_dir),
    }


# Figures averaged over seeds (and given a spread); the rest of a run (labelling, module) is the same for every seed.
SEEDED = ("accuracy", "macro_f1", "min_bin_f1", "mae_bins", "qwk", "target_mae", "target_mae_vs_constant",
          "target_spearman", "train_s", "best_epoch_score")
TRANSFER_SEEDED = ("acc", "f1_macro", "target_mae", "qwk")


def over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One run from its seeds' runs: the mean of each seeded figure, ``spread`` (max - min), ``per_seed`` kept."""
    per_seed = sorted(per_seed, key=lambda r: r["seed"])
    run = {k: v for k, v in per_seed[0].items() if k not in ("seed", "machine", "transfer_alpaca")}
    run["seeds"] = [r["seed"] for r in per_seed]
    spread: dict[str, float] = {}
    for key in SEEDED:
        values = [r[key] for r in per_seed if r.get(key) is not None]
        if values:
            run[key] = statistics.fmean(values)
            spread[key] = max(values) - min(values)
    transfer = dict(per_seed[0]["transfer_alpaca"])
    for key in TRANSFER_SEEDED:
        values = [r["transfer_alpaca"][key] for r in per_seed if r["transfer_alpaca"].get(key) is not None]
        if values:
            transfer[key] = statistics.fmean(values)
            spread[f"transfer_{key}"] = max(values) - min(values)
    run["transfer_alpaca"] = transfer
    run["spread"] = spread
    run["per_seed"] = [{"seed": r["seed"], "machine": r.get("machine"), **{k: r.get(k) for k in SEEDED},
                        "transfer_alpaca": {k: r["transfer_alpaca"].get(k) for k in TRANSFER_SEEDED}} for r in per_seed]
    return run


def reproducing_command(argv: list[str], seeds: list[int]) -> str:
    """The command line with ``--seeds`` naming every seed in the figures: seeds read back from earlier invocations
    count in the means, so the invocation that ran last alone would not reproduce them."""
    kept, skipping = [], False
    for arg in argv:
        if arg == "--seeds":
            skipping = True
            continue
        if skipping and arg.isdigit():
            continue
        skipping = False
        kept.append(arg)
    return " ".join(["python", "benchmarks/gsm8k_lengths.py", *kept, "--seeds", *map(str, seeds)])


def recorded_seeds(budget: dict[str, Any], stems: set[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """Per-seed runs read back from ``RESULT`` when it was written at ``budget``: each ``per_seed`` entry with the
    run's unseeded fields (labelling, module), so ``over_seeds`` can average it with new seeds."""
    if not RESULT.is_file():
        return {}
    recorded = json.loads(RESULT.read_text())
    if recorded.get("budget") != budget:
        return {}
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for run in recorded.get("runs", []):
        if run["name"] not in stems:
            continue
        fixed = {k: v for k, v in run.items() if k not in ("seeds", "per_seed", "spread", *SEEDED)}
        for entry in run.get("per_seed", []):
            transfer = {**run["transfer_alpaca"], **entry["transfer_alpaca"]}
            found.setdefault(run["name"], {})[entry["seed"]] = {**fixed, **entry, "transfer_alpaca": transfer}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="config stems to run (default: all in configs/gsm8k)")
    parser.add_argument("--force", action="store_true", help="rerun steps that already finished")
    parser.add_argument("--train_rows", type=int, default=None, help="seeded subset of gsm8k train (default: all)")
    parser.add_argument("--test_rows", type=int, default=None, help="seeded subset of gsm8k test (default: all)")
    parser.add_argument("--transfer_rows", type=int, default=None, help="seeded subset of alpaca_eval (default: all)")
    parser.add_argument("--epochs", type=int, default=2, help="overrides trainer.max_epochs of every config")
    parser.add_argument("--max_length", type=int, default=128, help="overrides data.init_args.max_length")
    parser.add_argument("--freeze_layers", type=int, default=None,
                        help="overrides model.init_args.freeze_layers of every config (a cheaper budget on slow CPUs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42],
                        help="seed_everything of each fit (default: the configs' own 42); figures are means over seeds")
    parser.add_argument("--smoke", action="store_true", help="plumbing check with the tiny test model (see above)")
    args = parser.parse_args()
    global WORK, RESULT
    if args.smoke:
        WORK, RESULT = SMOKE_WORK / "gsm8k", results_dir(True) / "gsm8k_lengths.json"
        args.only = args.only or ["quantile_ce", "regression_mse"]
        args.train_rows, args.test_rows, args.transfer_rows = args.train_rows or 120, args.test_rows or 40, args.transfer_rows or 40
        args.epochs, args.max_length = 1, 32
    budget = {"encoder": "tiny random BERT (smoke)" if args.smoke else "packaged:minilm", "epochs": args.epochs,
              "batch_size": 32, "max_length": args.max_length, "freeze_layers": args.freeze_layers,
              "train_rows": args.train_rows or "all", "test_rows": args.test_rows or "all",
              "transfer_rows": args.transfer_rows or "all"}
    # Finished runs are reused only at the budget they were trained with (the work folder records it).
    budget_file = WORK / "budget.json"
    if WORK.is_dir() and (not budget_file.is_file() or json.loads(budget_file.read_text()) != budget):
        print(f"{WORK} holds runs of another budget: removed, every config is rerun", flush=True)
        shutil.rmtree(WORK)  # removed before the new budget is recorded, so a killed run cannot mix the two
    atomic_write_json(budget_file, budget)
    source = REPO / "../shared/data/gsm8k_lengths"
    subset(source / "train.jsonl", WORK / "data" / "train.jsonl", args.train_rows, seed=1)
    subset(source / "test.jsonl", WORK / "data" / "test.jsonl", args.test_rows, seed=2)
    subset(REPO / ALPACA, WORK / "alpaca_test.jsonl", args.transfer_rows, seed=3)
    configs = sorted(CONFIGS.glob("*.yaml"), key=lambda c: (RUN_FIRST.index(c.stem) if c.stem in RUN_FIRST else 99, c.stem))
    if args.only:
        configs = [c for c in configs if c.stem in set(args.only)]
    # Every run finished under WORK at this budget counts (WORK is emptied when the budget changes), so seeds of an
    # earlier invocation stay in the figures; reading them back trains nothing.
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    keep = argparse.Namespace(**{**vars(args), "force": False})
    for config in configs:
        for folder in sorted(WORK.glob(f"seed*/{config.stem}")):
            seed = int(folder.parent.name.removeprefix("seed"))
            if seed not in args.seeds and RunDir(folder / "transfer_alpaca").test_metrics.is_file():
                per_seed.setdefault(config.stem, {})[seed] = one_config(config, keep, seed)
    # Seeds kept only in the results file (their work folders gone with a machine) count too, at the same budget.
    for stem, seeds in recorded_seeds(budget, {c.stem for c in configs}).items():
        for seed, run in seeds.items():
            if seed not in args.seeds:
                per_seed.setdefault(stem, {}).setdefault(seed, run)
    skipped = {}
    todo = [(seed, config) for seed in args.seeds for config in configs]
    for seed, config in todo:
        if "StagedUnfreezing" in config.read_text() and args.epochs < 2:
            skipped[config.stem] = f"needs >= 2 epochs (stage 1 + stage 2); this budget has {args.epochs}"
            continue
        per_seed.setdefault(config.stem, {})[seed] = one_config(config, args, seed)
        runs = [over_seeds(list(seeds.values())) for seeds in per_seed.values()]
        result = {
            "benchmark": "gsm8k_lengths",
            "date": dt.date.today().isoformat(),
            "machine": machine(),
            "smoke": args.smoke,
            "data": {"train_test": "../shared/data/gsm8k_lengths (label = answer words)", "transfer": ALPACA},
            "command": reproducing_command(sys.argv[1:], sorted({seed for r in runs for seed in r["seeds"]})),
            "budget": budget,
            "skipped": skipped,
            "seeds": sorted({seed for r in runs for seed in r["seeds"]}),
            "runs": sorted(runs, key=lambda r: r["target_mae"]),
        }
        atomic_write_json(RESULT, result)  # after every config: a killed benchmark keeps what it measured
    if not args.smoke:
        subprocess.run([PYTHON, "benchmarks/render.py"], cwd=REPO, check=False)


if __name__ == "__main__":
    main()
