"""Shared by sweeps and ablations: turn overrides into CLI arguments, run a trial, read its metric, write tables.

A *trial* is one ``fit`` (optionally followed by ``test``) in its own run directory. It is finished when the run
directory holds ``run_summary.json`` (and ``test/metrics.json`` when a test was asked for); finished trials are
skipped on a rerun, which is what makes sweeps and ablations resumable.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from fenlei.errors import FenleiError
from fenlei.io import atomic_write_json, atomic_write_text
from fenlei.training.run_dir import RunDir


class OpsError(FenleiError, ValueError):
    """Bad input to an ops command (spec file, arguments): printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------------- arguments


def format_value(value: Any) -> str:
    """A value as jsonargparse reads it after ``--key=``: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``{"model.init_args.lr": 1e-4}`` -> ``["--model.init_args.lr=0.0001"]`` (the ``--key=value`` form that a
    W&B agent's ``${args}`` produces, so local and W&B trials parse the same way)."""
    return [f"--{key}={format_value(value)}" for key, value in overrides.items()]


def params_hash(params: dict[str, Any]) -> str:
    """Short, stable hash of a parameter dict (key order does not matter): names a trial's run directory."""
    blob = json.dumps(params, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:8]


# --------------------------------------------------------------------------------------------------- running


def cli_command(args: list[str]) -> list[str]:
    """``python -m fenlei ARGS`` with this interpreter: the trial runs with the same installation as its runner."""
    return [sys.executable, "-m", "fenlei", *args]


def run_cli(args: list[str], subprocess_mode: bool) -> None:
    """Run ``cli.py ARGS`` in this process (fast: imports are paid once) or in a child process (robust: a crash or
    leaked state cannot affect the next trial). Raises RuntimeError when the run fails."""
    if subprocess_mode:
        completed = subprocess.run(cli_command(args), check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"cli.py {args[0]} exited with status {completed.returncode}")
        return
    from fenlei.errors import find_user_error, report
    from fenlei.training.cli import _finish_wandb, run_lightning_cli

    try:
        run_lightning_cli(args=args)
    except (SystemExit, Exception) as err:
        # A bad argument (jsonargparse printed why) or a user error (one line, as the command would print it).
        user_error = find_user_error(err)
        if user_error is not None:
            report(user_error)
            raise RuntimeError(f"cli.py {args[0]} failed: {user_error}") from None
        if isinstance(err, SystemExit) and err.code in (0, None):
            return
        if isinstance(err, SystemExit):
            raise RuntimeError(f"cli.py {args[0]} exited with status {err.code}") from None
        raise
    finally:
        _finish_wandb()  # also after a failure, so the next trial gets its own W&B run


def is_finished(run_dir: Path, with_test: bool) -> bool:
    return RunDir(run_dir).is_finished(with_test)


def run_trial(run_dir: Path, record: dict[str, Any], commands: list[list[str]], with_test: bool,
              subprocess_mode: bool) -> dict[str, Any]:
    """Run ``commands`` (each a full argument list) for one trial unless it already finished; keep ``trial.json``
    (``record`` plus status, seconds, error) up to date. Returns the record with ``status`` set to ``skipped``,
    ``finished`` or ``failed``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record_path = run_dir / "trial.json"
    if is_finished(run_dir, with_test):
        previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
        return {**record, **{k: v for k, v in previous.items() if k in ("seconds",)}, "status": "skipped"}
    started = time.time()
    atomic_write_json(record_path, {**record, "status": "running", "commands": commands})
    status, error = "finished", None
    for args in commands:
        if args[0] == "fit" and RunDir(run_dir).is_finished():
            continue  # the fit finished earlier and only a later step (test) is missing: do not train again
        try:
            run_cli(args, subprocess_mode)
        except Exception as err:  # noqa: BLE001 - one failed trial must not end the sweep; the error is recorded
            status, error = "failed", f"{type(err).__name__}: {err}"
            print(f"ops: trial in {run_dir} failed: {error}", file=sys.stderr)
            if not isinstance(err, RuntimeError):
                traceback.print_exc()
            break
    result = {**record, "status": status, "seconds": round(time.time() - started, 1), "commands": commands}
    if error:
        result["error"] = error
    atomic_write_json(record_path, result)
    return result


# --------------------------------------------------------------------------------------------------- metrics


def _last_csv_value(path: Path, name: str) -> Optional[float]:
    if not path.is_file():
        return None
    value = None
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get(name) not in (None, ""):
                value = float(row[name])
    return value


def read_metric(run_dir: Path, name: str) -> Optional[float]:
    """A run's value of metric ``name``: ``test/...`` from ``test/metrics.json``; otherwise the last logged value
    in ``metrics.csv`` (for ``val/f1_macro_best`` that is the best epoch), then ``run_summary.json``."""
    run = RunDir(run_dir)
    if name.startswith("test/"):
        path = run.test_metrics
        if path.is_file():
            value = json.loads(path.read_text()).get(name)
            return None if value is None else float(value)
        return None
    value = _last_csv_value(run.metrics_csv, name)
    if value is not None:
        return value
    data = run.read_summary()
    if data is not None:
        if name in data.get("last_metrics", {}):
            return float(data["last_metrics"][name])
        if name == "val/f1_macro_best" and data.get("best_score") is not None:
            return float(data["best_score"])  # the checkpoint monitor is val/f1_macro: its best is this value
    return None


def sort_by_metric(rows: list[dict[str, Any]], key: str, goal: str) -> list[dict[str, Any]]:
    """Best first for ``goal`` (maximize/minimize); rows without a value last, in their original order."""
    def sort_key(item: tuple[int, dict[str, Any]]) -> tuple[int, float, int]:
        index, row = item
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0, index)
        return (0, -value if goal == "maximize" else value, index)

    return [row for _, row in sorted(enumerate(rows), key=sort_key)]


# --------------------------------------------------------------------------------------------------- tables


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0 or abs(value) >= 10:
            return f"{value:.6g}"  # 0, seconds, latencies: no padding zeros
        return f"{value:.4f}" if abs(value) >= 1e-3 else f"{value:.3g}"  # metrics: 4 decimals; small lrs: 5e-05
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def table_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        # Full float precision in CSV (for further analysis); 4 decimals only in the markdown table.
        writer.writerow([repr(v) if isinstance(v, float) else _cell(v) for v in (row.get(c) for c in columns)])
    return out.getvalue()


def table_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_tables(out_dir: Path, stem: str, rows: Sequence[dict[str, Any]], columns: Sequence[str],
                 title: Optional[str] = None) -> tuple[Path, Path]:
    """``stem.csv`` and ``stem.md`` in ``out_dir``, each written atomically."""
    csv_path = atomic_write_text(out_dir / f"{stem}.csv", table_csv(rows, columns))
    markdown = table_markdown(rows, columns)
    md_path = atomic_write_text(out_dir / f"{stem}.md", (f"# {title}\n\n" if title else "") + markdown)
    return csv_path, md_path


def load_yaml(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a YAML syntax error becomes an OpsError naming the file."""
    import yaml

    if not path.is_file():
        raise OpsError(f"{path}: no such {what} file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise OpsError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise OpsError(f"{path}: a {what} file must be a YAML mapping, got {type(data).__name__}")
    return data
