"""Local sweep runner: W&B sweep files validated, grid/random planning, a two-trial tiny grid run and resumed,
the ``--key=value`` form that W&B's ``${args}`` produces parsed by the CLI, resolved config in the W&B run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from fenlei.ops import sweep as sweep_mod
from fenlei.ops.runs import OpsError, sort_by_metric
from fenlei.ops.sweep_config import load_sweep, plan_trials, random_trials
from tests.conftest import REPO_ROOT, fenlei_user_error, tiny_overrides

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")
COMMAND = ["${env}", "${interpreter}", "${program}", "fit", "--config", QUICKSTART, "${args}"]


def write_sweep(path: Path, **fields: Any) -> Path:
    spec = {"program": "cli.py", "method": "grid", "metric": {"name": "val/f1_macro_best", "goal": "maximize"},
            "command": COMMAND, "parameters": {"model.init_args.lr": {"values": [1e-3, 3e-3]}}}
    spec.update(fields)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def trial_extra(tiny_model: Path, tiny_data: Path) -> list[str]:
    """Tiny model and data, one short epoch; the runner sets the run directory and W&B mode (offline)."""
    keep = [a for a in tiny_overrides(tiny_model, tiny_data, Path("unused"))
            if not a.startswith(("--trainer.default_root_dir", "--wandb.mode"))]
    return keep + ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
                   "--trainer.precision=32-true", "--trainer.num_sanity_val_steps=0"]


# --------------------------------------------------------------------------------------------------- tiny grid


@pytest.fixture(scope="module")
def grid_sweep(tiny_model: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory,
               ) -> dict[str, Any]:
    """Run a two-trial grid once for the module, recording what reaches the W&B run config."""
    import wandb.sdk.wandb_config as wandb_config

    tmp = tmp_path_factory.mktemp("sweep")
    spec = load_sweep(write_sweep(tmp / "grid.yaml", name="tiny_grid"))
    updates: list[dict[str, Any]] = []
    original = wandb_config.Config.update

    def recording_update(self: Any, d: Any, allow_val_change: Any = None) -> Any:
        updates.append(dict(d) if isinstance(d, dict) else {})
        return original(self, d, allow_val_change=allow_val_change)

    wandb_config.Config.update = recording_update
    try:
        rows = sweep_mod.run_sweep(spec, None, tmp / "out", extra_args=trial_extra(tiny_model, tiny_data))
    finally:
        wandb_config.Config.update = original
    return {"spec": spec, "rows": rows, "root": tmp / "out", "updates": updates}


def test_grid_runs_each_trial_in_its_own_directory(grid_sweep: dict[str, Any]) -> None:
    rows, root = grid_sweep["rows"], grid_sweep["root"]
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert sorted(r["model.init_args.lr"] for r in rows) == [1e-3, 3e-3]
    dirs = sorted(root.glob("trial-*"))
    assert [d.name[:9] for d in dirs] == ["trial-000", "trial-001"]
    for run_dir in dirs:
        record = json.loads((run_dir / "trial.json").read_text())
        assert record["status"] == "finished"
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["model"]["init_args"]["lr"] == record["params"]["model.init_args.lr"]  # the override took
        assert (run_dir / "run_summary.json").is_file()
    # Results: sorted by the metric (maximize), values equal to each run's own best validation F1.
    table = list(csv.DictReader((root / "results.csv").open()))
    values = [float(r["val/f1_macro_best"]) for r in table]
    assert values == sorted(values, reverse=True) and all(0.0 <= v <= 1.0 for v in values)
    for row in table:
        summary = json.loads((Path(row["run_dir"]) / "run_summary.json").read_text())
        assert math.isclose(float(row["val/f1_macro_best"]), summary["best_score"], abs_tol=1e-6)
    markdown = (root / "results.md").read_text()
    assert "| trial | status | val/f1_macro_best | model.init_args.lr |" in markdown


def test_resolved_config_reaches_the_wandb_run(grid_sweep: dict[str, Any]) -> None:
    flat = [u for u in grid_sweep["updates"] if "model.init_args.lr" in u]
    assert len(flat) == 2  # one per trial (each trial its own W&B run)
    assert sorted(u["model.init_args.lr"] for u in flat) == [1e-3, 3e-3]
    for update in flat:
        assert update["trainer.max_epochs"] == 1 and update["seed_everything"] == 42
        assert update["model.init_args.loss.class_path"] == "losses.CrossEntropyLoss"
        assert update["wandb.mode"] == "offline"


def test_resume_skips_finished_trials_and_reruns_only_missing(grid_sweep: dict[str, Any], tiny_model: Path,
                                                              tiny_data: Path) -> None:
    spec, root = grid_sweep["spec"], grid_sweep["root"]
    extra = trial_extra(tiny_model, tiny_data) + ["--wandb.mode=disabled"]
    dirs = sorted(root.glob("trial-*"))
    stamps = {d: (d / "run_summary.json").stat().st_mtime_ns for d in dirs}
    rows = sweep_mod.run_sweep(spec, None, root, extra_args=extra)
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert {d: (d / "run_summary.json").stat().st_mtime_ns for d in dirs} == stamps
    assert all(r["val/f1_macro_best"] is not None for r in rows)  # the table still has the skipped trials' values

    (dirs[1] / "run_summary.json").unlink()
    rows = sweep_mod.run_sweep(spec, None, root, extra_args=extra)
    status = {Path(r["run_dir"]).name: r["status"] for r in rows}
    assert status == {dirs[0].name: "skipped", dirs[1].name: "finished"}
    assert (dirs[0] / "run_summary.json").stat().st_mtime_ns == stamps[dirs[0]]
    assert (dirs[1] / "run_summary.json").is_file()


def test_failed_trial_is_recorded_and_sweep_goes_on(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "bad.yaml", parameters={"model.init_args.pooling": {"values": ["nope", "mean"]}})
    extra = trial_extra(tiny_model, tiny_data) + ["--wandb.mode=disabled", "--trainer.limit_train_batches=1",
                                                  "--trainer.limit_val_batches=1"]
    code = sweep_mod.main([str(path), "--out", str(tmp_path / "out"), "--", *extra])
    assert code == 1
    table = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert [(r["model.init_args.pooling"], r["status"]) for r in table] == [("mean", "finished"), ("nope", "failed")]
    failed = next(tmp_path.glob("out/trial-000-*/trial.json"))
    assert json.loads(failed.read_text())["status"] == "failed"


# --------------------------------------------------------------------------------------------------- planning


def test_grid_is_cartesian_in_file_order(tmp_path: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path / "g.yaml", parameters={
        "a": {"values": [1, 2]}, "b": {"values": ["x", "y", "z"]}, "c": {"value": 0.5}}))
    trials = plan_trials(spec, None, seed=0)
    assert [(t["a"], t["b"]) for t in trials] == [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]
    assert all(t["c"] == 0.5 for t in trials)
    assert plan_trials(spec, 4, seed=0) == trials[:4]


def test_nested_parameters_flatten_to_dotted_keys(tmp_path: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path / "n.yaml", parameters={
        "model": {"parameters": {"init_args": {"parameters": {"lr": {"values": [1e-4]}}}}}}))
    assert list(spec.parameters) == ["model.init_args.lr"]


RANDOM_PARAMS = {
    "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3},
    "drop": {"distribution": "q_uniform", "min": 0.0, "max": 0.3, "q": 0.05},
    "epochs": {"distribution": "int_uniform", "min": 2, "max": 5},
    "ls": {"distribution": "uniform", "min": 0.0, "max": 0.2},
    "pool": {"values": ["cls", "mean"]},
    "fixed": {"value": 7},
}


def test_random_sampling_is_seeded_reproducible_and_in_range() -> None:
    first = random_trials(RANDOM_PARAMS, 40, seed=3)
    assert first == random_trials(RANDOM_PARAMS, 40, seed=3)
    assert first[:5] == random_trials(RANDOM_PARAMS, 5, seed=3)  # a longer rerun extends, never reshuffles
    assert first != random_trials(RANDOM_PARAMS, 40, seed=4)
    for t in first:
        assert 1e-5 <= t["lr"] <= 1e-3
        assert 0.0 <= t["drop"] <= 0.3 and math.isclose(t["drop"] / 0.05, round(t["drop"] / 0.05), abs_tol=1e-6)
        assert isinstance(t["epochs"], int) and 2 <= t["epochs"] <= 5
        assert 0.0 <= t["ls"] <= 0.2 and t["pool"] in ("cls", "mean") and t["fixed"] == 7
    # log-uniform: about half the draws below the geometric midpoint 1e-4 (uniform would put ~10% there)
    below = sum(t["lr"] < 1e-4 for t in first)
    assert 10 <= below <= 30
    assert {t["pool"] for t in first} == {"cls", "mean"} and {t["epochs"] for t in first} == {2, 3, 4, 5}


def test_a_search_has_no_plan(tmp_path: Path) -> None:
    """bayes (and random with early_terminate) choose trials as they go: tests/ops/test_sweep_search.py."""
    spec = load_sweep(write_sweep(tmp_path / "b.yaml", method="bayes", parameters=RANDOM_PARAMS))
    with pytest.raises(OpsError, match="method bayes chooses its trials as it goes"):
        plan_trials(spec, 3, seed=1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "hyperband"}, "method: must be grid, random or bayes"),
        ({"metric": {"goal": "maximize"}}, "metric: needs a name"),
        ({"metric": {"name": "val/f1_macro_best", "goal": "max"}}, "metric.goal: must be maximize or minimize"),
        ({"parameters": {}}, "parameters: must be a non-empty mapping"),
        ({"parameters": {"model.init_args.lr": [1e-4, 2e-4]}}, "parameters.model.init_args.lr: must be a mapping"),
        ({"parameters": {"model.init_args.lr": {"distribution": "uniform", "min": 0.1}}},
         "parameters.model.init_args.lr: method grid needs 'values'"),
        ({"method": "random", "parameters": {"model.init_args.lr": {"distribution": "uniform", "min": 0.1}}},
         "parameters.model.init_args.lr: distribution 'uniform' needs 'max'"),
        ({"method": "random", "parameters": {"x": {"distribution": "log_uniform_values", "min": 0, "max": 1}}},
         "parameters.x.min: log_uniform_values needs min > 0"),
        ({"method": "random", "parameters": {"x": {"distribution": "gamma", "min": 0, "max": 1}}},
         "parameters.x.distribution: unknown distribution 'gamma'"),
        ({"parameters": {"x": {"values": [1], "stride": 2}}}, "parameters.x: unknown key(s) stride"),
        ({"parameters": {"x": {"values": []}}}, "parameters.x.values: must be a non-empty list"),
        ({"command": ["${env}", "${interpreter}", "${program}", "fit", "--config", "a.yaml"]},
         "command: must end with ${args}"),
        ({"command": ["${env}", "${interpreter}", "${program}", "--config", "a.yaml", "${args}"]},
         "must start with the subcommand fit"),
        ({"command": None}, "command: missing"),
        ({"early_stop": 3}, "unknown top-level key(s) early_stop"),
    ],
)
def test_sweep_file_errors_name_the_key(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    path = write_sweep(tmp_path / "s.yaml", **fields)
    with pytest.raises(OpsError) as info:
        load_sweep(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_cli_reports_bad_file_in_one_line_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("method: grid\nparameters: [\n")
    err = fenlei_user_error(["sweep", str(path)], capsys)
    assert err.startswith(f"fenlei: error: {path}:") and "invalid YAML" in err
    assert str(tmp_path / "missing.yaml") in fenlei_user_error(["sweep", str(tmp_path / "missing.yaml")], capsys)
    random_file = write_sweep(tmp_path / "r.yaml", method="random", parameters=RANDOM_PARAMS)
    assert "needs --count" in fenlei_user_error(["sweep", str(random_file)], capsys)
    assert "--count must be at least 1" in fenlei_user_error(["sweep", str(random_file), "--count", "0"], capsys)


def test_sort_by_metric_respects_goal_and_puts_missing_last() -> None:
    rows = [{"m": 0.2}, {"m": None}, {"m": 0.9}, {"m": 0.5}]
    assert [r["m"] for r in sort_by_metric(rows, "m", "maximize")] == [0.9, 0.5, 0.2, None]
    assert [r["m"] for r in sort_by_metric(rows, "m", "minimize")] == [0.2, 0.5, 0.9, None]


# --------------------------------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_parse_and_their_args_reach_the_config(path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Every configs/sweeps/*.yaml is valid, and a trial's --key=value arguments (W&B's ${args} form) set the config."""
    from fenlei.training.cli import run_lightning_cli

    monkeypatch.chdir(REPO_ROOT)  # sweep commands name configs relative to the repository root, as `wandb agent` does
    spec = load_sweep(path)
    assert spec.metric == "val/f1_macro_best" and spec.goal == "maximize" and spec.base_args[0] == "fit"
    params = random_trials(spec.parameters, 1, seed=5)[0] if spec.searches else plan_trials(spec, 1, seed=5)[0]
    args = sweep_mod.trial_args(spec, params, Path("runs/x"), [], "offline")
    assert all(a.startswith("--") and "=" in a for a in args[-len(params) - 1:])
    with pytest.raises(SystemExit) as info:
        run_lightning_cli(args=[*args, "--print_config"])
    assert info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for key, value in params.items():
        node = printed
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    assert printed["wandb"]["mode"] == "offline"  # the runner's default beats the file's online logger preset


