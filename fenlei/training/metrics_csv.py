"""``metrics.csv`` of a run: Lightning's CSVLogger, made to continue a resumed fit without duplicate rows.

A fit killed mid-epoch has logged rows after its last checkpoint; the resumed fit logs those steps again. Every
checkpoint therefore records how many rows ``metrics.csv`` held when it was written, and a resume keeps those rows
plus the later ones of steps the resume will not log again (:class:`MetricsRowsCallback`) before it appends: the
file then reads as if the fit had never stopped.
"""

from __future__ import annotations

import csv
import io
import sys
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from fenlei.io import atomic_write_text

ROWS_KEY = "fenlei_metrics_rows"


class RunCSVLogger(CSVLogger):
    """CSVLogger that can continue an existing ``metrics.csv`` (``keep_existing``, a resumed fit)."""

    def __init__(self, *args: Any, keep_existing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_existing = keep_existing

    @property
    def experiment(self) -> Any:
        if self._experiment is None:
            self._experiment = RunMetricsWriter(log_dir=self.log_dir, keep_existing=self.keep_existing)
        return super().experiment

    def rows_logged(self) -> Optional[int]:
        """Rows in ``metrics.csv`` plus those not yet flushed; None where this process writes no metrics."""
        writer = self._experiment
        return writer.rows_logged if isinstance(writer, RunMetricsWriter) else None

    def keep_rows(self, count: Optional[int], before_step: Optional[int]) -> None:
        """Of an existing ``metrics.csv`` (a resume), keep the first ``count`` rows and, of the later ones, those of
        steps before ``before_step`` (see :class:`MetricsRowsCallback`)."""
        if self.keep_existing:
            writer = self.experiment
            if isinstance(writer, RunMetricsWriter):
                writer.keep_rows(count, before_step)


class RunMetricsWriter(ExperimentWriter):
    """Lightning's writer plus a row count. A new fit's writer replaces a leftover ``metrics.csv`` quietly: the fit
    has moved the earlier run's files to ``previous/`` already, so Lightning's "Previous log files in this
    directory will be deleted" (printed for any non-empty folder, here every run directory) would be false."""

    def __init__(self, log_dir: str, keep_existing: bool = False) -> None:
        self.keep_existing = keep_existing
        self.rows_on_disk = 0
        super().__init__(log_dir=log_dir)  # calls _check_log_dir_exists

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        if not self.keep_existing:
            self._fs.rm_file(self.metrics_file_path)
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.reader(handle)
            self.metrics_keys = sorted(next(reader, []))
            self.rows_on_disk = sum(1 for _ in reader)

    @property
    def rows_logged(self) -> int:
        return self.rows_on_disk + len(self.metrics)

    def save(self) -> None:
        pending = len(self.metrics)
        super().save()
        self.rows_on_disk += pending

    def keep_rows(self, count: Optional[int], before_step: Optional[int]) -> None:
        self.save()
        if (count is None and before_step is None) or not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            fieldnames = list(reader.fieldnames or self.metrics_keys)
            rows = list(reader)
        kept = [row for i, row in enumerate(rows) if (count is not None and i < count) or _step_before(row, before_step)]
        if len(kept) == len(rows):
            return
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fieldnames, lineterminator="\r\n")  # csv's default, as Lightning's
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.metrics_file_path, out.getvalue())
        self.rows_on_disk = len(kept)
        print(f"fenlei: {self.metrics_file_path}: dropped the {len(rows) - len(kept)} row(s) that the interrupted "
              "fit logged after its checkpoint; the resumed fit logs those steps again", file=sys.stderr)


def _step_before(row: dict[str, str], step: Optional[int]) -> bool:
    try:
        return step is not None and int(row.get("step") or "") < step
    except ValueError:
        return False


def run_csv_logger(trainer: pl.Trainer) -> Optional[RunCSVLogger]:
    return next((lg for lg in trainer.loggers if isinstance(lg, RunCSVLogger)), None)


class MetricsRowsCallback(pl.Callback):
    """Record ``metrics.csv``'s row count in every checkpoint; on resume, drop what the resumed fit logs again.

    Kept: every row written before the checkpoint, and of the rows written after it those of steps before the
    checkpoint's ``global_step``. The second part matters: the end-of-epoch checkpoint is written at the end of
    validation, and the epoch's ``train/*_epoch`` row (same step as the epoch's last batch) is logged just after it;
    the resume does not log it again. Rows of steps from ``global_step`` on are logged again by the resume. A
    checkpoint from before the row count keeps the rows of steps before its ``global_step``.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        logger = run_csv_logger(trainer)
        rows = logger.rows_logged() if logger is not None and trainer.is_global_zero else None
        if rows is not None:
            checkpoint[ROWS_KEY] = rows

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        logger = run_csv_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        rows, step = checkpoint.get(ROWS_KEY), checkpoint.get("global_step")
        logger.keep_rows(None if rows is None else int(rows), None if step is None else int(step))
