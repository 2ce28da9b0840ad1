"""A run killed with SIGKILL mid-epoch resumes with ``--ckpt_path last`` and ends exactly like an uninterrupted run;
DDP with two CPU processes (gloo) trains and writes one run directory. Both run ``cli.py`` as a subprocess, as
users do (a kill or a DDP launch cannot happen inside the pytest process)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO_ROOT, tiny_overrides

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")


def cli(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    # Not WANDB_SERVICE: an earlier in-process W&B run of the suite sets it, and a child would then share that
    # service, which keeps a SIGKILLed child's run id "in use" and refuses the resume that continues it.
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"},
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def rows_of(metrics_csv: Path) -> list[dict[str, str]]:
    with metrics_csv.open(newline="") as handle:
        return list(csv.DictReader(handle))


def last_row(metrics_csv: Path, key: str) -> float:
    rows = [r for r in csv.DictReader(metrics_csv.open()) if r.get(key)]
    return float(rows[-1][key])


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    # 64 train rows / batch 8 = 8 steps per epoch; 3 epochs; the kill lands in the middle of epoch 2 (step 12).
    common = ["--trainer.max_epochs=3", "--trainer.precision=32-true", "--trainer.log_every_n_steps=1",
              "--seed_everything=7"]
    straight_dir, crashed_dir = tmp_path / "straight", tmp_path / "crashed"
    straight = cli(["fit", "--config", QUICKSTART, *tiny_overrides(tiny_model, tiny_data, straight_dir), *common])
    assert straight.returncode == 0, straight.stderr[-3000:]

    kill = json.dumps({"class_path": "tests.helpers.KillAtStep", "init_args": {"step": 12}})
    # W&B offline for the crashed run and its resume: the resume must continue the same W&B run.
    wandb = [a for a in tiny_overrides(tiny_model, tiny_data, crashed_dir) if not a.startswith("--wandb.mode")]
    wandb.append("--wandb.mode=offline")
    crashed = cli(["fit", "--config", QUICKSTART, *wandb, *common, f"--trainer.callbacks+={kill}"])
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    assert (crashed_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (crashed_dir / "run_summary.json").exists()  # an interrupted run does not look finished

    killed_rows = rows_of(crashed_dir / "metrics.csv")
    assert max(int(r["step"]) for r in killed_rows) >= 9  # the killed attempt logged steps after its checkpoint
    resumed = cli(["fit", "--config", QUICKSTART, *wandb, *common, "--ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states" in resumed.stderr + resumed.stdout

    for key in ["val/f1_macro", "val/loss", "val/acc", "train/loss_epoch"]:
        assert last_row(crashed_dir / "metrics.csv", key) == last_row(straight_dir / "metrics.csv", key), key
    a = torch.load(straight_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(crashed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    # metrics.csv reads as if the fit had never stopped: the rows of the killed attempt after its checkpoint were
    # dropped, the resume logged those steps once (only the wall-clock column may differ).
    straight_rows, crashed_rows = rows_of(straight_dir / "metrics.csv"), rows_of(crashed_dir / "metrics.csv")
    assert [r["step"] for r in crashed_rows] == [r["step"] for r in straight_rows]
    assert crashed_rows == straight_rows
    # One W&B run, continued: both offline folders carry the id kept in the run directory.
    run_id = (crashed_dir / "wandb_run_id.txt").read_text().strip()
    folders = sorted(p.name for p in (crashed_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and {name.rsplit("-", 1)[1] for name in folders} == {run_id}, folders
    # The resumed metrics.csv kept the epochs before the crash.
    epochs = {r["epoch"] for r in csv.DictReader((crashed_dir / "metrics.csv").open()) if r.get("val/f1_macro")}
    assert epochs == {"0", "1", "2"}
    summary = json.loads((crashed_dir / "run_summary.json").read_text())
    assert summary["finished"] and summary["global_step"] == 24


def test_ddp_two_cpu_processes_gloo(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    result = cli(["fit", "--config", QUICKSTART, "--config", str(REPO_ROOT / "configs/trainer/ddp_cpu.yaml"),
                  *tiny_overrides(tiny_model, tiny_data, run_dir), "--trainer.max_epochs=2"])
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "distributed_backend=gloo" in output
    assert "All distributed processes registered. Starting with 2 processes" in output
    summary = json.loads((run_dir / "run_summary.json").read_text())
    # 64 rows over 2 processes, batch 8 each: 4 optimizer steps per epoch.
    assert summary["global_step"] == 8
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run_dir / "labels.json").read_text()) == ["billing", "bug", "login", "shipping"]
