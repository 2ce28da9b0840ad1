"""Sweeps that search (fenlei/ops/study.py): W&B distributions as Optuna suggestions, hyperband as Optuna's pruner fed
from metrics.csv while the fit runs, the SQLite study resumed after a killed or interrupted runner and shared by two
runners. The fits here are a stand-in script (metrics.csv rows, last.ckpt, run_summary.json) so a 10-trial search
takes seconds; tests/ops/test_sweep.py runs real tiny fits through the same runner."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from fenlei.ops import study as study_mod
from fenlei.ops import trial_process
from fenlei.ops.runs import OpsError
from fenlei.ops.search_space import suggest_params
from fenlei.ops.sweep_config import load_sweep, parse_early_terminate
from fenlei.ops.trial_process import metric_values, run_watched
from tests.conftest import REPO_ROOT

METRIC = "val/f1_macro_best"

# A fit: one metrics.csv row per epoch (best-so-far of a score that peaks at lr = 1e-3), last.ckpt holding the
# epochs done (a --ckpt_path resumes after them), run_summary.json at the end; every call appended to calls.jsonl.
FAKE_FIT = textwrap.dedent('''
    import json, math, os, sys, time
    from pathlib import Path
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    run = Path(args["trainer.default_root_dir"])
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "calls.jsonl", "a") as handle:
        handle.write(json.dumps(args) + "\\n")
    lr = float(args.get("model.init_args.lr", "0.001"))
    epochs = int(args.get("trainer.max_epochs", "4"))
    delay = float(os.environ.get("FAKE_FIT_DELAY", "0.05"))
    quality = 1.0 / (1.0 + abs(math.log10(lr) + 3.0))
    start = int((run / "checkpoints" / "last.ckpt").read_text()) if "ckpt_path" in args else 0
    metrics = run / "metrics.csv"
    if not metrics.exists():
        metrics.write_text("epoch,step,val/f1_macro_best\\r\\n")
    best = 0.0
    for epoch in range(epochs):
        value = quality * (epoch + 1) / epochs
        best = max(best, value)
        if epoch < start:
            continue
        time.sleep(delay)
        with open(metrics, "a") as handle:
            handle.write(f"{epoch},{epoch * 10},{best}\\r\\n")
        (run / "checkpoints").mkdir(exist_ok=True)
        (run / "checkpoints" / "last.ckpt").write_text(str(epoch + 1))
    (run / "run_summary.json").write_text(json.dumps({"best_score": best}))
''')


@pytest.fixture
def fake_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_fit.py"
    script.write_text(FAKE_FIT)
    monkeypatch.setattr(trial_process, "cli_command", lambda args: [sys.executable, str(script), *args])
    return script


def write_sweep(path: Path, **fields: Any) -> Path:
    spec = {"program": "cli.py", "method": "bayes", "metric": {"name": METRIC, "goal": "maximize"},
            "command": ["${env}", "${interpreter}", "${program}", "fit", "--config", "base.yaml", "${args}"],
            "parameters": {"model.init_args.lr": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1.0}}}
    spec.update(fields)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def args_for(params: dict[str, Any], run_dir: Path) -> list[str]:
    return ["fit", *(f"--{k}={v}" for k, v in params.items()), f"--trainer.default_root_dir={run_dir}"]


def run(spec: Any, count: int, root: Path, seed: int = 0, **kwargs: Any) -> list[dict[str, Any]]:
    return study_mod.run_study(spec, count, root, seed, args_for, poll_seconds=0.02, **kwargs)


def stored_trials(root: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}").get_trials()


# --------------------------------------------------------------------------------------------------- search space


SPACE = {
    "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3},
    "exp": {"distribution": "log_uniform", "min": -4.0, "max": -1.0},
    "inv": {"distribution": "inv_log_uniform_values", "min": 0.01, "max": 0.1},
    "drop": {"distribution": "q_uniform", "min": 0.0, "max": 0.3, "q": 0.05},
    "epochs": {"distribution": "int_uniform", "min": 2, "max": 5},
    "ls": {"min": 0.0, "max": 0.2},
    "noise": {"distribution": "normal", "mu": 1.0, "sigma": 0.5},
    "pool": {"values": ["cls", "mean"]},
    "loss": {"values": [{"class_path": "losses.FocalLoss", "init_args": {"gamma": 2.0}}, "ce"]},
    "fixed": {"value": 7},
}


def test_wandb_distributions_become_optuna_suggestions_in_range() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    draws = []
    for _ in range(300):
        trial = study.ask()
        draws.append(suggest_params(trial, SPACE))
        study.tell(trial, 0.0)
    for d in draws:
        assert 1e-5 <= d["lr"] <= 1e-3 and math.exp(-4) <= d["exp"] <= math.exp(-1) and 0.01 <= d["inv"] <= 0.1
        assert 0.0 <= d["drop"] <= 0.3 and math.isclose(d["drop"] / 0.05, round(d["drop"] / 0.05), abs_tol=1e-6)
        assert isinstance(d["epochs"], int) and 2 <= d["epochs"] <= 5 and 0.0 <= d["ls"] <= 0.2
        assert d["pool"] in ("cls", "mean") and d["fixed"] == 7
        assert d["loss"] in SPACE["loss"]["values"]  # the mapping comes back as a mapping, not its JSON text
    # log-uniform: about half below the geometric midpoint (a uniform draw would put ~10% there)
    assert 100 <= sum(d["lr"] < 1e-4 for d in draws) <= 200
    noise = [d["noise"] for d in draws]
    assert abs(sum(noise) / len(noise) - 1.0) < 0.1 and 0.4 < (sum((x - 1.0) ** 2 for x in noise) / len(noise)) ** 0.5 < 0.6
    assert {d["epochs"] for d in draws} == {2, 3, 4, 5} and {json.dumps(d["loss"]) for d in draws} == {
        json.dumps(v) for v in SPACE["loss"]["values"]}
    assert "fixed" not in study.trials[0].params  # constants are no search dimension


@pytest.mark.parametrize(("raw", "expected"), [
    ({"type": "hyperband", "min_iter": 2}, (2, None, 3)),
    ({"type": "hyperband", "min_iter": 1, "eta": 2, "max_iter": 8}, (1, 8, 2)),
    ({"type": "hyperband", "max_iter": 27, "s": 2}, (3, 27, 3)),  # W&B's lowest band: 27 / 3**2
    ({"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3.0, "strict": True}, (3, 27, 3)),
])
def test_hyperband_maps_to_optuna_arguments(raw: dict[str, Any], expected: tuple[Any, ...]) -> None:
    band = parse_early_terminate(raw, "f.yaml: early_terminate")
    assert (band.min_iter, band.max_iter, band.eta) == expected


@pytest.mark.parametrize(("raw", "message"), [
    ({"type": "median", "min_iter": 2}, "early_terminate.type: must be hyperband"),
    ({"type": "hyperband"}, "hyperband needs min_iter"),
    ({"type": "hyperband", "min_iter": 2, "eta": 1.5}, "early_terminate.eta: must be a whole number of at least 2"),
    ({"type": "hyperband", "min_iter": 0}, "early_terminate.min_iter: must be a whole number of at least 1"),
    ({"type": "hyperband", "min_iter": 4, "max_iter": 2}, "max_iter (2) is below min_iter (4)"),
    ({"type": "hyperband", "min_iter": 2, "bands": [1]}, "early_terminate: unknown key(s) bands"),
])
def test_bad_early_terminate_names_file_and_key(tmp_path: Path, raw: dict[str, Any], message: str) -> None:
    path = write_sweep(tmp_path / "s.yaml", early_terminate=raw)
    with pytest.raises(OpsError) as info:
        load_sweep(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_bayes_and_early_terminated_random_search_the_rest_keep_their_plan(tmp_path: Path) -> None:
    band = {"type": "hyperband", "min_iter": 1}
    grid = {"model.init_args.lr": {"values": [1e-4, 2e-4]}}
    cases = [("bayes", None, True), ("random", band, True), ("random", None, False), ("grid", band, False)]
    for method, early, searches in cases:
        fields = {"method": method, **({"early_terminate": early} if early else {}),
                  **({"parameters": grid} if method == "grid" else {})}
        assert load_sweep(write_sweep(tmp_path / f"{method}.yaml", **fields)).searches is searches, (method, early)


# --------------------------------------------------------------------------------------------------- watching a fit


def test_metric_values_reads_complete_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,val/f1_macro_best,train/loss\r\n0,9,,1.5\r\n0,10,0.5,\r\n1,20,0.75,\r\n2,30,0.8")
    assert metric_values(path, METRIC) == [0.5, 0.75]  # "0.8" may still be "0.81..." being written
    assert metric_values(tmp_path / "missing.csv", METRIC) == []


def test_a_watched_fit_is_stopped_when_the_callback_asks(tmp_path: Path, fake_fit: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FIT_DELAY", "0.3")
    seen: list[tuple[int, float]] = []

    def on_value(step: int, value: float) -> bool:
        seen.append((step, value))
        return step == 2

    run_dir = tmp_path / "trial"
    watched = run_watched(["fit", "--model.init_args.lr=0.001", "--trainer.max_epochs=8",
                           f"--trainer.default_root_dir={run_dir}"], run_dir, METRIC, on_value, poll_seconds=0.05)
    assert watched.status == "stopped" and [s for s, _ in seen] == [1, 2] and watched.values == [0.125, 0.25]
    assert watched.returncode == -signal.SIGTERM
    assert not (run_dir / "run_summary.json").exists() and len(metric_values(run_dir / "metrics.csv", METRIC)) < 8


# --------------------------------------------------------------------------------------------------- the study


def test_bayes_with_hyperband_prunes_and_resumes_its_study(tmp_path: Path, fake_fit: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", name="tpe",
                       early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2, "max_iter": 4})
    spec, root = load_sweep(path), tmp_path / "out"
    rows = run(spec, 10, root)
    assert len(rows) == 10 and {r["status"] for r in rows} <= {"finished", "pruned"}
    pruned = [r for r in rows if r["status"] == "pruned"]
    finished = [r for r in rows if r["status"] == "finished"]
    assert pruned and finished
    for row in finished:
        run_dir = Path(row["run_dir"])
        assert row["epochs"] == 4 and not (run_dir / "previous").exists()
        assert math.isclose(row[METRIC], json.loads((run_dir / "run_summary.json").read_text())["best_score"])
    for row in pruned:
        run_dir = Path(row["run_dir"])
        assert row["epochs"] < 4 and not (run_dir / "run_summary.json").exists()
        assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # a pruned trial never resumes
        assert json.loads((run_dir / "trial.json").read_text())["status"] == "pruned"
    assert len({r["run_dir"] for r in rows}) == 10 and (root / "optuna.db").is_file()
    values = [r[METRIC] for r in rows if r[METRIC] is not None]
    assert values == sorted(values, reverse=True)
    assert "| trial | optuna_trial | status | val/f1_macro_best | epochs | model.init_args.lr |" in (
        root / "results.md").read_text()

    # Rerun: nothing to do. A larger count extends the same study.
    assert [r["run_dir"] for r in run(spec, 10, root)] == [r["run_dir"] for r in rows]
    assert len(run(spec, 12, root)) == 12 and len(stored_trials(root, "tpe")) == 12


def test_same_seed_same_trials(tmp_path: Path, fake_fit: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", name="seeded"))
    first = [r["model.init_args.lr"] for r in sorted(run(spec, 4, tmp_path / "a", seed=3), key=lambda r: r["trial"])]
    again = [r["model.init_args.lr"] for r in sorted(run(spec, 4, tmp_path / "b", seed=3), key=lambda r: r["trial"])]
    other = [r["model.init_args.lr"] for r in sorted(run(spec, 4, tmp_path / "c", seed=4), key=lambda r: r["trial"])]
    assert first == again and first != other and len(set(first)) == 4


def test_a_study_of_another_search_is_refused(tmp_path: Path, fake_fit: Path) -> None:
    root = tmp_path / "out"
    run(load_sweep(write_sweep(tmp_path / "a.yaml", name="same")), 1, root)
    changed = load_sweep(write_sweep(tmp_path / "b.yaml", name="same", method="random",
                                     early_terminate={"type": "hyperband", "min_iter": 1}))
    with pytest.raises(OpsError, match="holds a study of another search"):
        run(changed, 2, root)


def test_trial_of_a_killed_runner_is_retried_in_its_directory(tmp_path: Path, fake_fit: Path) -> None:
    """A runner killed with SIGKILL leaves a RUNNING trial whose heartbeat stops: after the grace period the next
    runner fails it, queues its parameters again and resumes the fit from last.ckpt in the same directory."""
    spec, root = load_sweep(write_sweep(tmp_path / "s.yaml", name="killed")), tmp_path / "out"
    root.mkdir()
    lock = study_mod.StudyLock(root / "optuna.lock")
    study, storage = study_mod.open_study(spec, root, lock, heartbeat=1, grace=1)
    trial = study.ask()
    params = suggest_params(trial, spec.parameters)
    run_dir = study_mod.trial_dir(root, trial.number, params)
    for key, value in (("run_number", trial.number), ("args", params), ("run_dir", str(run_dir))):
        trial.set_user_attr(key, value)
    storage.record_heartbeat(trial._trial_id)
    # What the dead runner's fit had done: two of four epochs, and their checkpoint.
    lr = params["model.init_args.lr"]
    quality = 1 / (1 + abs(math.log10(lr) + 3))
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_text("2")
    (run_dir / "metrics.csv").write_text(f"epoch,step,{METRIC}\r\n0,0,{quality / 4}\r\n1,10,{quality / 2}\r\n")
    lock.close()
    time.sleep(2.5)  # past the grace period (SQLite's clock has whole seconds)

    rows = run(spec, 1, root, heartbeat=1, grace=1)
    assert [(r["status"], r["run_dir"]) for r in rows] == [("finished", str(run_dir)), ("interrupted", str(run_dir))]
    calls = [json.loads(line) for line in (run_dir / "calls.jsonl").read_text().splitlines()]
    assert calls[-1]["ckpt_path"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert float(calls[-1]["model.init_args.lr"]) == lr
    assert metric_values(run_dir / "metrics.csv", METRIC) == [pytest.approx(quality * e / 4) for e in (1, 2, 3, 4)]
    states = [t.state for t in stored_trials(root, "killed")]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]


RUNNER = textwrap.dedent('''
    import sys
    from pathlib import Path
    from fenlei.ops import study, trial_process
    from fenlei.ops.sweep_config import load_sweep
    script, sweep, root = sys.argv[1:4]
    trial_process.cli_command = lambda args: [sys.executable, script, *args]
    def args_for(params, run_dir):
        return ["fit", *(f"--{k}={v}" for k, v in params.items()), "--trainer.max_epochs=40",
                f"--trainer.default_root_dir={run_dir}"]
    study.run_study(load_sweep(sweep), 2, Path(root), 0, args_for, poll_seconds=0.05)
''')


def test_sigterm_stops_the_fit_and_the_rerun_resumes_it(tmp_path: Path, fake_fit: Path) -> None:
    path, root = write_sweep(tmp_path / "s.yaml", name="stopped"), tmp_path / "out"
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FAKE_FIT_DELAY": "0.2"}
    proc = subprocess.Popen([sys.executable, str(runner), str(fake_fit), str(path), str(root)], env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(root.glob("trial-000-*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err
    run_dir = next(root.glob("trial-000-*"))
    assert json.loads((run_dir / "trial.json").read_text())["status"] == "interrupted"
    done = len(metric_values(run_dir / "metrics.csv", METRIC))
    assert 1 <= done < 40 and not (run_dir / "run_summary.json").exists()
    time.sleep(0.5)
    assert len(metric_values(run_dir / "metrics.csv", METRIC)) == done  # the fit was stopped with its runner

    spec = load_sweep(path)
    rows = study_mod.run_study(spec, 2, root, 0, lambda p, d: [*args_for(p, d), "--trainer.max_epochs=6"],
                               poll_seconds=0.02)
    assert sorted(r["status"] for r in rows) == ["finished", "finished", "interrupted"]
    calls = [json.loads(line) for line in (run_dir / "calls.jsonl").read_text().splitlines()]
    assert "ckpt_path" in calls[-1] and (run_dir / "run_summary.json").is_file()


def test_two_runners_share_one_study_without_racing(tmp_path: Path, fake_fit: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FIT_DELAY", "0.02")
    spec, root = load_sweep(write_sweep(tmp_path / "s.yaml", name="shared")), tmp_path / "out"
    results: list[Any] = []

    def runner() -> None:
        try:
            results.append(run(spec, 8, root, seed=0))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            results.append(err)

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(isinstance(r, list) for r in results), results
    trials = stored_trials(root, "shared")
    assert len(trials) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(dirs)) == 8 and len({t.params["model.init_args.lr"] for t in trials}) == 8
    for run_dir in map(Path, dirs):  # each trial ran once, by one runner
        assert len((run_dir / "calls.jsonl").read_text().splitlines()) == 1 and not (run_dir / "previous").exists()


def test_dry_run_of_a_search_prints_the_command_every_trial_extends(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from fenlei.ops import sweep as sweep_mod

    path = write_sweep(tmp_path / "s.yaml", name="dry")
    assert sweep_mod.main([str(path), "--count", "3", "--dry_run", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and "trial-NNN-HASH" in captured.out
    assert "picks each trial's parameters from the results so far" in captured.err
    assert "--model.init_args.lr=..." in captured.err and not (tmp_path / "o").exists()
