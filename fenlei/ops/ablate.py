"""Ablation studies: ``fenlei ablate SPEC.yaml [-- EXTRA ARGS]`` runs every variant with every seed and
writes a table (mean, std, n, delta vs the baseline) and a bar chart with error bars.

Spec::

    name: quickstart_loss                 # default: the file's stem
    base: [configs/quickstart.yaml]       # config file(s), merged left to right
    seeds: [1, 2, 3]                      # --seed_everything of each run
    metric: test/f1_macro                 # test/... runs `test --ckpt_path best` after fit; or val/f1_macro_best
    goal: maximize                        # only used to mark the best variant
    runs_dir: runs/ablations/quickstart_loss
    variants:                             # the first one is the baseline of the delta column
      ce_smooth_0.1: {}                                           # the base config as it is
      ce: {model.init_args.loss.init_args.label_smoothing: 0.0}   # dotted keys -> --key=value
      focal: [configs/focal_overrides.yaml]                       # or extra config files, stacked after base

Runs land in ``<runs_dir>/<variant>/seed-<seed>/`` and finished ones are skipped on a rerun (resumable). Outputs in
``runs_dir``: ``ablation.csv``, ``ablation.md``, ``ablation.png``, ``runs.csv`` (one row per run).
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fenlei.errors import exit_status_of
from fenlei.io import atomic_write_bytes
from fenlei.ops.runs import OpsError, load_yaml, override_args, read_metric, run_trial, write_tables
from fenlei.training.reporting import figure_png

SPEC_KEYS = {"name", "base", "seeds", "metric", "goal", "variants", "runs_dir", "test", "description"}


@dataclass
class AblationSpec:
    path: Path
    name: str
    base: list[str]
    seeds: list[int]
    metric: str
    goal: str
    variants: dict[str, list[str]]  # name -> extra CLI arguments
    runs_dir: Path
    test: bool


def _variant_args(name: str, value: Any, where: str) -> list[str]:
    if value is None or value == {}:
        return []
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or not key or key.startswith("-"):
                raise OpsError(f"{where}.{name}: keys must be dotted config keys such as model.init_args.lr, "
                               f"got {key!r}")
        return override_args(value)
    if isinstance(value, list):
        args: list[str] = []
        for item in value:
            if not isinstance(item, str) or not Path(item).is_file():
                raise OpsError(f"{where}.{name}: {item!r} is not a config file")
            args += ["--config", item]
        return args
    raise OpsError(f"{where}.{name}: must be a mapping of dotted keys to values or a list of config files, "
                   f"got {type(value).__name__}")


def load_spec(path: str | Path) -> AblationSpec:
    """Read and validate an ablation spec; errors name the file and the key."""
    path = Path(path)
    raw = load_yaml(path, "ablation spec")
    where = str(path)
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise OpsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected some of "
                       f"{', '.join(sorted(SPEC_KEYS))}")
    base = raw.get("base")
    base = [base] if isinstance(base, str) else base
    if not isinstance(base, list) or not base or not all(isinstance(b, str) for b in base):
        raise OpsError(f"{where}: base: must be a config file or a list of config files")
    for item in base:
        if not Path(item).is_file():
            raise OpsError(f"{where}: base: no such config file {item!r} (paths are relative to the working "
                           "directory)")
    seeds = raw.get("seeds", [42])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise OpsError(f"{where}: seeds: must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise OpsError(f"{where}: seeds: has duplicates")
    metric = raw.get("metric", "val/f1_macro_best")
    if not isinstance(metric, str) or not metric:
        raise OpsError(f"{where}: metric: must be a metric name such as test/f1_macro or val/f1_macro_best")
    goal = raw.get("goal", "maximize")
    if goal not in ("maximize", "minimize"):
        raise OpsError(f"{where}: goal: must be maximize or minimize, got {goal!r}")
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise OpsError(f"{where}: variants: must be a non-empty mapping of name -> overrides")
    variants = {}
    for name, value in variants_raw.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise OpsError(f"{where}: variants: name {name!r} must be a non-empty string without '/'")
        variants[name] = _variant_args(name, value, f"{where}: variants")
    test = raw.get("test", metric.startswith("test/"))
    if not isinstance(test, bool):
        raise OpsError(f"{where}: test: must be true or false")
    if metric.startswith("test/") and not test:
        raise OpsError(f"{where}: test: metric {metric} needs test: true")
    name = raw.get("name", path.stem)
    runs_dir = Path(raw.get("runs_dir", Path("runs") / "ablations" / name))
    return AblationSpec(path=path, name=name, base=base, seeds=seeds, metric=metric, goal=goal, variants=variants,
                        runs_dir=runs_dir, test=test)


def run_commands(spec: AblationSpec, variant_args: list[str], seed: int, run_dir: Path,
                 extra: list[str]) -> list[list[str]]:
    """``fit`` (and ``test --ckpt_path best``) with base configs, pass-through args, the variant's overrides, seed."""
    common = [a for b in spec.base for a in ("--config", b)]
    tail = [*extra, *variant_args, f"--seed_everything={seed}", f"--trainer.default_root_dir={run_dir}"]
    commands = [["fit", *common, *tail]]
    if spec.test:
        commands.append(["test", *common, *tail, "--ckpt_path=best"])
    return commands


