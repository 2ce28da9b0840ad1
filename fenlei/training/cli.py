"""fenlei's LightningCLI: linked arguments, offline-first loggers, and every run's files in its run directory.

The run directory (``trainer.default_root_dir``; default ``runs/<name of the first --config file>``) and its files
are described, named and found by :mod:`fenlei.training.run_dir`.
"""

from __future__ import annotations

import os
import secrets
import string
import sys
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger, WandbLogger

from fenlei.cpu import read_cpu
from fenlei.data.leakage import warn_split_leakage
from fenlei.errors import OptionError
from fenlei.training.callbacks import (
    AtomicCheckpointIO,
    PredictionWriter,
    RngStateCallback,
    RunFilesCallback,
    TestReportWriter,
    ValidationRowsWriter,
)
from fenlei.training.checkpoints import WEIGHTS_ONLY
from fenlei.training.metrics_csv import MetricsRowsCallback, RunCSVLogger
from fenlei.training.run_dir import (
    BEST_CHECKPOINT_TEMPLATE,
    LAST_CHECKPOINT_NAME,
    RunDir,
    archive_previous_run,
    best_checkpoint,
    default_run_dir,
    sweep_agent_run_dir,
)
from fenlei.training.run_lock import RunLock

# The commands that write into the run directory (config.yaml, checkpoints, test/, predict/): one at a time.
LOCKED_COMMANDS = ("fit", "validate", "test", "predict")


def fill_tokenizer_from_model(config: Any) -> None:
    """Set ``data.init_args.tokenizer`` to ``model.init_args.pretrained`` where the DataModule takes a tokenizer and
    the config leaves it unset, so a config names its model once.

    Not a ``link_arguments``: a linked target can no longer be set in YAML or on the command line, and a model whose
    tokenizer lives elsewhere (a local copy, an extended vocabulary) must still be able to name it.
    """
    data_args = (config.get("data") or {}).get("init_args") if hasattr(config, "get") else None
    model_args = (config.get("model") or {}).get("init_args") if hasattr(config, "get") else None
    if data_args is None or model_args is None or "tokenizer" not in data_args or data_args.get("tokenizer"):
        return
    pretrained = model_args.get("pretrained")
    if pretrained:
        data_args["tokenizer"] = pretrained


class FenleiArgumentParser(LightningArgumentParser):
    """Shows the tokenizer that the run will use in every dump (``--print_config``, the saved ``config.yaml``).

    ``--print_config`` prints from inside ``parse_args``, before any LightningCLI hook runs, so the filling in
    :meth:`FenleiCLI.before_instantiate_classes` alone would print ``tokenizer: null``.
    """

    def dump(self, cfg: Any, *args: Any, **kwargs: Any) -> str:
        if hasattr(cfg, "clone"):
            cfg = cfg.clone()  # a dump must not change the config it is given
            fill_tokenizer_from_model(cfg)
        return super().dump(cfg, *args, **kwargs)


