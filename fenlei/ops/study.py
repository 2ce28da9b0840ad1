"""Sweeps that search: an Optuna study behind ``fenlei sweep`` for ``method: bayes`` and for random search that stops
poor trials early.

- ``method: bayes`` samples with Optuna's TPE, ``method: random`` with its RandomSampler (this path only when the
  file has ``early_terminate``; plain random search stays the fixed plan of :mod:`fenlei.ops.sweep_config`). The
  sampler of trial *n* is seeded from ``--seed`` and *n*, so one runner repeats itself and two runners never draw
  the same start.
- W&B's ``early_terminate: {type: hyperband, min_iter, eta, max_iter}`` becomes ``HyperbandPruner(min_resource=
  min_iter, max_resource=max_iter or "auto", reduction_factor=eta)``. Every trial is a ``fit`` child process; each
  value of the sweep metric it logs (one per validation) is reported as one step, and a trial the pruner stops gets
  SIGTERM and is recorded as ``pruned`` (its full-state ``last.ckpt`` is deleted; its best weights stay). As in
  W&B, nothing is pruned at or after ``max_iter``.
- The study lives in ``<sweep folder>/optuna.db`` (SQLite). Every access to it happens under an exclusive
  ``flock`` on ``<sweep folder>/optuna.lock``: SQLite is not made for concurrent writers (Optuna's FAQ advises
  against it for parallel optimisation), and with the lock two runners on one host share the study without
  racing for a trial number, a queued retry or the trial count.
- Resumable: each running trial records a heartbeat; a trial whose runner died (no heartbeat for ``grace``
  seconds) is failed and queued again with the same parameters and the same run directory, where the fit resumes
  from ``last.ckpt``. A runner interrupted with Ctrl-C or SIGTERM stops its fit and queues the trial at once. A
  runner ends when the study holds ``--count`` trials that ended (finished, pruned or failed) and none is running.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Optional

from fenlei.io import atomic_write_json
from fenlei.ops.runs import OpsError, read_metric, sort_by_metric, write_tables
from fenlei.ops.search_space import ignored_probabilities, suggest_params
from fenlei.ops.sweep_config import SweepSpec, trial_cap, trial_dir
from fenlei.ops.trial_process import run_watched, start_clean, wait_for_run_dir
from fenlei.training.run_dir import RunDir

STUDY_FILE = "optuna.db"
LOCK_FILE = "optuna.lock"
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
SEARCH_ATTR = "fenlei_search"  # what the study searches; a rerun with another file is refused


class StudyLock:
    """Exclusive across processes (``flock``) and across this process's threads (the heartbeat). ``flock`` belongs
    to an open file, so one descriptor is kept for the lock's life."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        self._threads = threading.Lock()

    def __enter__(self) -> StudyLock:
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        os.close(self._fd)


class Heartbeat:
    """Records the trial's heartbeat every ``interval`` seconds while the fit runs (Optuna's own heartbeat thread
    serves ``study.optimize`` only, and would write without the study lock)."""

    def __init__(self, storage: Any, trial_id: int, lock: StudyLock, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, lock, interval), daemon=True)

    def _beat(self, storage: Any, trial_id: int, lock: StudyLock, interval: float) -> None:
        while not self._stop.is_set():
            with lock:
                storage.record_heartbeat(trial_id)
            self._stop.wait(interval)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Interrupted(KeyboardInterrupt):
    """SIGTERM to the runner, raised like Ctrl-C so the running fit is stopped and its trial queued again."""


def _raise_interrupted(signum: int, frame: Optional[FrameType]) -> None:
    raise Interrupted(f"signal {signum}")


# --------------------------------------------------------------------------------------------------- setup


