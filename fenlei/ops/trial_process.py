"""One sweep trial as a ``cli.py fit`` child process, watched through its ``metrics.csv`` so it can be stopped early.

Lightning's CSV logger writes ``metrics.csv`` after every log call, so each validation's value of the sweep metric
is on disk as soon as it is logged. The runner reads the file's complete lines every ``poll_seconds`` and hands each
new value to a callback (Optuna's report and prune decision); a trial the callback stops gets SIGTERM (Lightning
shuts down at the next batch), then SIGKILL after ``grace_seconds``.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fenlei.ops.runs import cli_command
from fenlei.training.run_dir import RunDir
from fenlei.training.run_lock import RunLockedError


@dataclass
class WatchedRun:
    """How a watched fit ended: ``finished`` (exit 0), ``stopped`` (the callback asked) or ``failed``."""

    status: str
    values: list[float] = field(default_factory=list)
    returncode: Optional[int] = None
    seconds: float = 0.0


def metric_values(path: Path, name: str) -> list[float]:
    """The logged values of metric ``name`` in ``metrics.csv``, in order. Only complete lines count: the logger may
    be appending a row (or rewriting the file for a new column) while it is read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    text = text[: text.rfind("\n") + 1]
    values = []
    for row in csv.DictReader(io.StringIO(text)):
        cell = row.get(name)
        if cell in (None, ""):
            continue
        try:
            values.append(float(cell))
        except ValueError:
            continue
    return values


def stop_process(proc: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL when the process is still there after ``grace_seconds``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_run_dir(run_dir: Path, poll_seconds: float) -> None:
    """Wait while another process holds the run directory's lock: a fit left running by a runner that was killed
    with SIGKILL finishes (or dies) before the trial is tried again in the same directory."""
    announced = False
    while True:
        try:
            RunDir(run_dir).lock("sweep").release()
            return
        except RunLockedError as err:
            if not announced:
                print(f"sweep: waiting: {err}", file=sys.stderr)
                announced = True
            time.sleep(poll_seconds)


def start_clean(run_dir: Path) -> None:
    """Move an earlier attempt's files to ``previous/`` before a fresh fit, so the watcher never reads the old
    ``metrics.csv`` in the moment before the new fit would move it itself."""
    with RunDir(run_dir).lock("sweep"):
        RunDir(run_dir).archive_previous()


def run_watched(args: list[str], run_dir: Path, metric: str, on_value: Callable[[int, float], bool],
                poll_seconds: float = 2.0, grace_seconds: float = 30.0) -> WatchedRun:
    """Run ``cli.py ARGS``; call ``on_value(step, value)`` for every new value of ``metric`` (step 1 = the first
    logged value) and stop the fit when it returns True. Any exception here (Ctrl-C included) stops the child
    before it propagates, so no fit outlives its runner's decision."""
    started = time.time()
    metrics = RunDir(run_dir).metrics_csv
    proc = subprocess.Popen(cli_command(args))
    seen = 0
    try:
        while True:
            try:
                code: Optional[int] = proc.wait(timeout=poll_seconds)
            except subprocess.TimeoutExpired:
                code = None
            values = metric_values(metrics, metric)
            while seen < len(values):
                seen += 1
                if on_value(seen, values[seen - 1]) and code is None:
                    stop_process(proc, grace_seconds)
                    return WatchedRun("stopped", values[:seen], proc.returncode, round(time.time() - started, 1))
            if code is not None:
                status = "finished" if code == 0 else "failed"
                return WatchedRun(status, values, code, round(time.time() - started, 1))
    except BaseException:
        stop_process(proc, grace_seconds)
        raise