class FenleiCLI(LightningCLI):
    """LightningCLI that links data-derived sizes into the model and fixes where every run's files go."""

    _run_lock: Optional[RunLock] = None  # held from instantiate_trainer to the end of the subcommand

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Known only once the data files are read: apply at instantiate time (lazy properties on the DataModule).
        for attribute in ("num_classes", "label_names", "class_counts", "vocab_size"):
            parser.link_arguments(f"data.{attribute}", f"model.init_args.{attribute}", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/f1_macro",
                "checkpoint.mode": "max",
                "checkpoint.save_weights_only": True,
                "checkpoint.filename": BEST_CHECKPOINT_TEMPLATE,
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_argument("--wandb.mode", type=str, default="offline", choices=["offline", "online", "disabled"],
                            help="W&B logging: offline (default, no account needed), online, or disabled.")
        parser.add_argument("--wandb.project", type=str, default="fenlei", help="W&B project name.")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        fill_tokenizer_from_model(config)
        run_dir = Path(config.trainer.default_root_dir or default_run_dir(config.get("config")))
        if self.subcommand in (None, "fit"):
            agent_dir = sweep_agent_run_dir(config.trainer.default_root_dir, os.environ)
            if agent_dir is not None and is_launching_process():
                print(f"fenlei: W&B sweep agent run {os.environ['WANDB_RUN_ID']}: run directory {agent_dir}",
                      file=sys.stderr)
            run_dir = agent_dir or run_dir
        config.trainer.default_root_dir = str(run_dir)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(RunDir(run_dir).checkpoints)
        if config.get("ckpt_path") == "best" and self.subcommand != "fit":
            config.ckpt_path = str(best_checkpoint(run_dir))
        require_weights_only(config)
        avoid_emulated_bf16(config.trainer)

    def before_fit(self) -> None:
        """Warn, one line per split, of validation and test rows that also occur in train (exact or normalised
        matches only: two hash sets, 0.1 s for 13k rows, about 1 s for 63k long ones; ``fenlei data leakage`` adds the
        near-duplicates). Every fenlei classification DataModule offers ``split_texts()`` for it."""
        if is_launching_process():
            warn_split_leakage(self.datamodule)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        run_dir = config.trainer.default_root_dir
        # Only now, with the data read and validated and the model built: a command that fails on bad input
        # neither creates nor changes the run directory. DDP's worker processes run this too; the launching
        # process alone locks and archives (a worker would find its own parent holding the lock).
        if self.subcommand in LOCKED_COMMANDS and is_launching_process():
            self._run_lock = RunDir(Path(run_dir)).lock(self.subcommand)
        try:
            return self._make_trainer(config, run_dir, **kwargs)
        except BaseException:
            self.release_run_lock()
            raise

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        finally:
            self.release_run_lock()

    def release_run_lock(self) -> None:
        """Free the run directory for the next command (the end of the process frees it too)."""
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    def _make_trainer(self, config: Any, run_dir: str, **kwargs: Any) -> Any:
        if self.subcommand == "fit" and config.get("ckpt_path") is None and is_launching_process():
            archive_previous_run(Path(run_dir))
        if config.trainer.get("logger") in (None, True):
            parsed = self.config[self.subcommand] if self.subcommand else self.config
            kwargs["logger"] = default_loggers(run_dir, parsed, self.subcommand or "fit")
        strategy = config.trainer.get("strategy", "auto")
        if config.trainer.get("plugins") is None and not (isinstance(strategy, str) and "fsdp" in strategy):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.extend([RngStateCallback(), RunFilesCallback()])
        if self.subcommand == "fit":
            trainer.callbacks.append(MetricsRowsCallback())
        if self.subcommand == "predict":
            trainer.callbacks.append(PredictionWriter())
        if self.subcommand == "test":
            trainer.callbacks.append(TestReportWriter())
        if self.subcommand == "validate":
            trainer.callbacks.append(ValidationRowsWriter())
        if self.subcommand == "fit" and not config.trainer.get("fast_dev_run"):
            # ModelCheckpoint(save_last=True) only refreshes last.ckpt when a top-k checkpoint is saved (Lightning
            # 2.6), so after an epoch without improvement it is stale. A second, unmonitored checkpoint callback
            # rewrites last.ckpt (full state: optimizer, loops, RNG) after every epoch, which resume relies on.
            trainer.callbacks.append(
                ModelCheckpoint(dirpath=config.checkpoint.dirpath, filename=LAST_CHECKPOINT_NAME, monitor=None, save_top_k=1,
                                enable_version_counter=False)
            )
        if trainer.loggers:
            trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
        return trainer


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` as usual and also put the resolved config into every W&B run's config.

    Lightning logs only the model's and DataModule's hyperparameters; trainer settings, the seed, the loss and the
    ``--config`` files would be missing in W&B. Keys are dotted jsonargparse keys (``model.init_args.lr``), the
    names sweeps use, so W&B's parallel-coordinates and importance views line up with the sweep parameters.
    """

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb_loggers:
            return
        import yaml

        resolved = flatten_config(yaml.safe_load(self.parser.dump(self.config, skip_none=False)) or {})
        for logger in wandb_loggers:
            # allow_val_change: a W&B sweep agent has already put the swept keys into the run config.
            logger.experiment.config.update(resolved, allow_val_change=True)


def require_weights_only(config: Any) -> None:
    """``Trainer.fit/validate/test/predict(weights_only=...)`` reaches every strategy's checkpoint load (FSDP's too,
    which gets no AtomicCheckpointIO): fenlei sets it to True, and an explicit ``--weights_only false`` is refused
    rather than honoured (unpickling a checkpoint with it can run code; see fenlei/training/checkpoints.py)."""
    if "weights_only" not in config:
        return
    if config.get("weights_only") is False:
        raise OptionError("--weights_only false: fenlei loads checkpoints with weights_only=True only (unpickling "
                          "anything but tensors and plain values can run code)")
    config.weights_only = WEIGHTS_ONLY


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"init_args": {"lr": 1e-4}}}`` -> ``{"model.init_args.lr": 1e-4}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def cpu_has_native_bf16() -> Optional[bool]:
    """Whether the CPU computes bf16 natively (``avx512_bf16`` or ``amx_bf16``); None if unknown."""
    return read_cpu().native_bf16


def avoid_emulated_bf16(trainer_config: Any) -> None:
    """Fall back from bf16 autocast to fp32 on a CPU without native bf16, loudly.

    Configs that were tuned on CPUs with AVX-512 BF16 ask for ``bf16-mixed``; on an AVX2-only CPU torch emulates
    bf16 and a MiniLM training step was measured about 6x slower than in fp32. The change is written into the
    saved config.yaml; ``FENLEI_KEEP_BF16=1`` keeps bf16 anyway.
    """
    precision = str(trainer_config.get("precision"))
    if precision not in ("bf16-mixed", "bf16", "bf16-true") or os.environ.get("FENLEI_KEEP_BF16"):
        return
    accelerator = str(trainer_config.get("accelerator") or "auto")
    if accelerator not in ("cpu", "auto") or cpu_has_native_bf16() is not False:
        return
    import torch

    if accelerator == "auto" and torch.cuda.is_available():
        return
    print(f"fenlei: this CPU has no native bf16 (no avx512_bf16/amx_bf16); trainer.precision {precision} -> 32-true "
          "(set FENLEI_KEEP_BF16=1 to keep it)", file=sys.stderr)
    trainer_config.precision = "32-true"


def default_loggers(run_dir: str, config: Any, subcommand: str) -> list[Logger]:
    """CSV metrics plus W&B, offline unless asked otherwise (never a login prompt).

    ``fit`` logs to ``run_dir/metrics.csv`` (continued when it resumes); ``test`` and the other stages to
    ``run_dir/<stage>/metrics.csv`` so they never overwrite the training curves. A fit's W&B run id is kept in the
    run directory, so ``fit --ckpt_path last`` continues that W&B run instead of starting a second one.
    """
    resuming = subcommand == "fit" and config.get("ckpt_path") is not None
    version = "" if subcommand == "fit" else subcommand
    loggers: list[Logger] = [RunCSVLogger(save_dir=run_dir, name="", version=version, keep_existing=resuming)]
    mode = config.wandb.mode  # the parser defines --wandb.mode and --wandb.project with defaults
    if mode != "disabled":
        os.environ.setdefault("WANDB_SILENT", "true")
        # WandbLogger passes id and resume="allow" to wandb.init: the same id continues the run it names.
        run_id = fit_wandb_run_id(RunDir(Path(run_dir)), resuming) if subcommand == "fit" else None
        loggers.append(
            WandbLogger(save_dir=run_dir, project=config.wandb.project, name=Path(run_dir).name,
                        offline=mode == "offline", log_model=False, id=run_id)
        )
    return loggers


def fit_wandb_run_id(run_dir: RunDir, resuming: bool) -> str:
    """The W&B run id of this fit: the stored one when it resumes, else a new one (a W&B sweep agent's
    ``WANDB_RUN_ID`` when set, so the agent's trial and the run agree), stored for a later resume."""
    run_id = run_dir.read_wandb_run_id() if resuming else None
    if run_id is None:
        run_id = os.environ.get("WANDB_RUN_ID") or new_wandb_run_id()
    if is_launching_process():
        run_dir.write_wandb_run_id(run_id)
    return run_id


def new_wandb_run_id() -> str:
    """Eight lower-case letters and digits, the form of W&B's own ids (without importing wandb here)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def is_launching_process() -> bool:
    """Whether this is the process the user started, not a worker a DDP launcher started from it (those have
    ``LOCAL_RANK`` > 0; a cluster launcher sets ``RANK`` or ``SLURM_PROCID`` for every process)."""
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return os.environ[variable] == "0"
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _finish_wandb() -> None:
    """Close the W&B run, so a second run in the same process (tests, sweep runners) gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def run_lightning_cli(args: Optional[list[str]] = None, run: bool = True) -> FenleiCLI:
    """Build and (by default) run the CLI. Data and run-directory errors propagate as FenleiErrors (possibly wrapped
    by jsonargparse or Lightning); ``fenlei.commands.main`` reports them in one line."""
    cli = FenleiCLI(
        model_class=None,
        datamodule_class=None,
        parser_class=FenleiArgumentParser,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
    if run:
        _finish_wandb()
    return cli
