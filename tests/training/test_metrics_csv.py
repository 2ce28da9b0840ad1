"""metrics.csv across a resume, without a Trainer: the checkpoint's row count decides which rows stay."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from types import SimpleNamespace

from fenlei.training.metrics_csv import ROWS_KEY, MetricsRowsCallback, RunCSVLogger


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _log(logger: RunCSVLogger, steps: range, key: str = "train/loss") -> None:
    for step in steps:
        logger.log_metrics({key: float(step)}, step=step)
        logger.save()


def test_resume_keeps_the_rows_of_the_checkpoint_and_appends(tmp_path: Path, capsys) -> None:
    first = RunCSVLogger(save_dir=str(tmp_path), name="", version="")
    callback = MetricsRowsCallback()
    _log(first, range(0, 8))
    checkpoint: dict = {}
    trainer = SimpleNamespace(loggers=[first], is_global_zero=True)
    callback.on_save_checkpoint(trainer, None, checkpoint)  # type: ignore[arg-type]
    assert checkpoint[ROWS_KEY] == 8
    _log(first, range(8, 12), key="val/loss")  # the killed attempt went on, with a new column, then died

    resumed = RunCSVLogger(save_dir=str(tmp_path), name="", version="", keep_existing=True)
    callback.on_load_checkpoint(SimpleNamespace(loggers=[resumed], is_global_zero=True), None, checkpoint)  # type: ignore[arg-type]
    assert "dropped the 4 row(s) logged after the checkpoint" in capsys.readouterr().err
    _log(resumed, range(8, 16), key="val/loss")
    rows = _rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(16))  # no step twice, none lost
    assert rows[8]["val/loss"] == "8.0" and rows[0]["train/loss"] == "0.0"


def test_checkpoint_without_a_row_count_appends_as_before(tmp_path: Path) -> None:
    first = RunCSVLogger(save_dir=str(tmp_path), name="", version="")
    _log(first, range(3))
    resumed = RunCSVLogger(save_dir=str(tmp_path), name="", version="", keep_existing=True)
    MetricsRowsCallback().on_load_checkpoint(SimpleNamespace(loggers=[resumed], is_global_zero=True), None, {})  # type: ignore[arg-type]
    _log(resumed, range(3, 5))
    assert [int(r["step"]) for r in _rows(tmp_path / "metrics.csv")] == list(range(5))


def test_a_new_fit_replaces_a_leftover_file_without_lightnings_warning(tmp_path: Path, recwarn) -> None:
    (tmp_path / "config.yaml").write_text("x: 1\n")  # a run directory is never empty
    (tmp_path / "metrics.csv").write_text("step,old\n0,1\n")
    logger = RunCSVLogger(save_dir=str(tmp_path), name="", version="")
    _log(logger, range(2))
    assert [list(r) for r in _rows(tmp_path / "metrics.csv")] == [["step", "train/loss"]] * 2
    assert not [w for w in recwarn if "will be deleted" in str(w.message)]


def test_rewritten_metrics_file_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        first = RunCSVLogger(save_dir=str(tmp_path), name="", version="")
        _log(first, range(4))
        resumed = RunCSVLogger(save_dir=str(tmp_path), name="", version="", keep_existing=True)
        resumed.keep_rows(2)
    finally:
        os.umask(old)
    assert ((tmp_path / "metrics.csv").stat().st_mode & 0o777) == 0o664
    assert len(_rows(tmp_path / "metrics.csv")) == 2
