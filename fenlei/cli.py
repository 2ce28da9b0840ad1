"""fenlei's LightningCLI: the run-directory convention, linked arguments, offline-first loggers.

Run directory (``trainer.default_root_dir``; default ``runs/<name of the first --config file>``) always holds:

    config.yaml            resolved config (overwritten by a repeated run in the same directory)
    labels.json            label vocabulary, class-id order
    checkpoints/best-*.ckpt  best on val/f1_macro;  checkpoints/last.ckpt  end of the latest epoch
    metrics.csv            every logged value (CSVLogger)
    wandb/                 the W&B run (offline unless --wandb.mode online)
    run_summary.json       written last, atomically: the fit finished
    test/                  per_class.csv, per_class.md, confusion_matrix.png, metrics.json (after `test`)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from datamodules.readers import DataError
from fenlei.callbacks import AtomicCheckpointIO, RngStateCallback, RunFilesCallback

DEFAULT_RUNS_ROOT = "runs"


class FenleiCLI(LightningCLI):
    """LightningCLI that links data-derived sizes into the model and fixes where every run's files go."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Known only once the data files are read: apply at instantiate time (lazy properties on the DataModule).
        for attribute in ("num_classes", "label_names", "class_counts"):
            parser.link_arguments(f"data.{attribute}", f"model.init_args.{attribute}", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/f1_macro",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:02d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_argument("--wandb.mode", type=str, default="offline", choices=["offline", "online", "disabled"],
                            help="W&B logging: offline (default, no account needed), online, or disabled.")
        parser.add_argument("--wandb.project", type=str, default="fenlei", help="W&B project name.")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_dir = config.trainer.default_root_dir or default_run_dir(config.get("config"))
        config.trainer.default_root_dir = str(run_dir)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(Path(run_dir) / "checkpoints")

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        run_dir = config.trainer.default_root_dir
        if config.trainer.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(run_dir, self.config[self.subcommand] if self.subcommand else self.config)
        strategy = config.trainer.get("strategy", "auto")
        if config.trainer.get("plugins") is None and not (isinstance(strategy, str) and "fsdp" in strategy):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.extend([RngStateCallback(), RunFilesCallback()])
        if trainer.loggers:
            trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
        return trainer


def default_run_dir(config_paths: Optional[list[Any]]) -> Path:
    """``runs/<stem of the first --config>``, or ``runs/default`` when no config file was given."""
    if config_paths:
        first = config_paths[0]
        name = Path(str(getattr(first, "relative", first))).stem
        return Path(DEFAULT_RUNS_ROOT) / name
    return Path(DEFAULT_RUNS_ROOT) / "default"


def default_loggers(run_dir: str, config: Any) -> list[Logger]:
    """CSV metrics in the run directory plus W&B, offline unless asked otherwise (never a login prompt)."""
    loggers: list[Logger] = [CSVLogger(save_dir=run_dir, name="", version="")]
    mode = config.get("wandb", {}).get("mode", "offline") if hasattr(config, "get") else "offline"
    if mode != "disabled":
        os.environ.setdefault("WANDB_SILENT", "true")
        project = config.get("wandb", {}).get("project", "fenlei")
        loggers.append(
            WandbLogger(save_dir=run_dir, project=project, name=Path(run_dir).name, offline=mode == "offline",
                        log_model=False)
        )
    return loggers


def _find_data_error(err: BaseException) -> Optional[DataError]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, DataError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def run_lightning_cli(args: Optional[list[str]] = None, run: bool = True) -> FenleiCLI:
    """Build and (by default) run the CLI; data errors become one clear line and exit status 2."""
    try:
        return FenleiCLI(
            model_class=None,
            datamodule_class=None,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )
    except Exception as err:  # noqa: BLE001 - re-raised unless it is a data problem we can name precisely
        data_error = _find_data_error(err)
        if data_error is None:
            raise
        print(f"fenlei: data error: {data_error}", file=sys.stderr)
        raise SystemExit(2) from None
