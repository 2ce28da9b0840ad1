"""The run directory holds the documented files; repeated runs (W&B offline on) neither fail nor lose files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from fenlei.training.cli import run_lightning_cli
from tests.conftest import REPO_ROOT, tiny_overrides

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")


def fit(run_dir: Path, tiny_model: Path, tiny_data: Path, *extra: str) -> None:
    overrides = [a for a in tiny_overrides(tiny_model, tiny_data, run_dir) if not a.startswith("--wandb.mode")]
    run_lightning_cli(args=["fit", "--config", QUICKSTART, *overrides, "--wandb.mode=offline", "--trainer.max_epochs=3",
                            "--trainer.precision=32-true", *extra])


def _modes(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mode & 0o777 for p in run_dir.rglob("*")
            if p.is_file() and "wandb" not in p.parts}


def test_fit_test_and_repeat_in_same_directory(tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    old_umask = os.umask(0o002)  # not the usual 022, so a mode that ignores the umask cannot pass by chance
    try:
        fit(run_dir, tiny_model, tiny_data)
    finally:
        os.umask(old_umask)
    for name in ["config.yaml", "labels.json", "metrics.csv", "run_summary.json", "checkpoints/last.ckpt", "wandb",
                 "wandb_run_id.txt", "run.lock"]:
        assert (run_dir / name).exists(), name
    # Every file fenlei or Lightning wrote has the mode the umask gives (atomic writes included: mkstemp's 0600
    # would leave labels and summaries unreadable to teammates).
    modes = _modes(run_dir)
    assert {"labels.json", "run_summary.json", "checkpoints/last.ckpt", "config.yaml", "metrics.csv"} <= set(modes)
    assert set(modes.values()) == {0o664}, modes
    assert len(list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))) == 1
    # The W&B run is the one whose id the run directory keeps (a resume continues it).
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert [p.name.rsplit("-", 1)[1] for p in (run_dir / "wandb").glob("offline-run-*")] == [run_id]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "lightning_modules.EncoderClassifier"

    # val/f1_macro_best is the running maximum of val/f1_macro.
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("val/f1_macro")]
    assert len(rows) == 3
    running = 0.0
    for row in rows:
        running = max(running, float(row["val/f1_macro"]))
        assert abs(float(row["val/f1_macro_best"]) - running) < 1e-6
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert abs(summary["best_score"] - running) < 1e-6
    assert summary["train_samples"] == 3 * 64 and summary["train_samples_per_s"] > 0

    # test: per-class table, confusion matrix and metrics in test/, fit's metrics.csv untouched.
    fit_metrics = (run_dir / "metrics.csv").read_text()
    overrides = [a for a in tiny_overrides(tiny_model, tiny_data, run_dir) if not a.startswith("--wandb.mode")]
    run_lightning_cli(args=["test", "--config", QUICKSTART, *overrides, "--wandb.mode=offline", "--ckpt_path=best"])
    assert (run_dir / "metrics.csv").read_text() == fit_metrics
    report = run_dir / "test"
    table = list(csv.DictReader((report / "per_class.csv").open()))
    assert [r["label"] for r in table] == ["billing", "bug", "login", "shipping"]
    assert sum(int(r["support"]) for r in table) == 16
    assert (report / "per_class.md").read_text().startswith("| label | precision | recall | f1 | support | predicted |")
    assert (report / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_examples"] == 16 and 0.0 <= metrics["test/acc"] <= 1.0
    correct = sum(round(float(r["recall"]) * int(r["support"])) for r in table)
    assert abs(correct / 16 - metrics["test/acc"]) < 1e-6  # per-class table agrees with the logged accuracy

    # predict: one row per input row, in input order, labels from the vocabulary, top-k sorted.
    run_lightning_cli(args=["predict", "--config", QUICKSTART, *overrides, "--wandb.mode=disabled", "--ckpt_path=best"])
    predictions = [json.loads(line) for line in (run_dir / "predict" / "predictions.jsonl").read_text().splitlines()]
    assert [p["row"] for p in predictions] == list(range(16))
    for p in predictions:
        assert p["label"] == p["predicted_label"] == p["top_k"][0]["label"] and p["uncertain"] is False
        assert p["confidence"] == p["top_k"][0]["score"]
        assert [t["score"] for t in p["top_k"]] == sorted((t["score"] for t in p["top_k"]), reverse=True)
        assert {t["label"] for t in p["top_k"]} <= {"billing", "bug", "login", "shipping"}

    # A second fit in the same directory (existing config.yaml, W&B offline) works and archives the first run.
    fit(run_dir, tiny_model, tiny_data, "--trainer.max_epochs=1")
    previous = list((run_dir / "previous").iterdir())
    assert len(previous) == 1
    assert (previous[0] / "checkpoints" / "last.ckpt").is_file() and (previous[0] / "test" / "per_class.csv").is_file()
    assert (previous[0] / "predict" / "predictions.jsonl").is_file()
    assert json.loads((run_dir / "run_summary.json").read_text())["epochs"] == 1
    # The new fit is a new W&B run; the earlier run's id went to previous/ with its files.
    assert (previous[0] / "wandb_run_id.txt").read_text().strip() == run_id
    assert (run_dir / "wandb_run_id.txt").read_text().strip() != run_id


def test_ckpt_path_best_without_a_finished_fit_is_a_clear_error(
    tiny_model: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "never_fitted"
    from fenlei.commands import main as fenlei_main

    with pytest.raises(SystemExit) as exit_info:
        fenlei_main(["test", "--config", QUICKSTART, *tiny_overrides(tiny_model, tiny_data, run_dir), "--ckpt_path=best"])
    assert exit_info.value.code == 2
    assert f"fenlei: error: --ckpt_path best: no finished fit with a best checkpoint in {run_dir}" in capsys.readouterr().err


def test_archive_names_are_unique_within_one_second(tmp_path: Path) -> None:
    from fenlei.training.run_dir import archive_previous_run

    archives = []
    for _ in range(3):
        (tmp_path / "metrics.csv").write_text("x\n")
        archives.append(archive_previous_run(tmp_path))
    assert len(set(archives)) == 3 and all((a / "metrics.csv").is_file() for a in archives)
    assert archive_previous_run(tmp_path) is None  # nothing left to move


@pytest.mark.parametrize("native", [True, False])
def test_bf16_falls_back_to_fp32_on_cpus_without_native_bf16(native: bool, tiny_model: Path, tiny_data: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fenlei.training.cli

    monkeypatch.setattr(fenlei.training.cli, "cpu_has_native_bf16", lambda: native)
    monkeypatch.delenv("FENLEI_KEEP_BF16", raising=False)
    cli = run_lightning_cli(args=["--config", QUICKSTART, *tiny_overrides(tiny_model, tiny_data, tmp_path / "run"),
                                  "--trainer.precision=bf16-mixed"], run=False)
    assert cli.config.trainer.precision == ("bf16-mixed" if native else "32-true")
    assert str(cli.trainer.precision) == ("bf16-mixed" if native else "32-true")