def test_shipped_sweep_grid_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    assert len(plan_trials(load_sweep("configs/sweeps/quickstart_lr.yaml"), None, 0)) == 6


def test_dry_run_prints_one_command_per_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path / "g.yaml")
    assert sweep_mod.main([str(path), "--dry_run", "--out", str(tmp_path / "o"), "--", "--trainer.max_epochs=1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("--trainer.max_epochs=1" in line for line in lines)
    assert "--model.init_args.lr=0.001" in lines[0] and "--model.init_args.lr=0.003" in lines[1]
    assert not (tmp_path / "o").exists()


def test_wandb_agent_argument_format_is_parsed(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The exact strings a W&B agent puts in ${args} (its own formatter: --key=str(value)) set the config."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from fenlei.training.cli import run_lightning_cli

    values = {"model.init_args.lr": 5e-05, "model.init_args.freeze_embeddings": True, "trainer.max_epochs": 3,
              "model.init_args.pooling": "cls",
              "model.init_args.loss": {"class_path": "losses.FocalLoss", "init_args": {"gamma": 2.0}}}
    agent_args = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})["args"]
    assert "--model.init_args.lr=5e-05" in agent_args and "--model.init_args.freeze_embeddings=True" in agent_args
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(SystemExit):
        run_lightning_cli(args=["fit", "--config", QUICKSTART, *agent_args, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]["init_args"]
    assert model["lr"] == 5e-05 and model["freeze_embeddings"] is True and model["pooling"] == "cls"
    assert printed["trainer"]["max_epochs"] == 3
    assert model["loss"]["class_path"] == "losses.FocalLoss" and model["loss"]["init_args"]["gamma"] == 2.0


# --------------------------------------------------------------------------------------------------- names, agent


def test_misspelt_parameter_stops_before_the_first_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    path = write_sweep(tmp_path / "typo.yaml", parameters={"model.init_args.lrr": {"values": [1e-3]},
                                                            "trainer.max_epochs": {"values": [1]}})
    err = fenlei_user_error(["sweep", str(path), "--out", str(tmp_path / "out")], capsys)
    assert err == (f"fenlei: error: {path}: parameters.model.init_args.lrr: no such argument of fit with this "
                   "command's configs; did you mean model.init_args.lr?")
    assert not (tmp_path / "out").exists()
    nested = write_sweep(tmp_path / "nested.yaml", method="bayes", parameters={
        "model.init_args.loss.init_args.label_smothing": {"min": 0.0, "max": 0.2}})
    err = fenlei_user_error(["sweep", str(nested), "--count", "2", "--out", str(tmp_path / "out")], capsys)
    assert "parameters.model.init_args.loss.init_args.label_smothing" in err and "label_smoothing?" in err
    assert not (tmp_path / "out").exists()


def test_each_wandb_agent_trial_gets_its_own_run_directory(tiny_model: Path, tiny_data: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from fenlei.training.cli import run_lightning_cli
    from fenlei.training.run_dir import sweep_agent_run_dir

    assert sweep_agent_run_dir(None, {}) is None and sweep_agent_run_dir("runs/x", {"WANDB_RUN_ID": "r1"}) is None
    agent = {"WANDB_SWEEP_ID": "sw1", "WANDB_RUN_ID": "r1"}
    assert sweep_agent_run_dir(None, agent) == Path("runs/sweeps/sw1/r1")
    assert sweep_agent_run_dir("runs/x", agent) == Path("runs/x/r1")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    base = ["--config", QUICKSTART, *[a for a in tiny_overrides(tiny_model, tiny_data, tmp_path / "given")
                                      if not a.startswith("--trainer.default_root_dir")]]
    dirs = []
    for run_id in ("r1", "r2"):
        monkeypatch.setenv("WANDB_RUN_ID", run_id)
        dirs.append(run_lightning_cli(args=base, run=False).trainer.default_root_dir)
    assert dirs == ["runs/sweeps/sw1/r1", "runs/sweeps/sw1/r2"]
    given = run_lightning_cli(args=[*base, f"--trainer.default_root_dir={tmp_path / 'given'}"], run=False)
    assert given.trainer.default_root_dir == str(tmp_path / "given" / "r2")


def test_a_search_runs_real_fits_as_watched_child_processes(tiny_model: Path, tiny_data: Path,
                                                            tmp_path: Path) -> None:
    """bayes + hyperband through `fenlei sweep` with real tiny fits: the values the study got per epoch are the
    ones the fit wrote to metrics.csv, and a finished trial's value is its own best validation F1."""
    import optuna

    from fenlei.ops.trial_process import metric_values

    path = write_sweep(tmp_path / "bayes.yaml", name="tiny_bayes", method="bayes",
                       early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2, "max_iter": 2},
                       parameters={"model.init_args.lr": {"distribution": "log_uniform_values", "min": 1e-4,
                                                          "max": 1e-2}})
    extra = [a for a in trial_extra(tiny_model, tiny_data) if not a.startswith("--trainer.max_epochs")]
    code = sweep_mod.main([str(path), "--count", "2", "--out", str(tmp_path / "out"), "--wandb_mode", "disabled",
                           "--", *extra, "--trainer.max_epochs=2"])
    assert code == 0
    study = optuna.load_study(study_name="tiny_bayes", storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")
    assert len(study.trials) == 2
    for trial in study.trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        logged = metric_values(run_dir / "metrics.csv", "val/f1_macro_best")
        assert [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)] == logged[:len(
            trial.intermediate_values)] and logged
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["model"]["init_args"]["lr"] == trial.user_attrs["args"]["model.init_args.lr"]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            summary = json.loads((run_dir / "run_summary.json").read_text())
            assert math.isclose(trial.value, summary["best_score"], abs_tol=1e-6) and len(logged) == 2
        else:
            # Stopped after its first value (the fit may have logged one more before SIGTERM reached it).
            assert trial.state == optuna.trial.TrialState.PRUNED and len(trial.intermediate_values) == 1
