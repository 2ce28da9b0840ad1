"""metrics.csv across a resume, without a Trainer: the checkpoint's row count and global step decide which rows
of the interrupted attempt stay."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from fenlei.training.metrics_csv import ROWS_KEY, MetricsRowsCallback, RunCSVLogger


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _log(logger: RunCSVLogger, steps: range, key: str = "train/loss") -> None:
    for step in steps:
        logger.log_metrics({key: float(step)}, step=step)
        logger.save()


def _trainer(logger: RunCSVLogger) -> SimpleNamespace:
    return SimpleNamespace(loggers=[logger], is_global_zero=True)


def test_resume_drops_the_rows_it_logs_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = RunCSVLogger(save_dir=str(tmp_path), name="", version="")
    callback = MetricsRowsCallback()
    _log(first, range(0, 8))
    checkpoint: dict = {"global_step": 8}
    callback.on_save_checkpoint(_trainer(first), None, checkpoint)  # type: ignore[arg-type]
    assert checkpoint[ROWS_KEY] == 8
    # After the end-of-epoch checkpoint: the epoch's train/*_epoch row (step 7, never logged again by a resume),
    # then the next epoch's steps, with a new column, until the kill.
    _log(first, range(7, 8), key="train/loss_epoch")
    _log(first, range(8, 12), key="val/loss")

    resumed = RunCSVLogger(save_dir=str(tmp_path), name="", version="", keep_existing=True)
    callback.on_load_checkpoint(_trainer(resumed), None, checkpoint)  # type: ignore[arg-type]
    assert "dropped the 4 row(s) that the interrupted fit logged after its checkpoint" in capsys.readouterr().err
    _log(resumed, range(8, 16), key="val/loss")
    rows = _rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [*range(8), 7, *range(8, 16)]  # no step twice, none lost
    assert rows[8]["train/loss_epoch"] == "7.0" and rows[9]["val/loss"] == "8.0" and rows[0]["train/loss"] == "0.0"


def test_checkpoint_without_a_row_count_keeps_the_steps_before_its_global_step(tmp_path: Path) -> None:
    first = RunCSVLogger(save_dir=str(tmp_path), name="", version="")
    _log(first, range(3))
    resumed = RunCSVLogger(save_dir=str(tmp_path), name="", version="", keep_existing=True)
    MetricsRowsCallback().on_load_checkpoint(_trainer(resumed), None, {"global_step": 2})  # type: ignore[arg-type]
    _log(resumed, range(2, 5))
    assert [int(r["step"]) for r in _rows(tmp_path / "metrics.csv")] == list(range(5))


def test_a_new_fit_replaces_a_leftover_file_without_lightnings_warning(tmp_path: Path,
                                                                       recwarn: pytest.WarningsRecorder) -> None:
    (tmp_path / "config.yaml").write_text("x: 1\n")  # a run directory is never empty
    (tmp_path / "metrics.csv").write_text("step,old\n0,1\n")
    logger = RunCSVLogger(save_dir=str(tmp_path), name="", version="")
    _log(logger, range(2))
    assert [sorted(r) for r in _rows(tmp_path / "metrics.csv")] == [["step", "train/loss"]] * 2
    assert not [w for w in recwarn if "will be deleted" in str(w.message)]


def test_rewritten_metrics_file_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        first = RunCSVLogger(save_dir=str(tmp_path), name="", version="")
        _log(first, range(4))
        resumed = RunCSVLogger(save_dir=str(tmp_path), name="", version="", keep_existing=True)
        resumed.keep_rows(2, None)
    finally:
        os.umask(old)
    assert ((tmp_path / "metrics.csv").stat().st_mode & 0o777) == 0o664
    assert len(_rows(tmp_path / "metrics.csv")) == 2