def summarize(spec: AblationSpec, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: n, mean, std (sample, n-1), min, max, the per-seed values and the delta vs the first."""
    rows = []
    baseline: Optional[float] = None
    for index, name in enumerate(spec.variants):
        values = [r[spec.metric] for r in runs if r["variant"] == name and r[spec.metric] is not None]
        mean = statistics.fmean(values) if values else None
        std = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        if index == 0:
            baseline = mean
        delta = mean - baseline if mean is not None and baseline is not None else None
        rows.append({"variant": name, "n": len(values), "mean": mean, "std": std,
                     "min": min(values) if values else None, "max": max(values) if values else None,
                     "delta": delta, "values": " ".join(f"{v:.4f}" for v in values)})
    return rows


def bar_chart_png(rows: list[dict[str, Any]], metric: str, title: str) -> bytes:
    """Mean per variant with a +-1 std error bar and every seed's value as a dot."""

    from fenlei.plotting import pyplot

    plt = pyplot()

    names = [r["variant"] for r in rows]
    means = [r["mean"] if r["mean"] is not None else math.nan for r in rows]
    stds = [r["std"] or 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 2), 4.0))
    ax.bar(range(len(rows)), means, yerr=stds, capsize=6, color="#4C72B0", alpha=0.8)
    for i, row in enumerate(rows):
        points = [float(v) for v in row["values"].split()]
        ax.scatter([i] * len(points), points, color="black", s=12, zorder=3)
        if row["mean"] is not None:  # the axis is zoomed in, so print the numbers too
            ax.annotate(f"{row['mean']:.4f} ± {row['std'] or 0.0:.4f}\nn={row['n']}", (i, row["mean"]),
                        xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    finite = [m - s for m, s in zip(means, stds, strict=True) if not math.isnan(m)]
    if finite:  # zoom in: differences between variants are small compared with the metric's full range
        low, high = min(finite), max(m + s for m, s in zip(means, stds, strict=True) if not math.isnan(m))
        pad = max(0.02, 0.3 * (high - low))
        ax.set_ylim(max(0.0, low - pad), high + pad)
    ax.set_xticks(range(len(rows)), names, rotation=20, ha="right")
    ax.set_ylabel(f"{metric} (mean ± std)")
    ax.set_title(title)
    fig.tight_layout()
    return figure_png(fig, dpi=120)


def run_ablation(spec: AblationSpec, extra: Optional[list[str]] = None,
                 subprocess_mode: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run (or resume) every variant x seed; returns (summary rows, per-run rows)."""
    extra = list(extra or [])
    records = []
    total = len(spec.variants) * len(spec.seeds)
    for name, variant_args in spec.variants.items():
        for seed in spec.seeds:
            run_dir = spec.runs_dir / name / f"seed-{seed}"
            print(f"ablate {spec.name}: run {len(records) + 1}/{total}: {name} seed {seed}", file=sys.stderr)
            record = {"ablation": spec.name, "variant": name, "seed": seed, "args": variant_args,
                      "run_dir": str(run_dir)}
            commands = run_commands(spec, variant_args, seed, run_dir, extra)
            records.append(run_trial(run_dir, record, commands, with_test=spec.test, subprocess_mode=subprocess_mode))
    runs = [{"variant": r["variant"], "seed": r["seed"], "status": r["status"],
             spec.metric: read_metric(Path(r["run_dir"]), spec.metric) if r["status"] != "failed" else None,
             "run_dir": r["run_dir"]} for r in records]
    rows = summarize(spec, runs)
    title = f"Ablation {spec.name}: {spec.metric}, {len(spec.seeds)} seed(s)"
    write_tables(spec.runs_dir, "runs", runs, ["variant", "seed", "status", spec.metric, "run_dir"])
    write_tables(spec.runs_dir, "ablation", rows, ["variant", "n", "mean", "std", "min", "max", "delta", "values"],
                 title=f"{title} (delta vs {next(iter(spec.variants))}; std over seeds, n-1)")
    atomic_write_bytes(spec.runs_dir / "ablation.png", bar_chart_png(rows, spec.metric, title))
    failed = sum(r["status"] == "failed" for r in runs)
    print(f"ablate {spec.name}: {len(runs) - failed} of {len(runs)} runs have results -> "
          f"{spec.runs_dir / 'ablation.md'}", file=sys.stderr)
    return rows, runs


def ablate(spec: str, *, runs_dir: Optional[str] = None, seeds: Optional[list[int]] = None, subprocess: bool = False,
           extra_args: Optional[list[str]] = None) -> int:
    """Run an ablation spec; returns 0, or 1 when some run failed.

    Args:
        spec: ablation spec YAML, e.g. configs/ablations/quickstart_loss.yaml
        runs_dir: override the spec's runs_dir
        seeds: override the spec's seeds (e.g. --seeds 1 for a smoke test)
        subprocess: run each fit/test in its own Python process
        extra_args: arguments for every run, also everything after -- (e.g. -- --config
            configs/debug/limit_batches.yaml)
    """
    loaded = load_spec(spec)
    if runs_dir is not None:
        loaded.runs_dir = Path(runs_dir)
    if seeds:
        loaded.seeds = list(dict.fromkeys(seeds))
    _, runs = run_ablation(loaded, extra_args, subprocess)
    return 1 if any(r["status"] == "failed" for r in runs) else 0


DESCRIPTION = ("Run an ablation spec (base config + named variants x seeds) and write ablation.{csv,md,png}. "
               "Arguments after -- go to every run (fenlei ablate SPEC -- --config configs/debug/limit_batches.yaml).")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei ablate``; returns 0 or 1 (some run failed), raises OpsError on a bad spec."""
    from fenlei.typed_cli import run_typed

    return run_typed(ablate, sys.argv[1:] if argv is None else argv, prog="fenlei ablate", positional=True,
                     rest="extra_args", description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