def startup_trials(cap: int) -> int:
    """TPE's random start: Optuna's default of 10 would leave a sweep of 8 trials purely random."""
    return max(2, min(10, cap // 4))


def trial_seed(seed: int, number: int) -> int:
    return random.Random(f"{seed}/{number}").randrange(2**31)


def make_sampler(spec: SweepSpec, seed: int, number: int, cap: int) -> Any:
    import optuna

    if spec.method == "bayes":
        return optuna.samplers.TPESampler(seed=trial_seed(seed, number), n_startup_trials=startup_trials(cap))
    return optuna.samplers.RandomSampler(seed=trial_seed(seed, number))


def make_pruner(spec: SweepSpec) -> Any:
    import optuna

    band = spec.early_terminate
    if band is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=band.min_iter, max_resource=band.max_iter or "auto",
                                          reduction_factor=band.eta)


def search_identity(spec: SweepSpec) -> dict[str, Any]:
    band = spec.early_terminate
    return {"method": spec.method, "metric": spec.metric, "goal": spec.goal, "parameters": spec.parameters,
            "early_terminate": None if band is None else [band.min_iter, band.max_iter, band.eta]}


def open_study(spec: SweepSpec, root: Path, lock: StudyLock, heartbeat: int, grace: int) -> tuple[Any, Any]:
    """The sweep's study (created on the first run, loaded on a rerun) and its storage."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the runner prints its own one line per trial

    def retry_stale(study: Any, trial: Any) -> None:
        queue_retry(study, trial)

    # Under the lock: a new storage creates the tables, and two runners starting together would both try.
    with lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        # timeout: a busy SQLite file waits instead of failing (the lock serialises fenlei's writers already).
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{(root / STUDY_FILE).resolve()}", engine_kwargs={"connect_args": {"timeout": 60}},
            heartbeat_interval=heartbeat, grace_period=grace, heartbeat_stale_trial_callback=retry_stale)
    direction = "maximize" if spec.goal == "maximize" else "minimize"
    identity = json.loads(json.dumps(search_identity(spec), default=str))
    with lock:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=direction,
                                    pruner=make_pruner(spec), load_if_exists=True)
        stored = study.user_attrs.get(SEARCH_ATTR)
        if stored is None:
            study.set_user_attr(SEARCH_ATTR, identity)
        elif stored != identity or study.direction.name.lower() != direction:
            raise OpsError(f"{spec.path}: {root / STUDY_FILE} holds a study of another search (method, metric, "
                           "parameters or early_terminate differ); give this one its own --out")
    return study, storage


# --------------------------------------------------------------------------------------------------- trials


def queue_retry(study: Any, trial: Any) -> None:
    """Queue ``trial`` (frozen, failed) again: same parameters, same run directory."""
    run_number = trial.user_attrs.get("run_number", trial.number)
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "run_number": run_number})


def counted(trials: list[Any]) -> int:
    """Trials that use up the count: ended or running; a failed trial that was queued again counts through its
    retry instead."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get("retry_of") for t in trials}
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
               or (t.state == TrialState.FAIL and t.number not in retried) for t in trials)


def run_one(spec: SweepSpec, study: Any, lock: StudyLock, trial: Any, params: dict[str, Any], run_dir: Path,
            args: list[str], poll_seconds: float) -> str:
    """Run one asked trial to its end and tell the study; returns its status."""
    from optuna.trial import TrialState

    run = RunDir(run_dir)
    record_path = run_dir / "trial.json"
    record = {"sweep": spec.name, "optuna_trial": trial.number, "params": params, "run_dir": str(run_dir)}
    if run.is_finished():  # finished before its runner could tell the study (or a copy of a finished run)
        value = read_metric(run_dir, spec.metric)
        with lock:
            study.tell(trial, value, state=TrialState.COMPLETE if value is not None else TrialState.FAIL)
        return "finished" if value is not None else "failed"
    band = spec.early_terminate

    def prunable(step: int) -> bool:
        # A trial that reached hyperband's max_iter has had its whole budget: Optuna's rungs go on past it, and a
        # prune there would kill a fit that is writing its final results.
        return band is not None and (band.max_iter is None or step < band.max_iter)

    def on_value(step: int, value: float) -> bool:
        with lock:
            trial.report(value, step)
            return prunable(step) and trial.should_prune()

    try:
        wait_for_run_dir(run_dir, poll_seconds)
        if run.last_checkpoint.is_file():
            args = [*args, f"--ckpt_path={run.last_checkpoint}"]  # an interrupted attempt of this trial: resume it
        else:
            start_clean(run_dir)
        atomic_write_json(record_path, {**record, "status": "running", "command": args})
        watched = run_watched(args, run_dir, spec.metric, on_value, poll_seconds=poll_seconds)
    except KeyboardInterrupt:
        with lock:
            frozen = study.tell(trial, state=TrialState.FAIL)
            queue_retry(study, frozen)
        atomic_write_json(record_path, {**record, "status": "interrupted", "command": args})
        raise
    result = {**record, "command": args, "seconds": watched.seconds, "epochs": len(watched.values),
              "values": watched.values}
    if watched.status == "stopped":
        with lock:
            study.tell(trial, state=TrialState.PRUNED)
        run.last_checkpoint.unlink(missing_ok=True)  # full training state of a trial that will never resume
        status = "pruned"
    elif watched.status == "finished" and (value := read_metric(run_dir, spec.metric)) is not None:
        with lock:
            study.tell(trial, value)
        status = "finished"
    else:
        with lock:
            study.tell(trial, state=TrialState.FAIL)
        status = "failed"
        result["error"] = (f"fit exited with status {watched.returncode}" if watched.returncode
                           else f"fit logged no {spec.metric}")
    atomic_write_json(record_path, {**result, "status": status})
    return status


# --------------------------------------------------------------------------------------------------- results


STATUS = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def study_rows(spec: SweepSpec, trials: list[Any]) -> list[dict[str, Any]]:
    """One row per trial that was run, best first; a failed trial that was queued again reads ``interrupted``."""
    retried = {t.user_attrs.get("retry_of") for t in trials}
    rows = []
    for t in trials:
        params, run_dir = t.user_attrs.get("args"), t.user_attrs.get("run_dir")
        if params is None or run_dir is None:
            continue  # queued, not yet asked
        status = "interrupted" if t.number in retried else STATUS.get(t.state.name, t.state.name.lower())
        seconds = t.duration.total_seconds() if t.duration is not None else None
        rows.append({"trial": Path(run_dir).name, "optuna_trial": t.number, "status": status,
                     spec.metric: t.value if status == "finished" else None, "epochs": len(t.intermediate_values),
                     **params, "seconds": None if seconds is None else round(seconds, 1), "run_dir": run_dir})
    return sort_by_metric(rows, spec.metric, spec.goal)


def write_results(spec: SweepSpec, root: Path, trials: list[Any]) -> list[dict[str, Any]]:
    rows = study_rows(spec, trials)
    band = spec.early_terminate
    pruner = "" if band is None else f", hyperband (min_iter {band.min_iter}, eta {band.eta})"
    columns = ["trial", "optuna_trial", "status", spec.metric, "epochs", *spec.parameters, "seconds", "run_dir"]
    write_tables(root, "results", rows, columns,
                 title=f"Sweep {spec.name}: {spec.metric} ({spec.goal}), method {spec.method}{pruner} (Optuna)")
    return rows


# --------------------------------------------------------------------------------------------------- the loop


def run_study(spec: SweepSpec, count: Optional[int], root: Path, seed: int, args_for: Any,
              heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS,
              poll_seconds: float = 2.0) -> list[dict[str, Any]]:
    """Run (or resume, or join) the sweep's study until it holds ``count`` ended trials; returns the result rows.

    ``args_for(params, run_dir)`` gives a trial's ``fit`` arguments."""
    cap = trial_cap(spec, count)
    if cap is None:
        raise OpsError(f"{spec.path}: method {spec.method} needs --count (or run_cap in the file)")
    for name in ignored_probabilities(spec.parameters):
        print(f"sweep {spec.name}: parameters.{name}: Optuna samples the values evenly; 'probabilities' is ignored",
              file=sys.stderr)
    root.mkdir(parents=True, exist_ok=True)
    lock = StudyLock(root / LOCK_FILE)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if in_main else None
    try:
        study, storage = open_study(spec, root, lock, heartbeat, grace)
        waiting_said = False
        import warnings

        from optuna.exceptions import ExperimentalWarning
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        while True:
            with lock, warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                # The heartbeat is recorded by this module's own thread, which Optuna's ask() does not know.
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                if counted(trials) >= cap:
                    running = [t for t in trials if t.state == TrialState.RUNNING]
                    if not running:
                        break
                    trial = None
                else:
                    study.sampler = make_sampler(spec, seed, len(trials), cap)
                    trial = study.ask()
                    params = suggest_params(trial, spec.parameters)
                    run_number = trial.user_attrs.get("run_number", trial.number)
                    run_dir = trial_dir(root, run_number, params)
                    trial.set_user_attr("run_number", run_number)
                    trial.set_user_attr("args", params)
                    trial.set_user_attr("run_dir", str(run_dir))
                    # Before the lock is released: a trial without any heartbeat is never found stale.
                    storage.record_heartbeat(trial._trial_id)
            if trial is None:  # the count is reached; another runner's trials are still going
                if not waiting_said:
                    print(f"sweep {spec.name}: waiting for {len(running)} running trial(s) of another runner",
                          file=sys.stderr)
                    waiting_said = True
                time.sleep(heartbeat)
                continue
            retry = f" (again, after trial {trial.user_attrs['retry_of']})" if "retry_of" in trial.user_attrs else ""
            print(f"sweep {spec.name}: trial {trial.number} ({counted(trials) + 1}/{cap}){retry} {params}",
                  file=sys.stderr)
            with Heartbeat(storage, trial._trial_id, lock, heartbeat):
                status = run_one(spec, study, lock, trial, params, run_dir, args_for(params, run_dir), poll_seconds)
            print(f"sweep {spec.name}: trial {trial.number} {status}", file=sys.stderr)
            with lock:
                write_results(spec, root, study.get_trials(deepcopy=False))
        with lock:
            rows = write_results(spec, root, study.get_trials(deepcopy=False))
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        lock.close()
    tally = {s: sum(r["status"] == s for r in rows) for s in ("finished", "pruned", "failed")}
    print(f"sweep {spec.name}: {tally['finished']} finished, {tally['pruned']} pruned, {tally['failed']} failed -> "
          f"{root / 'results.md'}", file=sys.stderr)
    return rows
